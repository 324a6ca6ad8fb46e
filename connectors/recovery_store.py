"""Bytewax's recovery store: drop the snapshots of epochs that never completed.

Bytewax 0.21 resumes at the first epoch that not every worker completed and loads,
per state key, the latest snapshot from before it. A killed execution may already
have written snapshots of that epoch, or later ones, for some keys. The next
execution runs those epochs again and overwrites the snapshots of the keys it
touches, but keeps the killed execution's for the others; Bytewax never deletes them
(`src/recovery.rs`: snapshots are upserted, and GC only removes older ones). So the
resume after that loads state from a run that was lost beside state from the one
that replaced it. Here that was a sequencer snapshot from one execution with order
shards from another: the shards' barriers waited for a batch number that never came
again, and every later correction was lost (the crash-restart test, on a loaded
machine).

No resume can need a snapshot of an epoch that did not complete, so deleting them
before a run starts is always safe. It needs every partition's progress: with only a
share of the partition files here (one machine of several, `docs/scale-out.md`) the
resume epoch is unknown, and nothing is deleted. Such a share is therefore marked
while a run uses it (`mark_running`, a table of ours in each partition file) and
unmarked only when the run ends by itself; a process refuses a share still marked
(`dataflows.live`) until the files are gathered and `main` has dropped and unmarked
them (docs/scale-out.md).
"""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

PARTITION_GLOB = "part-*.sqlite3"
BUSY_TIMEOUT = 30.0
"""Seconds to wait for a lock: the store is WAL-mode SQLite that a run may still close."""


class RecoveryStoreError(RuntimeError):
    """A recovery partition could not be read or changed."""


@dataclass(frozen=True)
class Pruned:
    """What `drop_unfinished_snapshots` did."""

    resume_epoch: int | None
    """The epoch the next execution resumes at; None for a store no run has used."""
    dropped: int
    """Snapshots deleted (of epochs at or after `resume_epoch`)."""
    missing: tuple[int, ...] = ()
    """Partitions not in this directory (then nothing was deleted)."""


def _connect(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    except sqlite3.Error as e:
        raise RecoveryStoreError(f"cannot open recovery partition {path}: {e}") from None


@dataclass(frozen=True)
class Progress:
    """What every partition file of a directory says about the executions so far."""

    files: list[Path]
    exs: dict[int, tuple[int, int]]
    """Each execution's worker count and resume epoch."""
    fronts: dict[tuple[int, int], int]
    """Each (execution, worker)'s frontier: the first epoch it has not completed."""
    missing: tuple[int, ...]
    """Partitions not in the directory (one machine's share of a split store)."""

    @property
    def resume_epoch(self) -> int | None:
        """Where the next execution resumes; None for an unused or incomplete store."""
        return None if self.missing else resume_epoch(self.exs, self.fronts)


def read_progress(rdir: Path) -> Progress:
    """The executions and worker frontiers of all partition files in `rdir`."""
    files = sorted(rdir.glob(PARTITION_GLOB))
    counts: set[int] = set()
    indexes: set[int] = set()
    exs: dict[int, tuple[int, int]] = {}
    fronts: dict[tuple[int, int], int] = {}
    for path in files:
        with closing(_connect(path)) as conn:
            try:
                for index, count in conn.execute("SELECT part_index, part_count FROM parts"):
                    indexes.add(index)
                    counts.add(count)
                for ex, workers, resume in conn.execute(
                    "SELECT ex_num, worker_count, resume_epoch FROM exs"
                ):
                    exs[ex] = (workers, resume)
                for ex, worker, frontier in conn.execute(
                    "SELECT ex_num, worker_index, worker_frontier FROM fronts"
                ):
                    fronts[ex, worker] = max(frontier, fronts.get((ex, worker), frontier))
            except sqlite3.Error as e:
                raise RecoveryStoreError(f"cannot read recovery partition {path}: {e}") from None
    if len(counts) > 1:
        raise RecoveryStoreError(f"recovery.dir {rdir} mixes stores of {sorted(counts)} partitions")
    missing = tuple(sorted(set(range(counts.pop())) - indexes)) if counts else ()
    return Progress(files, exs, fronts, missing)


def resume_epoch(exs: dict[int, tuple[int, int]], fronts: dict[tuple[int, int], int]) -> int | None:
    """The epoch Bytewax resumes at, as its `resume_from` computes it: the latest
    execution's slowest worker (a worker that wrote no frontier is at the execution's
    own resume epoch)."""
    if not exs:
        return None
    ex = max(exs)
    workers, start = exs[ex]
    return min(max(start, fronts.get((ex, w), start)) for w in range(workers))


def drop_unfinished_snapshots(rdir: Path) -> Pruned:
    """Delete every snapshot of an epoch at or after the resume epoch (see the module)."""
    progress = read_progress(rdir)
    epoch = progress.resume_epoch
    if epoch is None:
        return Pruned(None, 0, progress.missing)
    dropped = 0
    for path in progress.files:
        with closing(_connect(path)) as conn:
            try:
                dropped += conn.execute(
                    "DELETE FROM snaps WHERE snap_epoch >= ?", (epoch,)
                ).rowcount
            except sqlite3.Error as e:
                raise RecoveryStoreError(f"cannot drop stale snapshots in {path}: {e}") from None
    return Pruned(epoch, dropped)


def resumed_snapshots(rdir: Path, epoch: int) -> Iterator[tuple[str, str, bytes]]:
    """(step id, state key, snapshot) of every state key a resume at `epoch` (as
    `drop_unfinished_snapshots` found it) loads: its latest snapshot before the epoch, as
    Bytewax's `resume_from` picks it (a key whose latest is a deletion loads nothing).
    Bytewax pickles what a step's `snapshot` gave."""
    for path in sorted(rdir.glob(PARTITION_GLOB)):
        with closing(_connect(path)) as conn:
            try:
                rows = conn.execute(
                    "SELECT step_id, state_key, ser_change FROM snaps JOIN ("
                    " SELECT step_id, state_key, MAX(snap_epoch) AS snap_epoch FROM snaps"
                    " WHERE snap_epoch < ? GROUP BY step_id, state_key"
                    ") USING (step_id, state_key, snap_epoch) WHERE ser_change IS NOT NULL",
                    (epoch,),
                ).fetchall()
            except sqlite3.Error as e:
                raise RecoveryStoreError(f"cannot read recovery partition {path}: {e}") from None
        for step_id, key, ser in rows:
            yield step_id, key, pickle.loads(ser)


RUNNING_TABLE = "orderguard_running"
"""Our table in a partition file: present while a run that may not end cleanly uses it."""


def mark_running(rdir: Path) -> None:
    """Mark every partition file here as used by a run that has not ended (yet)."""
    for path in sorted(rdir.glob(PARTITION_GLOB)):
        with closing(_connect(path)) as conn:
            try:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {RUNNING_TABLE} (since TEXT)")
                conn.execute(f"INSERT INTO {RUNNING_TABLE} VALUES (datetime('now'))")
            except sqlite3.Error as e:
                raise RecoveryStoreError(f"cannot mark recovery partition {path}: {e}") from None


def unmark_running(rdir: Path) -> int:
    """Remove the marks (a run ended by itself, or its stale snapshots were dropped);
    returns how many files were marked."""
    marked = 0
    for path in marked_running(rdir):
        with closing(_connect(path)) as conn:
            try:
                conn.execute(f"DROP TABLE IF EXISTS {RUNNING_TABLE}")
            except sqlite3.Error as e:
                raise RecoveryStoreError(f"cannot unmark recovery partition {path}: {e}") from None
        marked += 1
    return marked


def marked_running(rdir: Path) -> list[Path]:
    """The partition files here that a run which did not end by itself left marked."""
    found = []
    for path in sorted(rdir.glob(PARTITION_GLOB)):
        with closing(_connect(path)) as conn:
            try:
                row = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (RUNNING_TABLE,),
                ).fetchone()
            except sqlite3.Error as e:
                raise RecoveryStoreError(f"cannot read recovery partition {path}: {e}") from None
        if row:
            found.append(path)
    return found


def main(argv: list[str] | None = None) -> int:
    """`python -m connectors.recovery_store DIR`: the drop, for a store gathered by hand
    (then the partition files are unmarked, and may go back to their machines)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m connectors.recovery_store", description=main.__doc__
    )
    parser.add_argument("dir", type=Path, help="a recovery.dir holding every part-*.sqlite3")
    args = parser.parse_args(argv)
    try:
        pruned = drop_unfinished_snapshots(args.dir)
    except RecoveryStoreError as e:
        print(e)
        return 1
    if pruned.missing:
        print(f"partitions {', '.join(map(str, pruned.missing))} are not in {args.dir}")
        return 1
    unmarked = unmark_running(args.dir)
    print(
        f"dropped {pruned.dropped} snapshots; resume epoch {pruned.resume_epoch}; "
        f"{unmarked} partition files were marked by a run that did not end"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
