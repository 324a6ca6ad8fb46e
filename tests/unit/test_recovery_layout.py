"""A recovery store remembers its shard layout and refuses a different one."""

from __future__ import annotations

import json

import pytest

from dataflows.live import LAYOUT_FILE, LAYOUT_VERSION, RecoveryDirError, prepare_recovery
from schemas.config import Settings


def settings(tmp_path, shards: int) -> Settings:
    return Settings(
        recovery={"dir": tmp_path / "rec", "partitions": 2}, pipeline={"shards": shards}
    )


def test_first_use_initializes_the_store_and_records_the_layout(tmp_path):
    assert prepare_recovery(settings(tmp_path, 8)) is True
    rec = tmp_path / "rec"
    assert sorted(p.name for p in rec.glob("part-*.sqlite3")) == [
        "part-0.sqlite3",
        "part-1.sqlite3",
    ]
    layout = json.loads((rec / LAYOUT_FILE).read_text())
    assert layout == {"version": LAYOUT_VERSION, "shards": 8, "index_shards": 2}
    assert prepare_recovery(settings(tmp_path, 8)) is False  # resumed, not re-initialized


def test_a_different_shard_count_is_refused_before_it_can_stall_the_flow(tmp_path):
    prepare_recovery(settings(tmp_path, 8))
    with pytest.raises(RecoveryDirError, match=r"pipeline.shards=8; this configuration says 16"):
        prepare_recovery(settings(tmp_path, 16))


def test_a_store_written_before_the_sequencer_is_refused(tmp_path):
    prepare_recovery(settings(tmp_path, 8))
    (tmp_path / "rec" / LAYOUT_FILE).write_text('{"shards": 8, "index_shards": 2}\n')
    with pytest.raises(RecoveryDirError, match=r"older orderguard \(layout version 1"):
        prepare_recovery(settings(tmp_path, 8))
