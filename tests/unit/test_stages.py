"""Stage durations: each stage timed once, on the ingestion clock, from the milestones seen."""

from __future__ import annotations

import pickle

from schemas.config import Settings
from state.shard import OrderShard
from state.stages import StageTiming
from tests.helpers import HOUR, MIN, T0, label, oms, pay, scan

OID = "TB2026030200001"
TRACK = "SF123456789012"


def shard() -> OrderShard:
    return OrderShard(Settings(carriers={"sf": {"pattern": "^SF[0-9]{12}$"}}))


def feed(s: OrderShard, *events) -> list[StageTiming]:
    s.process(list(events), max(e.received_ms for e in events))
    return s.stages


def test_a_whole_life_times_every_stage_once():
    s = shard()
    kw = {"channel": "taobao"}
    assert feed(s, oms(OID, "PENDING_PAYMENT", T0, **kw)) == []
    assert feed(s, pay(OID, T0 + MIN, **kw)) == []
    assert feed(s, oms(OID, "PAID", T0 + 3 * MIN, **kw)) == [
        StageTiming("payment_to_oms", "taobao", "none", 2 * MIN)
    ]
    assert feed(s, label(OID, TRACK, T0 + 2 * HOUR)) == [
        StageTiming("paid_to_label", "taobao", "sf", 2 * HOUR - MIN)
    ]
    assert feed(s, scan(OID, "PICKED_UP", T0 + 5 * HOUR)) == [
        StageTiming("label_to_pickup", "taobao", "sf", 3 * HOUR)
    ]
    assert feed(s, scan(OID, "IN_TRANSIT", T0 + 9 * HOUR)) == []
    assert feed(s, scan(OID, "DELIVERED", T0 + 30 * HOUR)) == [
        StageTiming("pickup_to_delivered", "taobao", "sf", 25 * HOUR)
    ]
    # a late duplicate milestone and the OMS catching up time nothing again
    assert feed(s, scan(OID, "PICKED_UP", T0 + 31 * HOUR, event_at=T0 + 5 * HOUR)) == []
    assert feed(s, oms(OID, "LABEL_CREATED", T0 + 32 * HOUR)) == []


def test_a_skipped_milestone_times_only_the_stages_whose_start_was_seen():
    s = shard()
    feed(s, pay(OID, T0))
    # the first carrier scan is already in transit: the label and the pickup come together
    out = feed(s, scan(OID, "IN_TRANSIT", T0 + HOUR))
    assert [t.stage for t in out] == ["paid_to_label"]
    assert feed(s, scan(OID, "DELIVERED", T0 + 3 * HOUR)) == [
        StageTiming("pickup_to_delivered", "unknown", "sf", 2 * HOUR)
    ]


def test_milestone_times_survive_a_snapshot():
    s = shard()
    feed(s, pay(OID, T0), label(OID, TRACK, T0 + HOUR))
    restored = shard()
    restored.restore(pickle.loads(pickle.dumps(s.__getstate__())), s._settings)
    assert feed(restored, scan(OID, "PICKED_UP", T0 + 4 * HOUR)) == [
        StageTiming("label_to_pickup", "unknown", "sf", 3 * HOUR)
    ]


def test_a_shard_keeps_only_the_last_calls_timings():
    """Callers that never read them (benchmarks, the plain loop) must not accumulate them."""
    s = shard()
    feed(s, pay(OID, T0), label(OID, TRACK, T0 + HOUR))
    assert feed(s, oms(OID, "PAID", T0 + 2 * HOUR)) == [
        StageTiming("payment_to_oms", "unknown", "sf", 2 * HOUR)
    ]
    assert feed(s, oms(OID, "LABEL_CREATED", T0 + 3 * HOUR)) == []
