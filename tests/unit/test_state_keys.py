"""Where the placed steps land: every input partition's stamp, and each order shard on
the worker that reads its lane (Bytewax 0.21.1's placement, `dataflows.placement`)."""

from __future__ import annotations

import pytest

from dataflows.placement import StateKeys, worker_of_key, workers_of_parts

PARTS = ["control:0"] + [f"{s}:{i}" for s in ("orders", "payments", "tracking") for i in range(6)]


@pytest.mark.parametrize("workers", [1, 2, 3, 6])
def test_stamps_and_shards_live_where_their_partitions_are_read(workers: int) -> None:
    keys = StateKeys(PARTS, 12, 6)
    reader = workers_of_parts(PARTS, workers)
    assert keys.colocated and keys.lanes == 6
    for part in PARTS:
        assert worker_of_key(keys.input(part), workers) == reader[part]
    for s in range(12):
        lane = s % 6
        here = worker_of_key(keys.shard(s), workers)
        assert here == reader[f"orders:{lane}"] == reader[f"payments:{lane}"]
        assert here == reader[f"tracking:{lane}"]
    for i in range(6):  # index shard i holds the references read in lane i
        assert worker_of_key(keys.index(i), workers) == reader[f"tracking:{i}"]


def test_a_reference_waits_in_the_lane_its_own_records_are_read_from() -> None:
    from dataflows.router import index_shard
    from schemas.keys import kafka_partition

    for ref, key in [
        ("taobao:3456789012345678", b"3456789012345678"),
        ("SF1234567890123", b"SF1234567890123"),
    ]:
        assert index_shard(ref, 6) == kafka_partition(key, 6)


def test_keys_are_a_function_of_the_layout_only() -> None:
    a, b = StateKeys(PARTS, 12), StateKeys(list(reversed(PARTS)), 12)
    assert [a.shard(s) for s in range(12)] == [b.shard(s) for s in range(12)]
    assert [a.part_index(p) for p in PARTS] == list(range(len(PARTS)))  # sorted: control first


def test_a_shard_count_that_is_no_multiple_of_the_lanes_gets_plain_keys() -> None:
    keys = StateKeys(PARTS, 16)
    assert not keys.colocated
    assert keys.shard(3) == "o003"
