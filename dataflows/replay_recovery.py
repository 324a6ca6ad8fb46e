"""A recovery store for `orderguard replay --recovery-dir`: resume a killed replay.

The store is the live path's (`dataflows.live.prepare_recovery`: Bytewax partitions,
the layout file, stale snapshots dropped at start) plus what only a replay has:

- `orderguard-replay.json`, the replay's identity: every input file (as named on the
  command line, which dead letters' origins quote, with its size and SHA-256) and the
  input partitions (the Kafka split's, or the one file-order partition). A snapshot's
  input positions mean nothing for other input, so another identity is refused.
- `parts/`, the output records written so far: an epoch's records are flushed before
  Bytewax can complete the epoch, so after a kill the parts hold at least everything up
  to the resume epoch (and records of later epochs, which the resumed run writes
  again: at least once, identical but for `emitted_at`).

Once the outputs are merged the identity says `complete`, and the parts go: running
the same replay on a complete store is refused rather than writing empty outputs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.recovery_store import PARTITION_GLOB, RecoveryStoreError, read_progress
from connectors.replay import trim_partial_lines
from dataflows.live import RecoveryDirError, input_partition_counts, prepare_recovery
from schemas.config import Settings

IDENTITY_FILE = "orderguard-replay.json"
PARTS_DIR = "parts"


@dataclass(frozen=True)
class ReplayStore:
    """A prepared store: where it is and whether this run resumes from it."""

    dir: Path
    resumed: bool

    @property
    def parts(self) -> Path:
        return self.dir / PARTS_DIR


def file_identity(path: Path) -> dict[str, Any]:
    """A file as the store records it: its name as given, size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"path": str(path), "size": size, "sha256": digest.hexdigest()}


def replay_identity(inputs: list[Path], parts: list[str]) -> dict[str, Any]:
    return {"inputs": [file_identity(p) for p in inputs], "parts": list(parts)}


def _mode(parts: list[str] | None) -> str:
    if parts == ["replay"]:
        return "one partition in file order (no --processes)"
    return f"the Kafka split into {len(parts or [])} partitions (--processes)"


def _describe_mismatch(have: dict[str, Any], want: dict[str, Any]) -> str:
    """What differs, in words: the mode, the files named, or a file's contents."""
    if have.get("parts") != want["parts"]:
        return (
            f"it was written for {_mode(have.get('parts'))}; this run reads {_mode(want['parts'])}"
        )
    old = [(f["path"], f["size"], f["sha256"]) for f in have.get("inputs", [])]
    new = [(f["path"], f["size"], f["sha256"]) for f in want["inputs"]]
    if [o[0] for o in old] != [n[0] for n in new]:
        return f"it replays {', '.join(o[0] for o in old)}; this run reads " + ", ".join(
            n[0] for n in new
        )
    for (path, size, sha), (_, size2, sha2) in zip(old, new, strict=True):
        if (size, sha) != (size2, sha2):
            return (
                f"{path} has changed since (was {size:,} bytes, sha256 {sha[:12]}…; "
                f"now {size2:,} bytes, sha256 {sha2[:12]}…)"
            )
    return "its identity differs"  # pragma: no cover - all fields compared above


def prepare_replay_store(
    settings: Settings, rdir: Path, inputs: list[Path], parts: list[str]
) -> ReplayStore:
    """Initialize `rdir` for this replay, or check that it holds this replay unfinished.

    Raises `RecoveryDirError` (naming `rdir`) for another replay's store, a complete
    one, a store that is no replay's, or a shard layout that changed.
    """
    want = replay_identity(inputs, parts)
    scoped = settings.model_copy(
        update={"recovery": settings.recovery.model_copy(update={"dir": rdir})}
    )
    counts = input_partition_counts(parts) if parts != ["replay"] else {"replay": 1}
    path = rdir / IDENTITY_FILE
    have = _read_identity(path)
    if have is None and rdir.is_dir() and any(rdir.glob(PARTITION_GLOB)) and _used(rdir):
        raise RecoveryDirError(
            f"recovery dir {rdir} holds Bytewax snapshots but no {IDENTITY_FILE}: it is not "
            "a replay's store (a live run's?); give a new or empty --recovery-dir"
        )
    if have is not None:
        if have.get("complete"):
            raise RecoveryDirError(
                f"recovery dir {rdir} holds a replay that completed: its outputs were "
                "written. Remove the directory (or give a new one) to replay again"
            )
        if {k: have.get(k) for k in want} != want:
            raise RecoveryDirError(
                f"recovery dir {rdir} holds another replay's snapshots: "
                f"{_describe_mismatch(have, want)}. A resume needs the same inputs and mode; "
                "give a new --recovery-dir to start this replay afresh"
            )
    prepare_recovery(scoped, counts)  # layout checked, stale snapshots dropped
    resumed = have is not None and _used(rdir)
    parts_dir = rdir / PARTS_DIR
    if resumed:
        if parts_dir.is_dir():
            trim_partial_lines(parts_dir)
    else:
        shutil.rmtree(parts_dir, ignore_errors=True)
        _write_identity(path, want)
    return ReplayStore(rdir, resumed)


def mark_complete(store: ReplayStore) -> None:
    """The outputs are merged: record it, then drop the parts."""
    path = store.dir / IDENTITY_FILE
    identity = _read_identity(path) or {}
    _write_identity(path, {**identity, "complete": True})
    shutil.rmtree(store.parts, ignore_errors=True)


def _used(rdir: Path) -> bool:
    """Whether any execution has run on the store (a fresh one has none)."""
    try:
        return bool(read_progress(rdir).exs)
    except RecoveryStoreError as e:
        raise RecoveryDirError(str(e)) from None


def _read_identity(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RecoveryDirError(f"cannot read {path}: {e}") from None
    if not isinstance(doc, dict):
        raise RecoveryDirError(f"{path} is not a replay identity (a JSON object)")
    return doc


def _write_identity(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(path)  # never half a file: a kill leaves the old one or the new
    except OSError as e:
        raise RecoveryDirError(f"cannot write {path}: {e}") from None


__all__ = ["ReplayStore", "mark_complete", "prepare_replay_store"]
