"""The faster core's pieces (issue 14): the encode clock, the GC tuning."""

from __future__ import annotations

import gc
import time

import orjson
import pytest

from dataflows import gc_tuning
from schemas.timeparse import iso
from state import encode


def test_emitted_at_is_the_wall_clock_to_the_millisecond(monkeypatch):
    times = iter([1_772_409_600.0011, 1_772_409_600.0019, 1_772_409_600.0021, 1_772_409_601.5])
    monkeypatch.setattr(time, "time", lambda: next(times))  # what wall_clock_ms reads
    got = [encode._now() for _ in range(4)]
    assert got == [
        "2026-03-02T00:00:00.001Z",
        "2026-03-02T00:00:00.001Z",
        "2026-03-02T00:00:00.002Z",
        "2026-03-02T00:00:01.500Z",
    ]
    assert got[-1] == iso(1_772_409_601_500)


@pytest.fixture
def gc_restored():
    """CPython's GC as a fresh process has it (an in-process replay of another test tunes it)."""
    threshold = gc.get_threshold()
    gc_tuning._tuned = False
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc_tuning._tuned = False


def test_gc_tuning_off_leaves_cpython_defaults(gc_restored):
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    gc_tuning.tune_gc(False)
    gc_tuning.freeze_restored()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_gc_tuning_freezes_start_up_and_restored_state(gc_restored):
    gc_tuning.tune_gc(True)
    assert gc.get_threshold() == gc_tuning.GC_THRESHOLD
    frozen = gc.get_freeze_count()
    assert frozen > 0
    state = [[i] for i in range(1000)]  # as a restore would build it (lists: GC-tracked)
    gc_tuning.freeze_restored()
    assert gc.get_freeze_count() >= frozen + len(state)


def _split(**client: str):
    from connectors.replay import KafkaSplit
    from schemas.config import load_settings

    settings = load_settings()
    settings.kafka.client.update(client)
    return KafkaSplit(settings), settings.kafka.partitions


def test_a_split_keys_by_order_id_as_the_producers_do():
    import zlib

    split, n = _split()
    env = {
        "stream": "payments",
        "source": "alipay",
        "received_at": "2026-03-02T00:00:00.000Z",
        "payload": {"out_trade_no": "TB2026030200001", "trade_status": "TRADE_SUCCESS"},
    }
    from schemas.config import load_settings
    from schemas.keys import MessageKeys

    key = MessageKeys(load_settings()).key(env)
    assert key == b"TB2026030200001"
    assert split.part_of(orjson.dumps(env)) == f"payments:{zlib.crc32(key) % n}"
    assert "control:0" in split.parts() and len(split.parts()) == 3 * n + 1


def test_lines_that_are_no_envelope_go_to_the_orders_topic_reproducibly():
    split, _ = _split()
    for line in (b"{not json", b"[1, 2]", b'{"stream": "nope", "payload": {}}'):
        part = split.part_of(line)
        assert part.startswith("orders:") and part == split.part_of(line)


def test_a_partitioner_the_split_cannot_mirror_is_refused():
    with pytest.raises(ValueError, match="partitioner='murmur2_random'"):
        _split(partitioner="murmur2_random")
    consistent, _ = _split(partitioner="consistent")
    assert {consistent.part_of(b"{not json %d" % i) for i in range(20)} == {"orders:0"}


def test_a_step_restored_from_its_snapshot_is_frozen(gc_restored, tmp_path):
    from schemas.config import load_settings
    from tests.helpers import T0, oms, orders_logic

    settings = load_settings()

    def orders(resume: bytes | None):
        return orders_logic(settings, resume, tmp_path)

    logic = orders(None)
    logic.step.shard.process(
        [oms(f"TB20260302{i:05d}", "PENDING_PAYMENT", T0 + i) for i in range(200)], T0
    )
    snapshot = logic.snapshot()
    assert snapshot is not None
    gc_tuning.tune_gc(True)
    frozen = gc.get_freeze_count()
    restored = orders(snapshot).step
    assert len(restored.shard.orders) == 200
    assert gc.get_freeze_count() >= frozen + 200  # one Order each at least
