"""The per-order evidence state machine, its deadlines and its alerts (no I/O)."""

from __future__ import annotations

import pickle

import pytest

from schemas.config import Settings
from state.records import Alert, Correction, CustomerSignal
from state.shard import OrderShard
from tests.helpers import HOUR, MIN, T0, ev, label, oms, pay, scan

OID = "TB2026030200001"


@pytest.fixture
def settings() -> Settings:
    return Settings(
        carriers={
            "sf": {"pattern": "^SF[0-9]{12}$"},
            "dhl": {"pattern": "^[0-9]{10}$", "thresholds": {"tracking_stalled": "24h"}},
        },
    )


def run(shard: OrderShard, *events, clock: int = 0):
    return shard.process(list(events), clock)


def corrections(out) -> list[Correction]:
    return [r for k, r in out if k == "corrected"]


def alerts(out) -> list[Alert]:
    return [r for k, r in out if k == "alert"]


def fired(out) -> list[tuple[str, str]]:
    return [(a.type, a.state) for a in alerts(out)]


def statuses(out) -> list[str]:
    return [c.status for c in corrections(out)]


def test_normal_life_walks_the_main_path_without_alerts(settings):
    shard = OrderShard(settings)
    t = T0
    out = run(
        shard,
        oms(OID, "PENDING_PAYMENT", t),
        pay(OID, t + MIN),
        oms(OID, "PAID", t + MIN + 5000),
        ev("wms", "wms", OID, "FULFILLING", at=t + HOUR),
        label(OID, "SF123456789012", t + 2 * HOUR),
        oms(OID, "LABEL_CREATED", t + 2 * HOUR + MIN),
        scan(OID, "PICKED_UP", t + 3 * HOUR),
        scan(OID, "IN_TRANSIT", t + 8 * HOUR),
        scan(OID, "OUT_FOR_DELIVERY", t + 18 * HOUR),
        scan(OID, "DELIVERED", t + 20 * HOUR),
        oms(OID, "DELIVERED", t + 20 * HOUR + 10 * MIN),
        ev("taobao", "channel", OID, "COMPLETED", at=t + 60 * HOUR),
        clock=t + 61 * HOUR,
    )
    assert statuses(out) == [
        "PENDING_PAYMENT",
        "PAID",
        "FULFILLING",
        "LABEL_CREATED",
        "PICKED_UP",
        "IN_TRANSIT",
        "OUT_FOR_DELIVERY",
        "DELIVERED",
        "COMPLETED",
    ]
    assert [c.version for c in corrections(out)] == list(range(1, 10))
    assert [c.standard_status for c in corrections(out)][-1] == "已完成"
    assert alerts(out) == []


def test_late_event_stays_in_timeline_and_does_not_regress(settings):
    shard = OrderShard(settings)
    out = run(
        shard,
        scan(OID, "IN_TRANSIT", T0, event_at=T0),
        scan(OID, "PICKED_UP", T0 + MIN, event_at=T0 - HOUR),  # arrives late
    )
    assert statuses(out) == ["IN_TRANSIT"]
    assert shard.orders[OID].status == "IN_TRANSIT"


def test_duplicate_delivery_changes_nothing(settings):
    shard = OrderShard(settings)
    first = pay(OID, T0, event_id="wx-1")
    again = pay(OID, T0 + 5000, event_id="wx-1")
    out = run(shard, first, again)
    assert statuses(out) == ["PAID"]
    assert shard.duplicates == 1
    assert shard.orders[OID].version == 1


def test_tracking_lock_makes_awaiting_shipment_report_a_regression(settings):
    shard = OrderShard(settings)
    run(shard, oms(OID, "PAID", T0), label(OID, "SF123456789012", T0 + HOUR))
    out = run(shard, oms(OID, "PAID", T0 + 2 * HOUR))  # OMS says "awaiting shipment"
    assert fired(out) == [("STATUS_REGRESSION", "firing")]
    assert shard.orders[OID].status == "LABEL_CREATED"
    out = run(shard, oms(OID, "LABEL_CREATED", T0 + 3 * HOUR))
    assert fired(out) == [("STATUS_REGRESSION", "resolved")]


def test_lagging_oms_is_not_a_regression(settings):
    """An OMS report made before the evidence existed is lag, not regression."""
    shard = OrderShard(settings)
    run(shard, oms(OID, "PAID", T0), pay(OID, T0))
    out = run(
        shard,
        ev("wms", "wms", OID, "FULFILLING", at=T0 + HOUR),
        oms(OID, "PAID", T0 + HOUR + MIN, event_at=T0 + 30 * MIN),
    )
    assert ("STATUS_REGRESSION", "firing") not in fired(out)


def test_report_made_before_the_label_read_after_the_scans_is_not_a_regression(settings):
    """Live, the orders topic may be read behind the tracking topic: compare event times."""
    shard = OrderShard(settings)
    run(shard, oms(OID, "PAID", T0), label(OID, "SF123456789012", T0 + HOUR))
    run(shard, scan(OID, "IN_TRANSIT", T0 + 3 * HOUR))
    late = oms(OID, "PAID", T0 + 4 * HOUR, event_at=T0 + 30 * MIN)  # made before the label
    assert ("STATUS_REGRESSION", "firing") not in fired(run(shard, late))
    after = oms(OID, "PAID", T0 + 4 * HOUR, event_at=T0 + 2 * HOUR)  # made after it
    assert fired(run(shard, after)) == [("STATUS_REGRESSION", "firing")]


def test_payment_not_reflected_fires_after_grace_and_resolves(settings):
    shard = OrderShard(settings)
    run(shard, oms(OID, "PENDING_PAYMENT", T0))
    out = run(shard, pay(OID, T0 + MIN))
    assert statuses(out) == ["PAID"]  # the correction is emitted at once
    assert alerts(out) == []
    out = run(shard, clock=T0 + 3 * MIN + 1)
    [a] = alerts(out)
    assert (a.type, a.state, a.at_ms) == ("PAYMENT_NOT_REFLECTED", "firing", T0 + 3 * MIN)
    assert a.subject == {"order_id": OID, "customer_id": "C1"}
    out = run(shard, oms(OID, "PAID", T0 + 10 * MIN))
    [r] = alerts(out)
    assert (r.state, r.alert_id) == ("resolved", a.alert_id)


def test_payment_reflected_within_grace_raises_nothing(settings):
    shard = OrderShard(settings)
    out = run(
        shard,
        oms(OID, "PENDING_PAYMENT", T0),
        pay(OID, T0 + MIN),
        oms(OID, "PAID", T0 + 2 * MIN),
        clock=T0 + HOUR,
    )
    assert alerts(out) == []


def test_orders_without_oms_skip_oms_checks(settings):
    shard = OrderShard(settings)
    out = run(
        shard,
        ev("taobao", "channel", OID, "PENDING_PAYMENT", at=T0),
        pay(OID, T0 + MIN),
        clock=T0 + HOUR,
    )
    assert alerts(out) == []


def test_paid_after_close(settings):
    shard = OrderShard(settings)
    run(shard, oms(OID, "CLOSED_UNPAID", T0))
    out = run(shard, pay(OID, T0 + MIN))
    assert fired(out) == [("PAID_AFTER_CLOSE", "firing")]
    assert shard.orders[OID].status == "CLOSED_UNPAID"
    out = run(shard, ev("wechatpay", "gateway", OID, "REFUNDED", at=T0 + HOUR))
    assert fired(out) == [("PAID_AFTER_CLOSE", "resolved")]


def test_cancelling_a_paid_order_is_not_paid_after_close(settings):
    shard = OrderShard(settings)
    out = run(shard, pay(OID, T0), oms(OID, "CANCELLED", T0 + HOUR))
    assert alerts(out) == []


def test_shipment_delayed_counts_from_paid_across_fulfilling(settings):
    shard = OrderShard(settings)
    run(shard, pay(OID, T0), ev("wms", "wms", OID, "FULFILLING", at=T0 + 3 * HOUR))
    out = run(shard, clock=T0 + 4 * HOUR + 1)
    [a] = alerts(out)
    assert (a.type, a.at_ms) == ("SHIPMENT_DELAYED", T0 + 4 * HOUR)
    out = run(shard, label(OID, "SF123456789012", T0 + 5 * HOUR))
    assert fired(out) == [("SHIPMENT_DELAYED", "resolved")]


def test_pickup_missing_fires_and_resolves_on_scan(settings):
    shard = OrderShard(settings)
    run(shard, pay(OID, T0), label(OID, "SF123456789012", T0 + HOUR))
    out = run(shard, clock=T0 + 5 * HOUR + 1)
    assert fired(out) == [("PICKUP_MISSING", "firing")]
    out = run(shard, scan(OID, "PICKED_UP", T0 + 6 * HOUR))
    assert fired(out) == [("PICKUP_MISSING", "resolved")]


def test_tracking_stalled_uses_per_carrier_override(settings):
    shard = OrderShard(settings)
    other = "WEB2026030200002"
    run(
        shard,
        scan(OID, "IN_TRANSIT", T0),
        scan(other, "IN_TRANSIT", T0, tracking="1234567890", carrier="dhl"),
    )
    out = run(shard, clock=T0 + 12 * HOUR + 1)
    assert [(a.type, a.subject["order_id"]) for a in alerts(out)] == [("TRACKING_STALLED", OID)]
    out = run(shard, clock=T0 + 24 * HOUR + 1)
    assert [(a.type, a.subject["order_id"]) for a in alerts(out)] == [("TRACKING_STALLED", other)]
    out = run(shard, scan(OID, "OUT_FOR_DELIVERY", T0 + 25 * HOUR))
    assert fired(out) == [("TRACKING_STALLED", "resolved")]


def test_no_stuck_alert_when_the_next_event_arrives_before_the_deadline(settings):
    shard = OrderShard(settings)
    out = run(
        shard,
        scan(OID, "IN_TRANSIT", T0),
        scan(OID, "IN_TRANSIT", T0 + 12 * HOUR - 1),  # just in time
        clock=T0 + 13 * HOUR,
    )
    assert alerts(out) == []


def test_delivery_not_reflected_opens_a_customer_hold(settings):
    shard = OrderShard(settings)
    run(shard, oms(OID, "LABEL_CREATED", T0), scan(OID, "DELIVERED", T0 + HOUR))
    out = run(shard, clock=T0 + 3 * HOUR + 1)
    assert fired(out) == [("DELIVERY_NOT_REFLECTED", "firing")]
    signals = [r for k, r in out if k == "signal"]
    assert signals == [
        CustomerSignal("hold", "C1", OID, T0 + 3 * HOUR, "DELIVERY_NOT_REFLECTED", None, "sf")
    ]
    out = run(shard, oms(OID, "DELIVERED", T0 + 4 * HOUR))
    assert fired(out) == [("DELIVERY_NOT_REFLECTED", "resolved")]


def test_reship_after_delivery_is_duplicate_shipment_risk(settings):
    shard = OrderShard(settings)
    run(shard, oms(OID, "DELIVERED", T0), scan(OID, "DELIVERED", T0))
    out = run(shard, ev("wms", "wms", OID, at=T0 + HOUR, signal="reship"))
    assert fired(out) == [("DUPLICATE_SHIPMENT_RISK", "firing")]
    assert [r.kind for k, r in out if k == "signal"] == ["hold"]
    out = run(shard, ev("taobao", "channel", OID, "COMPLETED", at=T0 + 2 * HOUR))
    assert fired(out) == [("DUPLICATE_SHIPMENT_RISK", "resolved")]


def test_second_tracking_number_before_delivery_is_sent_to_the_customer_desk(settings):
    shard = OrderShard(settings)
    run(shard, oms(OID, "PAID", T0), label(OID, "SF123456789012", T0 + HOUR))
    out = run(shard, label(OID, "SF999999999999", T0 + 2 * HOUR))
    assert alerts(out) == []
    assert [(r.kind, r.customer_id) for k, r in out if k == "signal"] == [("shipment", "C1")]
    assert shard.orders[OID].tracking == ("SF123456789012", "SF999999999999")


def test_exception_after_delivery_moves_to_side_state_and_alerts(settings):
    shard = OrderShard(settings)
    run(shard, scan(OID, "DELIVERED", T0))
    out = run(shard, scan(OID, "RETURNING", T0 + HOUR))
    assert statuses(out) == ["RETURNING"]
    assert fired(out) == [("POST_DELIVERY_ANOMALY", "firing")]
    out = run(shard, scan(OID, "RETURNED", T0 + 30 * HOUR))
    assert statuses(out) == ["RETURNED"]
    assert fired(out) == [("POST_DELIVERY_ANOMALY", "resolved")]


def test_delivery_exception_clears_when_the_parcel_moves(settings):
    shard = OrderShard(settings)
    run(shard, scan(OID, "IN_TRANSIT", T0))
    out = run(shard, scan(OID, "DELIVERY_EXCEPTION", T0 + HOUR))
    assert statuses(out) == ["DELIVERY_EXCEPTION"]
    assert fired(out) == [("DELIVERY_EXCEPTION", "firing")]
    out = run(shard, oms(OID, "LABEL_CREATED", T0 + 2 * HOUR))  # OMS cannot clear it
    assert shard.orders[OID].status == "DELIVERY_EXCEPTION"
    out = run(shard, scan(OID, "OUT_FOR_DELIVERY", T0 + 3 * HOUR))
    assert statuses(out) == ["OUT_FOR_DELIVERY"]
    assert fired(out) == [("DELIVERY_EXCEPTION", "resolved")]


def test_stale_exception_scan_does_not_undo_later_progress(settings):
    shard = OrderShard(settings)
    out = run(
        shard,
        scan(OID, "OUT_FOR_DELIVERY", T0, event_at=T0),
        scan(OID, "DELIVERY_EXCEPTION", T0 + MIN, event_at=T0 - HOUR),
    )
    assert statuses(out) == ["OUT_FOR_DELIVERY"]
    assert alerts(out) == []


def test_refund_stuck_fires_after_a_day_and_resolves_on_refund(settings):
    shard = OrderShard(settings)
    run(
        shard,
        pay(OID, T0),
        ev("oms", "oms", OID, "REFUND_REQUESTED", at=T0 + HOUR, refund_id=f"REF-{OID}-01"),
    )
    assert shard.orders[OID].status == "REFUND_REQUESTED"
    assert shard.orders[OID].reported is None  # a refund order is not the order's report
    out = run(shard, clock=T0 + 25 * HOUR + 1)
    assert fired(out) == [("REFUND_STUCK", "firing")]
    out = run(shard, ev("wechatpay", "gateway", OID, "REFUNDED", at=T0 + 26 * HOUR))
    assert statuses(out) == ["REFUNDED"]
    assert fired(out) == [("REFUND_STUCK", "resolved")]


def test_conditional_claim_depends_on_payment(settings):
    shard = OrderShard(settings)
    paid, unpaid = OID, "TB2026030200009"
    out = run(
        shard,
        ev("alipay", "gateway", paid, "PAID", at=T0, outcome="success"),
        ev("alipay", "gateway", paid, "REFUNDED/CLOSED_UNPAID", at=T0 + HOUR),
        ev("alipay", "gateway", unpaid, "PENDING_PAYMENT", at=T0),
        ev("alipay", "gateway", unpaid, "REFUNDED/CLOSED_UNPAID", at=T0 + HOUR),
    )
    assert shard.orders[paid].status == "REFUNDED"
    assert shard.orders[unpaid].status == "CLOSED_UNPAID"
    assert [c.standard_status for c in corrections(out) if c.order_id == unpaid][-1] == "已取消"


def test_mismatch_and_reported_status_on_corrections(settings):
    shard = OrderShard(settings)
    out = run(shard, oms(OID, "PENDING_PAYMENT", T0), pay(OID, T0 + MIN))
    last = corrections(out)[-1]
    assert (last.status, last.reported_status, last.mismatch) == ("PAID", "PENDING_PAYMENT", True)
    assert last.evidence[0]["source"] == "wechatpay"


def test_terminal_orders_leave_state_after_retention(settings):
    shard = OrderShard(settings)
    run(shard, ev("taobao", "channel", OID, "COMPLETED", at=T0))
    run(shard, clock=T0 + settings.retention.terminal_order - 1)
    assert OID in shard.orders
    run(shard, clock=T0 + settings.retention.terminal_order + 1)
    assert OID not in shard.orders


def test_open_alerts_resolve_when_an_idle_order_leaves_state(settings):
    shard = OrderShard(settings)
    run(shard, scan(OID, "IN_TRANSIT", T0))
    out = run(shard, clock=T0 + settings.retention.idle_order + 1)
    assert fired(out) == [("TRACKING_STALLED", "firing"), ("TRACKING_STALLED", "resolved")]
    assert OID not in shard.orders


def _scenario():
    """Several orders with deadlines interleaved with arrivals."""
    events = []
    for i in range(6):
        oid = f"TB20260302{i:05d}"
        base = T0 + i * 37 * MIN
        events += [
            oms(oid, "PENDING_PAYMENT", base),
            pay(oid, base + MIN),
            label(oid, f"SF{i:012d}", base + 5 * HOUR),
            scan(oid, "PICKED_UP", base + 7 * HOUR, tracking=f"SF{i:012d}"),
        ]
    events.sort(key=lambda e: e.received_ms)
    return events


@pytest.mark.parametrize("cut", [1, 3, 5, 100])
def test_outputs_do_not_depend_on_how_input_is_batched(settings, cut):
    events = _scenario()
    whole = OrderShard(settings).process(events, events[-1].received_ms)
    shard = OrderShard(settings)
    pieces = []
    for i in range(0, len(events), cut):
        chunk = events[i : i + cut]
        pieces += shard.process(chunk, chunk[-1].received_ms)
    assert pieces == whole
    assert {a.type for a in alerts(whole)} >= {"PAYMENT_NOT_REFLECTED", "SHIPMENT_DELAYED"}


@pytest.mark.parametrize("cut", [1, 4])
def test_compacting_the_timer_wheel_changes_no_output(settings, cut, monkeypatch):
    """Stale wheel entries are dropped when they pile up: what fires must stay the same."""
    import state.shard

    events = _scenario()

    def batches(shard: OrderShard) -> list:
        out = []
        for i in range(0, len(events), cut):
            chunk = events[i : i + cut]
            out += shard.process(chunk, chunk[-1].received_ms)
        return out

    whole = batches(OrderShard(settings))
    compactions = []
    original = OrderShard._compact_wheel
    monkeypatch.setattr(state.shard, "WHEEL_SLACK", -(10**9))  # compact at every batch
    monkeypatch.setattr(
        OrderShard, "_compact_wheel", lambda s: (compactions.append(1), original(s))
    )
    assert batches(OrderShard(settings)) == whole
    assert len(compactions) > 3


def test_shard_state_survives_pickling(settings):
    events = _scenario()
    shard = OrderShard(settings)
    shard.process(events[:10], events[9].received_ms)
    copy = OrderShard(settings)
    copy.restore(pickle.loads(pickle.dumps(shard.__getstate__())), settings)
    rest = events[10:]
    assert copy.process(rest, rest[-1].received_ms) == shard.process(rest, rest[-1].received_ms)


def test_packed_orders_come_back_field_for_field(settings):
    """Snapshots pack orders into columns; every field of every order must survive."""
    from state.evidence import pack_orders, unpack_orders

    shard = OrderShard(settings)
    events = _scenario()
    shard.process(events, events[-1].received_ms)
    assert len(shard.orders) > 1
    back = unpack_orders(pickle.loads(pickle.dumps(pack_orders(shard.orders))))
    assert list(back) == list(shard.orders)
    for oid, o in shard.orders.items():
        assert back[oid].__getstate__() == o.__getstate__(), oid
        assert back[oid].t is not o.t  # its own times, not a view of the snapshot


def test_deadlines_wait_for_the_slowest_partition(settings):
    """An event from a partition read ahead does not make other orders' deadlines fire."""
    shard = OrderShard(settings)
    run(shard, pay(OID, T0), clock=T0)
    other = "TB2026030200077"
    ahead = scan(other, "IN_TRANSIT", T0 + 6 * HOUR, tracking="SF000000000077")
    out = shard.process([ahead], T0 + 3 * HOUR)  # the frontier is still at +3h
    assert alerts(out) == []
    out = shard.process([], T0 + 4 * HOUR + 1)
    [a] = alerts(out)
    assert (a.type, a.subject["order_id"], a.at_ms) == ("SHIPMENT_DELAYED", OID, T0 + 4 * HOUR)


def test_event_triggered_alerts_fire_on_arrival_even_ahead_of_the_frontier(settings):
    shard = OrderShard(settings)
    out = shard.process([scan(OID, "DELIVERY_EXCEPTION", T0 + 6 * HOUR)], T0 + HOUR)
    [a] = alerts(out)
    assert (a.type, a.at_ms) == ("DELIVERY_EXCEPTION", T0 + 6 * HOUR)


def test_nothing_timed_fires_before_every_partition_has_reported(settings):
    shard = OrderShard(settings)
    out = shard.process([pay(OID, T0)], 0)  # frontier unknown
    out += shard.process([], 0)
    assert alerts(out) == []
    out = shard.process([], T0 + 5 * HOUR)
    assert fired(out) == [("SHIPMENT_DELAYED", "firing")]


def test_the_census_counts_orders_without_a_status_as_unknown_and_every_open_alert():
    shard = OrderShard(Settings())
    shard.process([oms(f"TB{i}", "PENDING_PAYMENT", T0) for i in range(5)], T0)
    shard.orders["TB0"].status = None
    shard.orders["TB1"].status = ""
    shard.orders["TB2"].alerts = {"PAYMENT_NOT_REFLECTED": (T0, 1), "SHIPMENT_DELAYED": (T0, 2)}
    shard.orders["TB3"].alerts = {"PAYMENT_NOT_REFLECTED": (T0, 3)}
    statuses, alerts = shard.count()
    assert dict(statuses) == {"UNKNOWN": 2, "PENDING_PAYMENT": 3}
    assert dict(alerts) == {"PAYMENT_NOT_REFLECTED": 2, "SHIPMENT_DELAYED": 1}


def test_deadlines_an_evaluation_sets_during_a_jump_fire_in_the_same_jump_in_time_order():
    """The clock jumps 40 minutes at once (a batch after a pause). Order A's payment alert
    at +10 sets its shipment deadline at +20, a wheel bucket the jump has already drained;
    B's alert is due at +35, C's at +44 (after the jump). A's second alert must fire in this
    jump, and before B's: deadlines fire at their own time, in time order."""
    thresholds = {"payment_not_reflected": "10m", "shipment_delayed": "20m"}
    shard = OrderShard(Settings(thresholds=thresholds))
    paid = [
        e
        for oid, at in (("TB-A", T0), ("TB-B", T0 + 25 * MIN), ("TB-C", T0 + 34 * MIN))
        for e in (oms(oid, "PENDING_PAYMENT", at - 1), pay(oid, at))
    ]
    assert alerts(run(shard, *paid, clock=T0)) == []
    fired = [
        (a.subject["order_id"], a.type, a.at_ms) for a in alerts(run(shard, clock=T0 + 40 * MIN))
    ]
    assert fired == [
        ("TB-A", "PAYMENT_NOT_REFLECTED", T0 + 10 * MIN),
        ("TB-A", "SHIPMENT_DELAYED", T0 + 20 * MIN),
        ("TB-B", "PAYMENT_NOT_REFLECTED", T0 + 35 * MIN),
    ]
