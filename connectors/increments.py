"""A stateful step's large state as a chain of files beside the recovery store.

Bytewax snapshots a step's whole state at every epoch close. For an order shard at
a million open orders that is seconds of pickling and hundreds of MB written per
epoch, while an epoch touches a few percent of the orders. So the large part of
such a step's state is kept here instead, as Flink's incremental checkpoints keep
theirs: each epoch close writes one file with what changed since the last
(a *delta*), now and then one with everything (a *base*), and hands Bytewax only
the small rest plus the number of the file it wrote (`version`).

Resuming from Bytewax's snapshot of version v reads the latest base at or before v
and the deltas after it up to v, and deletes the files after v: they belong to
epochs that no run completed (the files of one step's key are written by that key's
logic alone, one version per snapshot, so versions are consecutive).

A base is written when the deltas since the last base outweigh it, so a restore
reads at most about twice the state. The shards of a step grow alike and would all
fall due in the same epoch, stalling that epoch's close for all their bases at once
(at 4,000 events/s that one close took a second, and latency spiked to 2 s); so a
due base waits for its chain's turn, one version in `SPREAD`.

Files older than the latest base that lies `KEEP` versions back are deleted: Bytewax
resumes from a snapshot of an epoch every worker completed, which trails the newest
snapshot by an epoch or two, never by `KEEP`. Should a resume ask for a deleted
version anyway, or for files that are not on this machine (a key moved to a machine
without its chain), it is refused with `IncrementsError` naming the directory, never
restored from less.

Layout: `<recovery dir>/increments/<step>/<key>/<version>.base|.delta`, pickled.
Back it up (or move it between machines) together with the partition files.
"""

from __future__ import annotations

import os
import pickle
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

INCREMENTS_DIR = "increments"
KEEP = 8
"""Versions kept behind the newest one that a resume may still ask for."""
SPREAD = 4
"""A due base is written at its chain's turn: versions whose remainder by SPREAD is the
chain's (the number its key ends with, as shards' keys do)."""

_NAME = re.compile(r"^(\d{12})\.(base|delta)$")


class IncrementsError(RuntimeError):
    """A step's chain of increments cannot give the state its snapshot names."""


@dataclass(frozen=True, slots=True)
class _File:
    version: int
    base: bool
    path: Path


def chain_dir(recovery_dir: Path, step_id: str, key: str) -> Path:
    """Where one stateful step key's chain lives; the key made safe as a file name."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", lambda m: f"%{ord(m.group()):02x}", key)
    return recovery_dir / INCREMENTS_DIR / step_id / safe


class Chain:
    """One step key's increments: `write` at each snapshot, `read` once on resume."""

    def __init__(self, directory: Path, version: int = 0) -> None:
        """Open at `version`, the one the resumed snapshot names (0: a fresh key).

        Files after it are a lost run's and are deleted now, before any new one is
        written under the same number.
        """
        self.dir = directory
        self.version = version
        digits = re.search(r"\d+$", directory.name)
        number = int(digits.group()) if digits else zlib.crc32(directory.name.encode())
        self._turn = number % SPREAD
        self._files = []
        for f in _list(directory):
            if f.version <= version:
                self._files.append(f)
            else:
                f.path.unlink(missing_ok=True)
        self._base_bytes = 0
        self._delta_bytes = 0
        for f in self._files:
            if f.base:
                self._base_bytes, self._delta_bytes = f.path.stat().st_size, 0
            else:
                self._delta_bytes += f.path.stat().st_size

    def read(self) -> list[object]:
        """The increments up to `version`, oldest first, starting with a base."""
        if self.version == 0:
            return []
        by_version = {f.version: f for f in self._files}
        wanted = _wanted(self.dir, self._files, self.version)
        out = []
        for v in wanted:
            try:
                out.append(pickle.loads(by_version[v].path.read_bytes()))
            except (OSError, pickle.UnpicklingError, EOFError) as e:
                raise IncrementsError(f"cannot read {by_version[v].path}: {e}") from None
        return out

    @property
    def due(self) -> bool:
        """A base is due: there is none yet, or the deltas since the last one outweigh it."""
        return self._base_bytes == 0 or self._delta_bytes > self._base_bytes

    def wants_base(self) -> bool:
        """Whether the next increment should hold everything: a base is due and it is this
        chain's turn (the first base at once, while everything is small)."""
        if self._base_bytes == 0:
            return True
        return self.due and (self.version + 1) % SPREAD == self._turn

    def write(self, increment: object, base: bool) -> int:
        """Write the next version durably; return its number (for the Bytewax snapshot)."""
        version = self.version + 1
        data = pickle.dumps(increment, protocol=pickle.HIGHEST_PROTOCOL)
        path = self.dir / f"{version:012d}.{'base' if base else 'delta'}"
        tmp = path.with_suffix(".tmp")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            raise IncrementsError(f"cannot write {path}: {e}") from None
        self.version = version
        self._files.append(_File(version, base, path))
        if base:
            self._base_bytes, self._delta_bytes = len(data), 0
        else:
            self._delta_bytes += len(data)
        self._prune()
        return version

    def _prune(self) -> None:
        """Drop what no resume can ask for: everything before the latest base that lies
        at least KEEP versions back."""
        old_bases = [f.version for f in self._files if f.base and f.version <= self.version - KEEP]
        floor = max(old_bases, default=0)
        if not floor:
            return
        keep = []
        for f in self._files:
            if f.version < floor:
                f.path.unlink(missing_ok=True)
            else:
                keep.append(f)
        self._files = keep


def check_chain(directory: Path, version: int) -> None:
    """Refuse (`IncrementsError`) a chain that cannot give `version`, before a run starts;
    reads only the directory listing and deletes nothing."""
    if version:
        _wanted(
            directory, [f for f in _list(directory, tidy=False) if f.version <= version], version
        )


def _wanted(directory: Path, files: list[_File], version: int) -> range:
    """The versions a resume at `version` reads: the latest base up to it, the deltas after."""
    have = {f.version for f in files}
    start = max((f.version for f in files if f.base), default=None)
    wanted = range(start or 1, version + 1)
    if start is None or any(v not in have for v in wanted):
        raise IncrementsError(
            f"the state snapshot names version {version} of the increments in "
            f"{directory}, but its files are not all there (have versions "
            f"{sorted(have) or 'none'}); the increments directory must move with the "
            "recovery partitions (docs/scale-out.md)"
        )
    return wanted


def _list(directory: Path, tidy: bool = True) -> list[_File]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise IncrementsError(f"cannot list {directory}: {e}") from None
    files = []
    for name in names:
        m = _NAME.match(name)
        if m:
            files.append(_File(int(m.group(1)), m.group(2) == "base", directory / name))
        elif tidy and name.endswith(".tmp"):
            (directory / name).unlink(missing_ok=True)  # a write a kill interrupted
    return sorted(files, key=lambda f: f.version)
