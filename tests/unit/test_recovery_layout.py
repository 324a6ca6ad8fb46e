"""A recovery store remembers its shard layout and refuses a different one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataflows.live import (
    LAYOUT_FILE,
    LAYOUT_VERSION,
    RecoveryDirError,
    compare_layout,
    input_partition_counts,
    prepare_recovery,
)
from schemas.config import Settings
from schemas.keys import KEY_FUNCTION


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
    assert layout == {
        "version": LAYOUT_VERSION,
        "shards": 8,
        "index_shards": 4,
        "partitioner": "consistent_random",
        "key_function": KEY_FUNCTION,
    }
    assert prepare_recovery(settings(tmp_path, 8)) is False  # resumed, not re-initialized


def test_a_different_shard_count_is_refused_before_it_can_stall_the_flow(tmp_path):
    prepare_recovery(settings(tmp_path, 8))
    with pytest.raises(RecoveryDirError, match=r"pipeline.shards = 8; this start has 16"):
        prepare_recovery(settings(tmp_path, 16))


def test_a_store_written_before_the_sequencer_is_refused(tmp_path):
    prepare_recovery(settings(tmp_path, 8))
    (tmp_path / "rec" / LAYOUT_FILE).write_text('{"shards": 8, "index_shards": 2}\n')
    with pytest.raises(RecoveryDirError, match=r"older orderguard \(layout version 1"):
        prepare_recovery(settings(tmp_path, 8))


RDIR = Path("/var/lib/orderguard/rec")
SIX = {"control": 1, "orders": 6, "payments": 6, "tracking": 6}


def layout(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "version": LAYOUT_VERSION,
        "shards": 8,
        "index_shards": 2,
        "partitioner": "consistent_random",
        "key_function": KEY_FUNCTION,
        "input_partitions": SIX,
    }
    return {**base, **changes}


def test_the_same_layout_is_kept():
    assert compare_layout(layout(), layout(), RDIR) == layout()


def test_other_input_partition_counts_are_refused_naming_setting_values_dir_and_remedy():
    with pytest.raises(RecoveryDirError) as e:
        compare_layout(layout(), layout(input_partitions={**SIX, "orders": 3}), RDIR)
    msg = str(e.value)
    assert str(RDIR) in msg
    assert "kafka.partitions" in msg
    assert "control=1, orders=6, payments=6, tracking=6; this start has " in msg
    assert "control=1, orders=3, payments=6, tracking=6" in msg
    assert "start from a new recovery.dir, or restore the old topic layout" in msg


def test_another_partitioner_is_refused():
    with pytest.raises(
        RecoveryDirError,
        match=r"kafka.client partitioner = 'consistent_random'; "
        r"this start has 'murmur2_random'.*new recovery.dir",
    ):
        compare_layout(layout(), layout(partitioner="murmur2_random"), RDIR)


def test_another_key_function_is_refused():
    with pytest.raises(RecoveryDirError, match=r"key function.*MessageKeys/1.*MessageKeys/2"):
        compare_layout(layout(), layout(key_function="schemas.keys.MessageKeys/2"), RDIR)


def test_a_store_from_before_the_fields_were_kept_records_them_instead_of_refusing():
    old = {"version": LAYOUT_VERSION, "shards": 8, "index_shards": 2}
    assert compare_layout(old, layout(), RDIR) == layout()


def test_a_start_that_does_not_know_the_partitions_keeps_the_recorded_ones():
    now = layout()
    del now["input_partitions"]
    assert compare_layout(layout(), now, RDIR) == layout()


def test_partitions_are_counted_per_stream_from_the_part_names():
    parts = ["control:0", "orders:0", "orders:1", "payments:0", "tracking:0", "tracking:1"]
    assert input_partition_counts(parts) == {
        "control": 1,
        "orders": 2,
        "payments": 1,
        "tracking": 2,
    }


def test_an_older_store_gets_the_fields_on_its_next_start(tmp_path):
    prepare_recovery(settings(tmp_path, 8))
    path = tmp_path / "rec" / LAYOUT_FILE
    path.write_text(json.dumps({"version": LAYOUT_VERSION, "shards": 8, "index_shards": 2}))
    assert prepare_recovery(settings(tmp_path, 8), SIX) is False
    assert json.loads(path.read_text())["input_partitions"] == SIX
    with pytest.raises(RecoveryDirError, match=r"orders=6.*this start has.*orders=3"):
        prepare_recovery(settings(tmp_path, 8), {**SIX, "orders": 3})
