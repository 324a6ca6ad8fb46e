"""Snapshots a killed run left of epochs it never completed are dropped before a run.

The Bytewax runs here are real (a keyed counter, in process, with a real recovery
store). The harmful leftover is written by hand: a snapshot, of the epoch the next
execution resumes at, of a key that execution does not touch (in the orderguard
flow: the order shards, while a restart re-ran that epoch with only the sequencer
busy). A finite run cannot leave it, since at its end Bytewax snapshots every key.
The next execution then dies itself (`TestingSource.ABORT`, so no end-of-input
snapshot), and the one after it loads whatever the store holds for that key.
"""

from __future__ import annotations

import pickle
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.recovery_store import (
    PARTITION_GLOB,
    Pruned,
    drop_unfinished_snapshots,
    main,
    mark_running,
    marked_running,
    read_progress,
    resume_epoch,
)
from dataflows.live import RecoveryDirError, claim_share, prepare_recovery
from schemas.config import Settings

STEP = "count.count.stateful_flat_map.stateful.stateful_batch"
"""Bytewax's state step id for `stateful_map("count", ...)` in flow `count`."""


def day() -> list[object]:
    """Input for three executions: one that ends, one that is killed, one that ends.

    The same list serves them all: the source resumes at its snapshot's index, and an
    ABORT fires once."""
    return ["a", "b", "a", TestingSource.EOF(), "a", "a", TestingSource.ABORT(), "b"]


def count(store: Path, items: list[object]) -> list[tuple[str, int]]:
    """Count each key's items; the source resumes where the last execution stopped."""
    out: list[tuple[str, int]] = []
    flow = Dataflow("count")
    keyed = op.key_on("key", op.input("inp", flow, TestingSource(items)), lambda x: x)
    counts = op.stateful_map("count", keyed, lambda n, _: ((n or 0) + 1, (n or 0) + 1))
    op.output("out", counts, TestingSink(out))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(store))
    return out


def rows(store: Path) -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(store.glob(PARTITION_GLOB)):
        with closing(sqlite3.connect(path)) as conn:
            found += conn.execute("SELECT step_id, state_key, snap_epoch FROM snaps").fetchall()
    return sorted(found)


def leave_killed_snapshot(store: Path, key: str, value: int) -> int:
    """What a run killed in the resume epoch leaves: its snapshot of `key` in that epoch."""
    epoch = read_progress(store).resume_epoch
    assert epoch is not None
    with closing(sqlite3.connect(store / "part-0.sqlite3")) as conn, conn:
        conn.execute(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)",
            (STEP, key, epoch, pickle.dumps(value)),
        )
    return epoch


@pytest.fixture
def items() -> list[object]:
    return day()


@pytest.fixture
def store(tmp_path, items) -> Path:
    init_db_dir(tmp_path, 1)
    assert count(tmp_path, items) == [("a", 1), ("b", 1), ("a", 2)]
    return tmp_path


def test_without_the_drop_bytewax_resumes_a_key_from_the_killed_run(store, items):
    """The upstream behaviour this module exists for (Bytewax 0.21): if this starts
    failing, Bytewax deletes such snapshots itself."""
    leave_killed_snapshot(store, "b", 100)
    assert count(store, items) == [("a", 3), ("a", 4)]  # re-runs the epoch without b; killed
    assert count(store, items) == [("b", 101)]  # b as the lost run left it


def test_after_the_drop_the_resume_loads_completed_epochs_only(store, items):
    epoch = leave_killed_snapshot(store, "b", 100)
    kept = [r for r in rows(store) if r[2] < epoch]
    assert drop_unfinished_snapshots(store) == Pruned(epoch, 1)
    assert rows(store) == kept  # every snapshot of a completed epoch is still there
    assert count(store, items) == [("a", 3), ("a", 4)]
    assert drop_unfinished_snapshots(store).resume_epoch > epoch  # the killed run's own
    assert count(store, items) == [("b", 2)]


def test_prepare_recovery_drops_them_before_a_run(tmp_path, items):
    rec = tmp_path / "rec"
    settings = Settings(recovery={"dir": rec, "partitions": 1})
    assert prepare_recovery(settings) is True
    count(rec, items)
    epoch = leave_killed_snapshot(rec, "b", 100)
    assert prepare_recovery(settings) is False
    assert (STEP, "b", epoch) not in rows(rec)
    count(rec, items)  # killed
    assert prepare_recovery(settings) is False
    assert count(rec, items) == [("b", 2)]


def test_a_share_of_the_store_is_left_alone(tmp_path, items):
    """One machine of several holds some partition files: the resume epoch is unknown."""
    init_db_dir(tmp_path, 2)
    count(tmp_path, items)
    leave_killed_snapshot(tmp_path, "b", 100)
    (tmp_path / "part-1.sqlite3").unlink()
    before = rows(tmp_path)
    assert drop_unfinished_snapshots(tmp_path) == Pruned(None, 0, (1,))
    assert rows(tmp_path) == before


def test_a_store_no_run_has_used_has_nothing_to_drop(tmp_path):
    init_db_dir(tmp_path, 2)
    assert drop_unfinished_snapshots(tmp_path) == Pruned(None, 0)


@pytest.mark.parametrize(
    ("exs", "fronts", "want"),
    [
        ({}, {}, None),
        ({0: (1, 1)}, {}, 1),  # started, no epoch completed
        ({0: (1, 1)}, {(0, 0): 5}, 5),
        ({0: (2, 1)}, {(0, 0): 5}, 1),  # worker 1 wrote nothing: still at the start
        ({0: (2, 1)}, {(0, 0): 5, (0, 1): 4}, 4),  # the slowest worker
        ({0: (1, 1), 1: (1, 4)}, {(0, 0): 9, (1, 0): 6}, 6),  # the latest execution only
        ({0: (1, 1), 1: (1, 4)}, {(0, 0): 4}, 4),  # it resumed at 4 and got no further
    ],
)
def test_resume_epoch_is_computed_as_bytewax_does(exs, fronts, want):
    assert resume_epoch(exs, fronts) == want


def test_the_command_drops_them_and_refuses_a_share(store, capsys, tmp_path_factory):
    epoch = leave_killed_snapshot(store, "b", 100)
    assert main([str(store)]) == 0
    assert capsys.readouterr().out == (
        f"dropped 1 snapshots; resume epoch {epoch}; "
        "0 partition files were marked by a run that did not end\n"
    )
    share = tmp_path_factory.mktemp("share")
    init_db_dir(share, 2)
    (share / "part-0.sqlite3").unlink()
    assert main([str(share)]) == 1
    assert "partitions 0 are not in" in capsys.readouterr().out


def test_a_share_a_run_did_not_end_on_is_refused_until_gathered_and_dropped(
    tmp_path, items, capsys
):
    """A share cannot drop its stale snapshots; a run marks it, and only a run that
    ends by itself or the command over the gathered store unmarks it."""
    whole, share = tmp_path / "whole", tmp_path / "share"
    whole.mkdir()
    share.mkdir()
    init_db_dir(whole, 2)
    assert claim_share(whole) is False and not marked_running(whole)  # one machine: the drop
    count(whole, items)
    (whole / "part-1.sqlite3").rename(share / "part-1.sqlite3")
    assert claim_share(share) is True  # a run starts on it ...
    assert marked_running(share) == [share / "part-1.sqlite3"]
    with pytest.raises(
        RecoveryDirError, match=r"partitions 0 are elsewhere.*did not end by itself"
    ):
        claim_share(share)  # ... and never ended: the next one is refused
    (share / "part-1.sqlite3").rename(whole / "part-1.sqlite3")
    leave_killed_snapshot(whole, "b", 100)
    assert main([str(whole)]) == 0
    assert capsys.readouterr().out.endswith(
        "; 1 partition files were marked by a run that did not end\n"
    )
    assert not marked_running(whole)
    mark_running(whole)
    assert count(whole, items) == [("a", 3), ("a", 4)]  # Bytewax ignores our table
