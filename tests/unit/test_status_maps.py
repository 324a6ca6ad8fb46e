"""Real status codes through the normalizer and the evidence rules, end to end in one shard.

Payloads follow the providers' documented shapes as far as today's flat contract carries
them (providers.md); values are our own.
"""

from __future__ import annotations

import orjson
import pytest

from schemas.config import load_settings
from schemas.event import Event
from schemas.normalize import Normalizer
from state.records import Correction
from state.shard import OrderShard

SETTINGS = load_settings()
NORMALIZER = Normalizer(SETTINGS)
T0 = 1_770_631_240  # 2026-02-09T10:00:40Z, epoch seconds


def normalize(source: str, stream: str, payload: dict, at: int) -> Event:
    received = f"2026-02-09T{10 + at // 3600:02d}:{at // 60 % 60:02d}:{at % 60:02d}.000Z"
    raw = orjson.dumps(
        {"stream": stream, "source": source, "received_at": received, "payload": payload}
    )
    ev = NORMALIZER.normalize(raw, origin={})
    assert isinstance(ev, Event), ev
    return ev


def stripe(event_id: str, kind: str, at: int, order_id: str = "WEB2026020900007") -> Event:
    obj = {"id": "ch_3QxB2L2eZvKYlo2C0abcdEfg", "amount": 8900, "currency": "eur"}
    if kind.startswith("payment_intent."):
        obj["id"] = "pi_3QxB2L2eZvKYlo2C1abcdEfg"
    obj["metadata"] = {"order_id": order_id}
    body = {"id": event_id, "type": kind, "created": T0 + at, "data": {"object": obj}}
    return normalize("stripe", "payments", body, at)


def corrections(shard: OrderShard, *events: Event) -> list[Correction]:
    out = shard.process(list(events), max(e.received_ms for e in events))
    return [r for k, r in out if k == "corrected"]


@pytest.mark.parametrize(
    "first", ["payment_intent.succeeded", "charge.succeeded"], ids=["intent_first", "charge_first"]
)
def test_stripe_charge_and_intent_succeeded_for_one_order_give_one_paid(first: str) -> None:
    # Stripe sends charge.succeeded beside payment_intent.succeeded: two notifications
    # (two event ids) about one fact. The evidence is one payment: one PAID, one version.
    second = {"charge.succeeded": "payment_intent.succeeded"}.get(first, "charge.succeeded")
    shard = OrderShard(SETTINGS)
    a, b = stripe("evt_1", first, 0), stripe("evt_2", second, 1)
    assert a.event_id != b.event_id and a.claims == b.claims == ("PAID",)
    got = corrections(shard, a, b)
    assert [(c.status, c.version, c.evidence) for c in got] == [
        ("PAID", 1, [{"source": "stripe", "event_id": "evt_1"}])
    ]
    # the refund that follows is one more correction, not a third PAID
    got = corrections(shard, stripe("evt_3", "charge.refunded", 60))
    assert [(c.status, c.previous_status) for c in got] == [("REFUNDED", "PAID")]


def test_stripe_charge_events_map_and_a_dispute_claims_nothing() -> None:
    assert (stripe("evt_4", "charge.succeeded", 0).outcome) == "success"
    failed = stripe("evt_5", "charge.failed", 0)
    assert (failed.claims, failed.outcome) == (("PENDING_PAYMENT",), "failure")
    dispute = stripe("evt_6", "charge.dispute.created", 0)  # disputed is not refunded
    assert (dispute.claims, dispute.outcome, dispute.raw_status) == (
        (),
        None,
        "charge.dispute.created",
    )


@pytest.mark.parametrize(
    ("refunded", "claims"),
    [(True, ("REFUNDED",)), (False, ()), (None, ("REFUNDED",))],
    ids=["full", "partial", "unsaid"],
)
def test_stripe_charge_refunded_is_refunded_only_when_the_charge_says_fully(
    refunded: bool | None, claims: tuple[str, ...]
) -> None:
    # Stripe sends charge.refunded for partial refunds too; `data.object.refunded` is true
    # only once the whole charge is refunded (like Shopify's partially_refunded: nothing).
    obj = {"id": "ch_1", "amount": 8900, "amount_refunded": 2000, "currency": "eur"}
    obj["metadata"] = {"order_id": "WEB2026020900007"}
    if refunded is not None:
        obj["refunded"] = refunded
    body = {"id": "evt_7", "type": "charge.refunded", "created": T0, "data": {"object": obj}}
    assert normalize("stripe", "payments", body, 0).claims == claims


def pdd(order_status: int, refund_status: int, at: int) -> Event:
    body = {
        "order_sn": "PDD2026020900456",
        "order_status": order_status,
        "refund_status": refund_status,
        "created_time": "2026-02-09 17:00:00",
        "updated_at": f"2026-02-09 18:{at // 60:02d}:{at % 60:02d}",
        "tracking_number": "751234567890123" if order_status > 1 else "",
    }
    return normalize("pinduoduo", "orders", body, at)


def test_pinduoduo_refund_3_is_refunding_and_4_is_refunded() -> None:
    # sources.md/providers.md: refund_status 3 refunding, 4 refund succeeded. Before the
    # fix 3 claimed REFUNDED and 4 the pseudo-claim REFUND_CLOSED, which ends a refund
    # request: a succeeded refund read as a withdrawn one.
    shard = OrderShard(SETTINGS)
    got = corrections(shard, pdd(1, 1, 0), pdd(2, 1, 60), pdd(2, 2, 120), pdd(2, 3, 180))
    assert [c.status for c in got] == ["PAID", "LABEL_CREATED", "REFUND_REQUESTED"]
    got = corrections(shard, pdd(2, 4, 240))
    assert [(c.status, c.standard_status) for c in got] == [("REFUNDED", "已退款")]


def shopify(financial: str, at: int) -> Event:
    body = {
        "id": 5123456789012,
        "name": "SH2026020900042",
        "financial_status": financial,
        "fulfillment_status": None,
        "cancelled_at": None,
        "created_at": "2026-02-09T05:00:00-05:00",
        "updated_at": f"2026-02-09T05:{at // 60:02d}:{at % 60:02d}-05:00",
        "fulfillments": [],
    }
    return normalize("shopify", "orders", body, at)


def test_shopify_partially_paid_is_still_awaiting_payment_and_expired_closes_unpaid() -> None:
    shard = OrderShard(SETTINGS)
    got = corrections(shard, shopify("pending", 0), shopify("partially_paid", 60))
    assert [c.status for c in got] == ["PENDING_PAYMENT"]  # partial money does not ship
    assert [c.status for c in corrections(shard, shopify("paid", 120))] == ["PAID"]
    assert shopify("expired", 0).claims == ("CLOSED_UNPAID",)


def test_shopee_invoice_pending_is_paid() -> None:
    body = {
        "order_sn": "SP2026020900001",
        "order_status": "INVOICE_PENDING",  # buyer paid; the seller owes an invoice (BR)
        "create_time": T0,
        "update_time": T0 + 60,
        "tracking_number": "",
    }
    assert normalize("shopee", "orders", body, 60).claims == ("PAID",)


@pytest.mark.parametrize(
    ("scan", "claim"),
    [
        ("快件揽收", "PICKED_UP"),
        ("发件扫描", "IN_TRANSIT"),
        ("到件扫描", "IN_TRANSIT"),
        ("出仓扫描", "OUT_FOR_DELIVERY"),  # J&T's delivery scan: the courier takes it out
        ("派件扫描", "OUT_FOR_DELIVERY"),
        ("快件签收", "DELIVERED"),
        ("问题件扫描", "DELIVERY_EXCEPTION"),
        ("退件扫描", "RETURNING"),
        ("入仓扫描", "IN_TRANSIT"),  # discontinued; older producers may still send it
        ("退回件扫描", "RETURNING"),  # our old name for 退件扫描, kept for such producers
    ],
)
def test_jt_scan_names(scan: str, claim: str) -> None:
    body = {
        "billCode": "JT0001234567890",
        "txlogisticId": "SP2026013100001",
        "scanType": scan,
        "scanTime": "2026-02-09 18:00:00",
    }
    assert normalize("jt", "tracking", body, 0).claims == (claim,)


def test_alipay_trade_closed_after_payment_is_refunded_before_it_closed_unpaid() -> None:
    def alipay(order_id: str, status: str, at: int) -> Event:
        body = {
            "out_trade_no": order_id,
            "trade_no": "2026020922001412345678901234",
            "trade_status": status,
            "notify_time": f"2026-02-09 18:{at // 60:02d}:{at % 60:02d}",
            "total_amount": "59.90",
        }
        return normalize("alipay", "payments", body, at)

    shard = OrderShard(SETTINGS)
    paid, unpaid = "DY2026020900789", "DY2026020900790"
    got = corrections(
        shard,
        alipay(paid, "TRADE_SUCCESS", 0),
        alipay(unpaid, "WAIT_BUYER_PAY", 0),
        alipay(paid, "TRADE_CLOSED", 60),
        alipay(unpaid, "TRADE_CLOSED", 60),
    )
    last = {c.order_id: c.status for c in got}
    assert last == {paid: "REFUNDED", unpaid: "CLOSED_UNPAID"}
