"""The reference index inside the dataflow: references across index shards, any worker count.

The normalizer is replaced by one that hands back prepared events (the contract of
`Event.ref` / `Event.links`), so this checks what happens downstream of it: routing to
the index shard of each reference, release behind the link through the barriers, the
dead letter at the bound, and the same outputs with one worker or two.
"""

from __future__ import annotations

from collections import Counter

import orjson
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from connectors.replay import RawBatch
from dataflows.flow import build_flow
from schemas.config import Settings
from schemas.event import Event
from schemas.timeparse import iso
from tests.helpers import HOUR, MIN, T0, ev

ORDERS = 12
SETTINGS = Settings(
    pipeline={"shards": 8, "batch_size": 5},  # two index shards
    carriers={"sf": {"pattern": "^SF[0-9]{12}$"}},
    retention={"pending_tracking": "2d"},
)


def oid(i: int) -> str:
    return f"TB20260302{i:05d}"


def life(i: int) -> list[Event]:
    """Channel first (by its own id), then the OMS that links it, then payment and carrier."""
    tid, pi = f"taobao:{3456789012345600 + i}", f"stripe_pi:pi_3Mt{i:08d}"
    at = T0 + i * MIN
    return [
        ev("taobao", "channel", None, "PENDING_PAYMENT", at=at, ref=tid),
        ev("taobao", "channel", None, "PAID", at=at + 1, ref=tid),
        ev("oms", "oms", oid(i), "PENDING_PAYMENT", at=at + 2, links=(tid, pi), channel="taobao"),
        ev("stripe", "gateway", None, "PAID", at=at + 3, ref=pi, outcome="success"),
        ev(
            "wms", "wms", oid(i), "LABEL_CREATED", at=at + 4,
            tracking_no=f"SF{100000000000 + i}", tracking_valid=True, carrier="sf",
        ),
        ev(
            "sf", "carrier", None, "IN_TRANSIT", at=at + 5,
            tracking_no=f"SF{100000000000 + i}", tracking_valid=True, carrier="sf",
        ),
    ]  # fmt: skip


def scenario() -> list[Event]:
    events = [e for i in range(ORDERS) for e in life(i)]
    events.sort(key=lambda e: e.received_ms)
    orphan = ev("douyin", "channel", None, "PAID", at=T0 + HOUR, ref="douyin:3456789012345678")
    late = ev("oms", "oms", oid(99), "PENDING_PAYMENT", at=T0 + 3 * 24 * HOUR)  # past the bound
    return [*events, orphan, late]


class _Prepared:
    def __init__(self, events: dict[bytes, Event]) -> None:
        self._events = events

    def normalize(self, raw: bytes, *, seq: int, **_: object) -> Event:
        ev = self._events[raw]
        ev.seq = seq  # the line's merge key, as the real normalizer sets it
        return ev


def replay(workers: int) -> list[dict]:
    events = scenario()
    raws = [
        orjson.dumps({"received_at": iso(e.received_ms), "line": n}) for n, e in enumerate(events)
    ]
    for n, e in enumerate(events):
        e.event_id = f"e{n}"  # the same in every run
    prepared = _Prepared(dict(zip(raws, events, strict=True)))
    size = SETTINGS.pipeline.batch_size
    lines = [(n + 1, raw, {"line": n}) for n, raw in enumerate(raws)]
    batches = [
        RawBatch("p", b, lines[b * size : (b + 1) * size]) for b in range(len(lines) // size + 1)
    ]
    out: list[list] = []
    flow = build_flow(
        SETTINGS,
        TestingSource(batches),
        TestingSink(out),
        normalizer=prepared,  # type: ignore[arg-type]
        wall_clock=lambda: T0 + 30 * 24 * HOUR,
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    docs = []
    for topic, _key, sort, value in (r for batch in out for r in batch):
        doc = orjson.loads(value)
        doc.pop("emitted_at", None)
        if topic == "dead_letters":
            del doc["at"]  # the wall clock when written
        docs.append({"topic": topic, "sort": sort, **doc})
    return sorted(docs, key=lambda d: (d["topic"], d["sort"]))


def test_orders_named_by_channel_and_payment_ids_end_where_their_evidence_says():
    docs = replay(1)
    last: dict[str, dict] = {}
    for d in (d for d in docs if d["topic"] == "corrected"):
        if d["version"] > last.get(d["order_id"], {}).get("version", 0):
            last[d["order_id"]] = d
    assert sorted(last) == sorted([oid(i) for i in range(ORDERS)] + [oid(99)])
    for i in range(ORDERS):
        c = last[oid(i)]
        assert c["status"] == "IN_TRANSIT", c
        assert c["ids"] == [
            f"stripe_pi:pi_3Mt{i:08d}",
            f"taobao:{3456789012345600 + i}",
            f"tracking:SF{100000000000 + i}",
        ]
    # the channel's two reports were released behind the link, in order: the first
    # correction an order has is from the OMS, and the channel's PAID follows it
    first = [d for d in docs if d["topic"] == "corrected" and d["order_id"] == oid(0)]
    assert [(d["version"], d["status"], d["evidence"][0]["source"]) for d in first[:2]] == [
        (1, "PENDING_PAYMENT", "oms"),
        (2, "PAID", "taobao"),
    ]
    dead = Counter((d["reason"], d["value"]) for d in docs if d["topic"] == "dead_letters")
    assert dead == Counter({("unlinked_reference", "douyin:3456789012345678"): 1})


def test_two_workers_give_the_same_outputs_as_one():
    assert replay(2) == replay(1)
