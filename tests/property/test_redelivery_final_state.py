"""Redelivered notifications change nothing (issue 12): a provider's push split into
several events and delivered again — whole, with its events in another order, seconds
or an hour later — leaves every order in the same final state, with no dead letter.

The lives are in the providers' real shapes (tests/fixtures/providers.py): an SF push of
three routes and a later one, a DHL push of a shipment's events (newest first), an
AfterShip webhook that repeats every checkpoint so far, Stripe's two notifications of one
payment. They run through the whole replay dataflow: normalizer, reference index, order
shards, customer desk; and through the same steps called directly
(benchmarks.replay_bench.Core), whose order states — every time an order keeps, its
evidence, the digests of the events it has seen — must come out equal: a duplicate that
slipped through would move "the last carrier update" and hide a stalled parcel.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.replay_bench import Core
from dataflows.replay import run_replay
from schemas.config import load_settings
from tests.fixtures import providers as p

SETTINGS = load_settings()
SF_ORDER = "TB2026120200124"
DHL_ORDER = p.WEB_STRIPE_OMS
TICK_ORDER, TICK_AT = "WEB2026120300001", "2026-12-03T10:00:00.000Z"
SPLIT = {"sf": ("Body", "WaybillRoute"), "dhl": ("shipments", 0, "events")}


def _at(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _notifications() -> list[tuple[str, dict[str, Any], str]]:
    """(source, payload, received_at) of two orders' lives, in received order."""
    oms_sf = p.oms_order(
        SF_ORDER,
        "已发货",
        "2026-12-02T13:50:00+08:00",
        channel="taobao",
        platform_order_id=str(p.TAOBAO_TID),
        tracking_no=p.SF_MAILNO,
        carrier="sf",
    )
    routes = [{**r, "orderid": SF_ORDER} for r in p.SF_ROUTES]
    taobao = p.taobao_trade("WAIT_BUYER_CONFIRM_GOODS", "2026-12-02 13:51:00")
    oms_web = p.oms_order(DHL_ORDER, "待支付", "2026-12-02T10:00:00+08:00")
    pi = p.stripe_payment_intent("evt_pi", "payment_intent.succeeded", 1796176900, "succeeded")
    charge = p.stripe_charge("evt_ch", "charge.succeeded", 1796176901)
    shipped = p.oms_order(
        DHL_ORDER, "已发货", "2026-12-02T13:00:00+08:00", tracking_no=p.DHL_ID, carrier="dhl"
    )
    events = [  # newest first, as DHL sends them
        p.dhl_event("2026-12-03T09:10:00+01:00", "transit", "OUT_FOR_DELIVERY", "Out for delivery"),
        p.dhl_event("2026-12-02T22:40:00+01:00", "transit", "ARRIVED", "Arrived at facility"),
        p.dhl_event("2026-12-02T15:05:00+01:00", "transit", "PICKED_UP", "Picked up"),
    ]
    return [
        ("stripe", pi, "2026-12-02T02:01:41.000Z"),
        ("oms", oms_web, "2026-12-02T02:00:01.000Z"),
        ("stripe", charge, "2026-12-02T02:01:42.000Z"),
        ("oms", oms_sf, "2026-12-02T05:50:01.000Z"),
        ("taobao", taobao, "2026-12-02T05:51:05.000Z"),
        ("oms", shipped, "2026-12-02T05:00:02.000Z"),
        ("sf", p.sf_push(*routes), "2026-12-02T15:16:00.000Z"),
        ("dhl", p.dhl_push(p.dhl_shipment(events[1:])), "2026-12-02T22:41:00.000Z"),
        ("sf", p.sf_push({**p.SF_LATER_ROUTE, "orderid": SF_ORDER}), "2026-12-03T00:31:00.000Z"),
        ("dhl", p.dhl_push(p.dhl_shipment(events)), "2026-12-03T08:11:00.000Z"),
        # the last line: the replay's clock ends here in every run, after any redelivery
        ("oms", p.oms_order(TICK_ORDER, "待支付", "2026-12-03T18:00:00+08:00"), TICK_AT),
    ]


NOTIFICATIONS = _notifications()


def _final_state(tmp: Path, lines: list[tuple[str, dict[str, Any], str]]) -> dict[str, Any]:
    src = tmp / "in.jsonl"
    raws = sorted(
        (p.envelope(s, body, received_at=at) for s, body, at in lines),
        key=lambda raw: orjson.loads(raw)["received_at"],
    )
    src.write_bytes(b"\n".join(raws) + b"\n")
    out = tmp / "out"
    run_replay(SETTINGS, [src], out, show_progress=False, summarize=False)

    def read(name: str) -> list[dict[str, Any]]:
        path = out / f"{name}.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    final: dict[str, str] = {}
    for rec in read("corrected"):
        final[rec["order_id"]] = rec["status"]
    alerts = {(a["type"], a.get("order_id"), a["state"]) for a in read("alerts")}
    return {"final": final, "alerts": alerts, "dead": read("dead_letters")}


def _order_states(lines: list[tuple[str, dict[str, Any], str]]) -> dict[str, tuple]:
    """Every order's whole state after the lines, fed in batches of 3 in received order."""
    raws = sorted(
        (p.envelope(s, body, received_at=at) for s, body, at in lines),
        key=lambda raw: orjson.loads(raw)["received_at"],
    )
    core = Core(SETTINGS)
    for n, i in enumerate(range(0, len(raws), 3)):
        core.feed(n, [(seq, raw, {"line": seq}) for seq, raw in enumerate(raws[i : i + 3], i)])
    return {oid: o.__getstate__() for s in core.shards for oid, o in s.orders.items()}


BASELINE: dict[str, Any] = {}


def _baseline(tmp: Path) -> dict[str, Any]:
    if not BASELINE:
        BASELINE.update(_final_state(tmp, NOTIFICATIONS))
    return BASELINE


def test_the_lives_end_where_their_last_evidence_says(tmp_path: Path) -> None:
    state = _baseline(tmp_path)
    assert state["dead"] == []
    assert set(ORDER_STATES) == set(state["final"])
    assert state["final"] == {
        SF_ORDER: "OUT_FOR_DELIVERY",
        DHL_ORDER: "OUT_FOR_DELIVERY",
        TICK_ORDER: "PENDING_PAYMENT",
    }


ORDER_STATES = _order_states(NOTIFICATIONS)

redelivery = st.tuples(
    st.integers(min_value=0, max_value=len(NOTIFICATIONS) - 2),  # which (not the last)
    st.integers(min_value=1, max_value=3600),  # seconds after the first delivery
    st.booleans(),  # its split events in reverse order
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(redelivery, min_size=1, max_size=6))
def test_redelivered_notifications_leave_the_same_final_state(
    tmp_path_factory: Any, again: list[tuple[int, int, bool]]
) -> None:
    tmp = tmp_path_factory.mktemp("redelivery")
    lines = list(NOTIFICATIONS)
    for i, seconds, reverse in again:
        source, body, at = NOTIFICATIONS[i]
        body = json.loads(json.dumps(body))
        if reverse and source in SPLIT:
            *parents, leaf = SPLIT[source]
            target = body
            for key in parents:
                target = target[key]
            target[leaf].reverse()
        lines.append((source, body, _iso(_at(at) + timedelta(seconds=seconds))))
    state = _final_state(tmp, lines)
    assert state == _baseline(tmp)
    assert _order_states(lines) == ORDER_STATES
