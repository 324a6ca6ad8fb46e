"""Bytewax 0.21.1 places stateful keys and input partitions where `dataflows.placement` says.

A real 2- and 3-worker run records the thread each partition is read on, each key's
state lives on and each sink partition is written on, and the worker index of every
thread (from a dynamic source, which is told it). If a Bytewax upgrade moves any of
these placements, this fails.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from bytewax.testing import TestingSink, cluster_main

from dataflows.placement import colocated_key, worker_of_key, workers_of_parts

PARTS = [f"part-{c}" for c in "qwertyuiop"]
KEYS = [f"k{i}" for i in range(40)] + ["o000", "health", "customers", "i003", "订单"]


class _Once(StatefulSourcePartition[str, None]):
    def __init__(self, part: str, seen: dict) -> None:
        self._part, self._seen, self._done = part, seen, False

    def next_batch(self) -> list[str]:
        if self._done:
            raise StopIteration()
        self._done = True
        self._seen[self._part] = threading.get_ident()
        return [self._part]

    def snapshot(self) -> None:
        return None


class _Parts(FixedPartitionedSource[str, None]):
    def __init__(self, seen: dict) -> None:
        self._seen = seen

    def list_parts(self) -> list[str]:
        return list(PARTS)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Once:
        return _Once(for_part, self._seen)


class _Written(StatefulSinkPartition[str, None]):
    def __init__(self, part: str, seen: dict) -> None:
        self._part, self._seen = part, seen

    def write_batch(self, values: list[str]) -> None:
        self._seen[self._part] = threading.get_ident()

    def snapshot(self) -> None:
        return None


class _SinkParts(FixedPartitionedSink[str, None]):
    """Partitioned as the Kafka sink is: the input partitions' names, keyed by index."""

    def __init__(self, seen: dict) -> None:
        self._seen = seen

    def list_parts(self) -> list[str]:
        return list(PARTS)

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Written:
        return _Written(for_part, self._seen)


class _Probe(StatelessSourcePartition[str]):
    def __init__(self, index: int, threads: dict) -> None:
        threads[threading.get_ident()] = index

    def next_batch(self) -> list[str]:
        raise StopIteration()


class _Workers(DynamicSource[str]):
    def __init__(self, threads: dict) -> None:
        self._threads = threads

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Probe:
        return _Probe(worker_index, self._threads)


@pytest.mark.parametrize("workers", [2, 3])
def test_keys_and_partitions_land_where_predicted(workers: int) -> None:
    part_thread: dict[str, int] = {}
    key_thread: dict[str, int] = {}
    sink_thread: dict[str, int] = {}
    worker_of_thread: dict[int, int] = {}
    flow = Dataflow("placement")
    op.output("probe_out", op.input("probe", flow, _Workers(worker_of_thread)), TestingSink([]))
    parts = op.input("parts", flow, _Parts(part_thread))
    keys = op.flat_map("keys", parts, lambda p: [(k, p) for k in KEYS] if p == PARTS[0] else [])
    slots = {p: i for i, p in enumerate(sorted(PARTS))}
    op.output(
        "written", op.map("slot", parts, lambda p: (str(slots[p]), p)), _SinkParts(sink_thread)
    )

    def where(state: None, value: str) -> tuple[None, str]:
        return None, value

    def record(kv: tuple[str, str]) -> tuple[str, str]:
        key_thread[kv[0]] = threading.get_ident()
        return kv

    placed = op.stateful_map("state", keys, where)
    op.output("out", op.map("record", placed, record), TestingSink([]))
    cluster_main(flow, [], 0, worker_count_per_proc=workers, epoch_interval=timedelta(seconds=1))

    assert len(set(worker_of_thread.values())) == workers
    seen_parts = {p: worker_of_thread[t] for p, t in part_thread.items()}
    seen_keys = {k: worker_of_thread[t] for k, t in key_thread.items()}
    assert seen_parts == workers_of_parts(PARTS, workers)
    # the Kafka sink's partitions land with the input partitions of the same name
    assert sink_thread == part_thread
    assert seen_keys == {k: worker_of_key(k, workers) for k in KEYS}
    assert len(set(seen_keys.values())) == workers  # the keys did spread


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5, 6, 8, 12, 16])
def test_colocated_keys_follow_their_partition(workers: int) -> None:
    parts = [f"g{i:03d}" for i in range(12)]
    readers = workers_of_parts(parts, workers)
    for slot, part in enumerate(sorted(parts)):
        key = colocated_key(f"o{slot:03d}", slot)
        assert key == colocated_key(f"o{slot:03d}", slot)  # stable: a pure function
        assert worker_of_key(key, workers) == readers[part]
