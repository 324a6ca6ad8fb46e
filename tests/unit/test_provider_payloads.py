"""Each external provider's real payload (tests/fixtures/providers.py) to the right events.

The fixtures follow the providers' documented shapes (docs/providers-checked.md); every
expectation here is what the provider's documentation says the payload means: which
order (an OMS id, or a reference `<namespace>:<id>` for the reference index), which
status is claimed, which time (naive Asia/Shanghai is UTC+8, and so on) and which
tracking number. Nothing is copied from the normalizer's output.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.config import load_settings
from schemas.event import DeadLetter, Event
from schemas.normalize import Normalizer
from tests.fixtures import providers as p
from tests.fixtures.providers import envelope

SETTINGS = load_settings()
NORMALIZER = Normalizer(SETTINGS)
ORIGIN = {"topic": "test", "partition": 0, "offset": 0}


def utc(*args: int, ms: int = 0) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1000 + ms


def results(raw: bytes) -> tuple[Event | DeadLetter, ...]:
    out = NORMALIZER.normalize(raw, origin=ORIGIN)
    return out if isinstance(out, tuple) else (out,)


def events(raw: bytes) -> list[Event]:
    out = results(raw)
    bad = [r for r in out if not isinstance(r, Event)]
    assert not bad, bad
    return list(out)


def one(raw: bytes) -> Event:
    out = events(raw)
    assert len(out) == 1, out
    return out[0]


def dead(raw: bytes) -> DeadLetter:
    out = results(raw)
    assert len(out) == 1 and isinstance(out[0], DeadLetter), out
    return out[0]


# ------------------------------------------------------------------ channels
def test_taobao_trade_names_its_order_by_the_numeric_tid_in_taobao_namespace() -> None:
    e = one(envelope("taobao", p.taobao_trade("WAIT_SELLER_SEND_GOODS", "2026-12-02 10:00:06")))
    assert e.order_id is None
    assert e.ref == f"taobao:{p.TAOBAO_TID}"
    assert e.channel == "taobao"
    assert e.claims == ("PAID",)
    assert e.event_ms == utc(2026, 12, 2, 2, 0, 6)  # naive Asia/Shanghai: UTC+8
    assert (e.event_time_raw, e.zone) == ("2026-12-02 10:00:06", "Asia/Shanghai")


def test_taobao_shipped_trade_carries_its_tracking_number() -> None:
    trade = p.taobao_trade(
        "WAIT_BUYER_CONFIRM_GOODS", "2026-12-02 14:03:00", out_sid=p.SF_MAILNO, company_code="SF"
    )
    e = one(envelope("taobao", trade))
    assert e.ref == f"taobao:{p.TAOBAO_TID}"
    assert e.claims == ("LABEL_CREATED",)
    assert (e.tracking_no, e.carrier, e.tracking_valid) == (p.SF_MAILNO, "sf", True)


def test_taobao_closed_trade_means_refunded_if_paid_else_cancelled() -> None:
    e = one(envelope("taobao", p.taobao_trade("TRADE_CLOSED", "2026-12-04 09:13:00")))
    assert e.claims == ("REFUNDED/CANCELLED",)


def test_pinduoduo_order_sn_is_a_pinduoduo_reference_and_codes_are_numbers() -> None:
    e = one(envelope("pinduoduo", p.pinduoduo_order(1, 1, "2026-12-02 11:20:31")))
    assert e.ref == f"pinduoduo:{p.PDD_SN}"
    assert e.order_id is None
    assert e.claims == ("PAID",)  # 1: awaiting shipment, i.e. paid; refund 1: no after-sale
    assert e.event_ms == utc(2026, 12, 2, 3, 20, 31)


@pytest.mark.parametrize(
    ("refund_status", "claim"),
    [(2, "REFUND_REQUESTED"), (3, "REFUND_REQUESTED"), (4, "REFUNDED")],
    ids=["after-sale", "refunding", "refunded"],
)
def test_pinduoduo_refund_status_3_is_refunding_and_4_refunded(
    refund_status: int, claim: str
) -> None:
    order = p.pinduoduo_order(3, refund_status, "2026-12-05 18:00:00")
    e = one(envelope("pinduoduo", order))
    assert set(e.claims) == {"COMPLETED", claim}  # order_status 3 received, and the refund


def test_pinduoduo_shipped_order_carries_its_tracking_number() -> None:
    order = p.pinduoduo_order(2, 1, "2026-12-02 16:00:00", tracking_number=p.JT_BILL)
    e = one(envelope("pinduoduo", order))
    assert e.claims == ("LABEL_CREATED",)
    assert (e.tracking_no, e.tracking_valid) == (p.JT_BILL, True)


def test_douyin_19_digit_order_id_is_a_douyin_reference() -> None:
    e = one(envelope("douyin", p.douyin_order(105, 1796176860)))
    assert e.ref == f"douyin:{p.DOUYIN_ID}"
    assert e.claims == ("PAID",)
    assert e.event_ms == 1796176860 * 1000


def test_shopee_status_push_reads_data_and_knows_invoice_pending() -> None:
    e = one(envelope("shopee", p.shopee_status_push("INVOICE_PENDING", 1796179400)))
    assert e.ref == f"shopee:{p.SHOPEE_SN}"
    assert e.claims == ("PAID",)  # paid; the seller owes an invoice before shipping
    assert e.event_ms == 1796179400 * 1000  # data.update_time


def test_shopee_status_push_with_msg_id_is_identified_by_it() -> None:
    a = one(envelope("shopee", p.shopee_status_push("READY_TO_SHIP", 1796179400, msg_id="m1")))
    b = one(envelope("shopee", p.shopee_status_push("READY_TO_SHIP", 1796179400, msg_id="m2")))
    assert a.claims == b.claims == ("PAID",)
    assert a.event_id != b.event_id  # two pushes, two events


def test_shopee_tracking_push_is_code_4_and_gives_the_tracking_number() -> None:
    e = one(envelope("shopee", p.shopee_tracking_push(p.JT_BILL, 1796184400)))
    assert e.ref == f"shopee:{p.SHOPEE_SN}"
    assert (e.tracking_no, e.tracking_valid) == (p.JT_BILL, True)
    assert e.claims == ("LABEL_CREATED",)  # a tracking number is assigned: the label exists
    assert not e.drift_fields


@pytest.mark.parametrize(
    ("financial_status", "claim"),
    [
        ("pending", "PENDING_PAYMENT"),
        ("partially_paid", "PENDING_PAYMENT"),
        ("paid", "PAID"),
        ("expired", "CLOSED_UNPAID"),
        ("refunded", "REFUNDED"),
    ],
)
def test_shopify_order_financial_status(financial_status: str, claim: str) -> None:
    e = one(envelope("shopify", p.shopify_order(financial_status, "2026-12-01T09:05:00-05:00")))
    assert e.ref == f"shopify:{p.SHOPIFY_ID}"
    assert e.claims == (claim,)
    assert e.event_ms == utc(2026, 12, 1, 14, 5)  # -05:00 kept, then UTC


def test_shopify_cancelled_order_claims_cancelled() -> None:
    order = p.shopify_order(
        "voided", "2026-12-01T10:00:00-05:00", cancelled_at="2026-12-01T10:00:00-05:00"
    )
    e = one(envelope("shopify", order))
    assert set(e.claims) == {"CLOSED_UNPAID", "CANCELLED"}


def test_shopify_fulfilled_order_gives_one_event_per_fulfillment() -> None:
    fulfillments = [
        p.shopify_fulfillment(1, p.UPS_NO, "2026-12-02T08:00:00-05:00"),
        p.shopify_fulfillment(2, "1Z999AA10123456795", "2026-12-02T09:00:00-05:00"),
    ]
    order = p.shopify_order(
        "paid",
        "2026-12-02T09:00:01-05:00",
        fulfillment_status="fulfilled",
        fulfillments=fulfillments,
    )
    raw = envelope("shopify", order)
    out = events(raw)
    assert [e.tracking_no for e in out] == [p.UPS_NO, "1Z999AA10123456795"]
    assert all(e.ref == f"shopify:{p.SHOPIFY_ID}" for e in out)
    assert all(set(e.claims) == {"PAID", "LABEL_CREATED"} for e in out)
    assert all(e.carrier == "ups" and e.tracking_valid for e in out)
    assert len({e.event_id for e in out}) == 2  # one identity per fulfillment
    assert [e.event_id for e in events(raw)] == [e.event_id for e in out]  # redelivery: same


def test_shopify_fulfillment_resource_names_the_order_by_order_id() -> None:
    f = p.shopify_fulfillment(1, p.UPS_NO, "2026-12-02T08:00:00-05:00")
    e = one(envelope("shopify", f))
    assert e.ref == f"shopify:{p.SHOPIFY_ID}"
    assert (e.tracking_no, e.carrier) == (p.UPS_NO, "ups")
    assert e.claims == ("LABEL_CREATED",)
    assert e.event_ms == utc(2026, 12, 2, 13)


def test_oms_links_its_id_to_the_channel_order_id() -> None:
    order = p.oms_order(
        p.TAOBAO_OMS,
        "已支付",
        "2026-12-02T10:00:10+08:00",
        channel="taobao",
        platform_order_id=str(p.TAOBAO_TID),
    )
    e = one(envelope("oms", order))
    assert e.order_id == p.TAOBAO_OMS
    assert e.ref is None
    assert f"taobao:{p.TAOBAO_TID}" in e.links
    assert e.claims == ("PAID",)


# ------------------------------------------------------------------ payment gateways
def test_wechat_transaction_success_reads_the_decrypted_resource() -> None:
    n = p.wechat_transaction(p.DOUYIN_OMS, "2026-12-02T10:01:00+08:00", notification_id="EV-1")
    e = one(envelope("wechatpay", n))
    assert e.order_id == p.DOUYIN_OMS
    assert e.claims == ("PAID",)
    assert e.outcome == "success"
    assert e.event_ms == utc(2026, 12, 2, 2, 1)
    assert e.event_time_raw == "2026-12-02T10:01:00+08:00"
    assert e.event_id == "EV-1"  # the notification's own id


@pytest.mark.parametrize(
    ("status", "claims"),
    [
        ("SUCCESS", ("REFUNDED",)),
        ("ABNORMAL", ("REFUND_REQUESTED",)),
        ("CLOSED", ("REFUND_CLOSED",)),
    ],
)
def test_wechat_refund_notifications(status: str, claims: tuple[str, ...]) -> None:
    success = "2026-12-03T12:00:05+08:00" if status == "SUCCESS" else None
    n = p.wechat_refund(
        p.DOUYIN_OMS,
        status,
        notification_id=f"EV-R-{status}",
        create_time="2026-12-03T12:00:06+08:00",
        success_time=success,
    )
    e = one(envelope("wechatpay", n, received_at="2026-12-03T04:00:07Z"))
    assert e.order_id == p.DOUYIN_OMS
    assert e.claims == claims  # ABNORMAL: stuck, still to be refunded; CLOSED: withdrawn
    assert e.outcome is None  # a refund is no payment attempt
    # the refund's own time: success_time when it succeeded, else the notification's
    assert e.event_ms == (utc(2026, 12, 3, 4, 0, 5) if success else utc(2026, 12, 3, 4, 0, 6))


def test_wechat_flat_payload_of_the_old_contract_still_normalizes() -> None:
    flat = p.wechat_transaction(p.DOUYIN_OMS, "2026-12-02T10:01:00+08:00", notification_id="x")
    e = one(envelope("wechatpay", flat["resource"]))
    assert (e.order_id, e.claims) == (p.DOUYIN_OMS, ("PAID",))


def test_alipay_payment_notify() -> None:
    e = one(envelope("alipay", p.alipay_paid()))
    assert e.order_id == p.TAOBAO_OMS
    assert e.claims == ("PAID",)
    assert e.outcome == "success"
    assert e.event_ms == utc(2026, 12, 2, 2, 0, 5)  # gmt_payment, Shanghai


def test_alipay_partial_refund_is_no_new_payment_and_claims_nothing() -> None:
    e = one(envelope("alipay", p.alipay_partial_refund()))
    assert e.order_id == p.TAOBAO_OMS
    assert e.claims == ()  # still paid: part of the money went back
    assert e.outcome is None  # not a second successful payment
    assert e.event_ms == utc(2026, 12, 3, 7, 30, 1, ms=418)  # gmt_refund, with its fraction
    assert e.event_time_raw == "2026-12-03 15:30:01.418"


def test_alipay_trade_closed_after_payment_is_refunded() -> None:
    e = one(envelope("alipay", p.alipay_full_refund()))
    assert e.order_id == p.TAOBAO_OMS
    assert e.claims == ("REFUNDED",)
    assert e.event_ms == utc(2026, 12, 4, 1, 12, 2, ms=37)


def test_alipay_trade_closed_unpaid_depends_on_payment() -> None:
    e = one(envelope("alipay", p.alipay_closed_unpaid()))
    assert e.claims == ("REFUNDED/CLOSED_UNPAID",)  # no refund fields: the order decides


def test_stripe_payment_intent_succeeded_names_the_order_and_links_the_intent() -> None:
    evt = p.stripe_payment_intent("evt_pi_ok", "payment_intent.succeeded", 1796176900, "succeeded")
    e = one(envelope("stripe", evt))
    assert e.order_id == p.WEB_STRIPE_OMS
    assert e.claims == ("PAID",)
    assert e.outcome == "success"
    assert f"stripe_pi:{p.STRIPE_PI}" in e.links
    assert (e.event_id, e.event_ms) == ("evt_pi_ok", 1796176900 * 1000)


@pytest.mark.parametrize(
    ("type_", "status", "claim", "outcome"),
    [
        ("payment_intent.payment_failed", "requires_payment_method", "PENDING_PAYMENT", "failure"),
        ("payment_intent.canceled", "canceled", "CLOSED_UNPAID", None),
    ],
)
def test_stripe_payment_intent_failure_kinds(
    type_: str, status: str, claim: str, outcome: str | None
) -> None:
    e = one(envelope("stripe", p.stripe_payment_intent("evt_x", type_, 1796176900, status)))
    assert e.order_id == p.WEB_STRIPE_OMS
    assert (e.claims, e.outcome) == ((claim,), outcome)


def test_stripe_charge_succeeded_claims_the_same_paid_as_the_intent() -> None:
    e = one(envelope("stripe", p.stripe_charge("evt_ch_ok", "charge.succeeded", 1796176901)))
    assert e.order_id == p.WEB_STRIPE_OMS  # metadata copied from the PaymentIntent
    assert e.claims == ("PAID",)


def test_stripe_charge_without_metadata_is_found_through_its_payment_intent() -> None:
    evt = p.stripe_charge("evt_ch_nometa", "charge.succeeded", 1796176901, metadata={})
    e = one(envelope("stripe", evt))
    assert e.order_id is None
    assert e.ref == f"stripe_pi:{p.STRIPE_PI}"
    assert e.claims == ("PAID",)


def test_stripe_charge_failed() -> None:
    evt = p.stripe_charge("evt_ch_fail", "charge.failed", 1796176901, status="failed")
    e = one(envelope("stripe", evt))
    assert (e.order_id, e.claims, e.outcome) == (p.WEB_STRIPE_OMS, ("PENDING_PAYMENT",), "failure")


def test_stripe_charge_refunded_full_and_partial() -> None:
    full = p.stripe_charge(
        "evt_rf", "charge.refunded", 1796254400, refunded=True, amount_refunded=4200
    )
    part = p.stripe_charge("evt_rp", "charge.refunded", 1796254400, amount_refunded=1000)
    assert one(envelope("stripe", full)).claims == ("REFUNDED",)
    assert one(envelope("stripe", part)).claims == ()  # `refunded` is true only when full


def test_stripe_dispute_is_found_through_its_payment_intent_and_claims_nothing() -> None:
    e = one(envelope("stripe", p.stripe_dispute("evt_du", 1796354400)))
    assert e.order_id is None  # the dispute's metadata is its own, empty
    assert e.ref == f"stripe_pi:{p.STRIPE_PI}"
    assert e.claims == ()  # the money is contested, not refunded


def test_paypal_capture_completed_names_the_order_by_custom_id() -> None:
    evt = p.paypal_capture(
        "PAYMENT.CAPTURE.COMPLETED", "WH-1", "2026-12-02T15:00:00.250Z", "COMPLETED"
    )
    e = one(envelope("paypal", evt))
    assert e.order_id == p.WEB_PAYPAL_OMS
    assert e.claims == ("PAID",)
    assert e.outcome == "success"
    assert e.event_ms == utc(2026, 12, 2, 15, ms=250)
    assert e.event_id == "WH-1"
    assert f"paypal_capture:{p.PAYPAL_CAPTURE}" in e.links  # for a refund naming only it


@pytest.mark.parametrize(
    ("event_type", "status", "claim"),
    [
        ("PAYMENT.CAPTURE.PENDING", "PENDING", "PENDING_PAYMENT"),
        ("PAYMENT.CAPTURE.DENIED", "DECLINED", "PENDING_PAYMENT"),
    ],
)
def test_paypal_capture_pending_and_denied(event_type: str, status: str, claim: str) -> None:
    e = one(
        envelope("paypal", p.paypal_capture(event_type, "WH-2", "2026-12-02T15:00:00Z", status))
    )
    assert (e.order_id, e.claims) == (p.WEB_PAYPAL_OMS, (claim,))


def test_paypal_refund_with_custom_id() -> None:
    e = one(envelope("paypal", p.paypal_refund("WH-3", "2026-12-03T14:21:08.736Z")))
    assert e.order_id == p.WEB_PAYPAL_OMS
    assert e.claims == ("REFUNDED",)
    assert e.event_ms == utc(2026, 12, 3, 14, 21, 8, ms=736)


def test_paypal_refund_without_ids_is_found_through_the_capture_it_links_up_to() -> None:
    e = one(envelope("paypal", p.paypal_refund("WH-4", "2026-12-03T14:21:08Z", with_ids=False)))
    assert e.order_id is None
    assert e.ref == f"paypal_capture:{p.PAYPAL_CAPTURE}"
    assert e.claims == ("REFUNDED",)


def test_paypal_capture_reversed_is_refunded() -> None:
    evt = p.paypal_refund("WH-5", "2026-12-16T10:00:00Z", event_type="PAYMENT.CAPTURE.REVERSED")
    e = one(envelope("paypal", evt))
    assert (e.order_id, e.claims) == (p.WEB_PAYPAL_OMS, ("REFUNDED",))


# ------------------------------------------------------------------ carriers
SF_EXPECTED = [  # (claim, UTC time) of SF_ROUTES: opCode 50 picked up, 30 at hub, 31 left hub
    ("PICKED_UP", utc(2026, 12, 2, 6, 2, 11)),
    ("IN_TRANSIT", utc(2026, 12, 2, 13, 40, 5)),
    ("IN_TRANSIT", utc(2026, 12, 2, 15, 15, 47)),
]


@pytest.mark.parametrize("mode", ["json", "form", "xml"])
def test_sf_push_of_three_routes_is_three_events(mode: str) -> None:
    build = {"json": p.sf_push, "form": p.sf_form_push, "xml": p.sf_xml_push}[mode]
    raw = envelope("sf", build(*p.SF_ROUTES))
    out = events(raw)
    assert [(e.claims[0], e.event_ms) for e in out] == SF_EXPECTED
    assert all(e.tracking_no == p.SF_MAILNO and e.carrier == "sf" for e in out)
    assert all(e.tracking_valid for e in out)  # SF + 13 digits
    assert all(e.order_id == p.TAOBAO_OMS for e in out)  # orderid: the merchant's (OMS) id
    assert [e.event_time_raw for e in out] == [r["acceptTime"] for r in p.SF_ROUTES]
    ids = [e.event_id for e in out]
    assert len(set(ids)) == 3  # one identity per route
    assert [e.event_id for e in events(raw)] == ids  # a redelivery de-duplicates route by route


def test_sf_json_and_form_modes_identify_the_same_routes_alike() -> None:
    a = events(envelope("sf", p.sf_push(*p.SF_ROUTES)))
    b = events(envelope("sf", p.sf_form_push(*p.SF_ROUTES)))
    assert [e.event_id for e in a] == [e.event_id for e in b]


def test_sf_later_push_is_its_own_event() -> None:
    first = {e.event_id for e in events(envelope("sf", p.sf_push(*p.SF_ROUTES)))}
    later = one(envelope("sf", p.sf_push(p.SF_LATER_ROUTE)))
    assert later.claims == ("OUT_FOR_DELIVERY",)
    assert later.event_id not in first


def test_sf_unknown_opcode_is_dead_lettered() -> None:
    route = p.sf_route("1589187400009", "9999", "2026-12-02 14:02:11", "x", "x")
    out = results(envelope("sf", p.sf_push(route)))
    assert len(out) == 1 and isinstance(out[0], DeadLetter)
    assert out[0].reason == "unmapped_status"


def test_sf_flat_route_of_the_old_contract_still_normalizes() -> None:
    e = one(envelope("sf", p.SF_ROUTES[1]))
    assert (e.tracking_no, e.claims) == (p.SF_MAILNO, ("IN_TRANSIT",))


def test_jt_push_decodes_biz_content_and_splits_details() -> None:
    raw = envelope(
        "jt",
        p.jt_push(
            p.jt_detail("快件揽收", "2026-12-02 15:00:00", "快件已揽收"),
            p.jt_detail("发件扫描", "2026-12-02 18:30:00", "快件已发往杭州转运中心"),
            p.jt_detail("出仓扫描", "2026-12-03 08:10:00", "快件已出仓派送"),
            p.jt_detail("快件签收", "2026-12-03 11:45:00", "快件已签收"),
        ),
    )
    out = events(raw)
    assert [e.claims for e in out] == [
        ("PICKED_UP",),
        ("IN_TRANSIT",),
        ("OUT_FOR_DELIVERY",),
        ("DELIVERED",),
    ]
    assert all(e.tracking_no == p.JT_BILL and e.tracking_valid for e in out)
    assert all(e.order_id == p.PDD_OMS for e in out)  # txlogisticId: the merchant's (OMS) id
    assert out[0].event_ms == utc(2026, 12, 2, 7)
    assert len({e.event_id for e in out}) == 4


def test_jt_return_is_a_problem_scan_with_a_return_problem_type() -> None:
    raw = envelope(
        "jt",
        p.jt_push(
            p.jt_detail("问题件扫描", "2026-12-04 09:00:00", "退回件", problemType="退回件-网点"),
            p.jt_detail(
                "问题件扫描", "2026-12-04 10:00:00", "收件人联系不上", problemType="收件人联系不上"
            ),
        ),
    )
    assert [e.claims for e in events(raw)] == [("RETURNING",), ("DELIVERY_EXCEPTION",)]


@pytest.mark.parametrize(
    ("scan", "claim"),
    [
        ("入库扫描", "OUT_FOR_DELIVERY"),
        ("代理点收入扫描", "OUT_FOR_DELIVERY"),
        ("退件扫描", "RETURNING"),
        ("入仓扫描", "IN_TRANSIT"),
    ],
)
def test_jt_scan_names(scan: str, claim: str) -> None:
    e = one(envelope("jt", p.jt_push(p.jt_detail(scan, "2026-12-03 09:00:00", "x"))))
    assert e.claims == (claim,)


def test_dhl_push_splits_shipments_events_with_offset_and_naive_times() -> None:
    evs = [  # newest first, as DHL lists them
        p.dhl_event("2026-12-03T09:30:00", "delivered", "DELIVERED", "Delivered"),
        p.dhl_event("2026-12-02T18:44:22+01:00", "transit", "IN_TRANSIT", "Processed at Leipzig"),
    ]
    out = events(envelope("dhl", p.dhl_push(p.dhl_shipment(evs))))
    assert [e.claims for e in out] == [("DELIVERED",), ("IN_TRANSIT",)]
    assert all(e.tracking_no == p.DHL_ID and e.carrier == "dhl" for e in out)
    # the naive one is local to the configured zone (UTC here); the offset one keeps its +01:00
    assert out[1].event_ms == utc(2026, 12, 2, 17, 44, 22)
    assert out[1].event_time_raw == "2026-12-02T18:44:22+01:00"
    assert out[0].event_time_raw == "2026-12-03T09:30:00"
    assert out[0].event_ms == utc(2026, 12, 3, 8, 30)  # naive, in Leipzig: Europe/Berlin
    assert len({e.event_id for e in out}) == 2


def test_dhl_flat_payload_of_the_old_contract_still_normalizes() -> None:
    flat = {
        "trackingNumber": p.DHL_ID,
        "status": p.dhl_event("2026-12-02T18:44:22+01:00", "transit", "IN_TRANSIT", "x"),
    }
    e = one(envelope("dhl", flat))
    assert (e.tracking_no, e.claims) == (p.DHL_ID, ("IN_TRANSIT",))


def test_aftership_webhook_splits_checkpoints_with_every_time_form() -> None:
    cps = [
        p.aftership_checkpoint(
            "2026-12-02T08:12:00-05:00",
            "InTransit",
            "InTransit_001",
            "Origin scan",
            "Louisville, KY",
        ),
        p.aftership_checkpoint(
            "2026-12-03T06:30:00",
            "OutForDelivery",
            "OutForDelivery_001",
            "Out for delivery",
            "Brooklyn, NY",
        ),
        p.aftership_checkpoint(
            "2026-12-03", "Delivered", "Delivered_001", "Delivered", "Brooklyn, NY"
        ),
    ]
    raw = envelope(
        "aftership",
        p.aftership_webhook(
            "a1b2c3d4-0000-4000-8000-000000000001", "Delivered", "Delivered_001", cps, 1796354400
        ),
    )
    out = events(raw)
    assert [e.claims for e in out] == [("IN_TRANSIT",), ("OUT_FOR_DELIVERY",), ("DELIVERED",)]
    assert all(e.tracking_no == p.UPS_NO and e.carrier == "ups" for e in out)
    assert out[0].event_ms == utc(2026, 12, 2, 13, 12)
    assert out[1].event_ms == utc(2026, 12, 3, 6, 30)  # naive: the configured zone (UTC)
    assert out[2].event_ms == utc(2026, 12, 3)  # a date alone: the start of that day
    assert [e.event_time_raw for e in out] == [c["checkpoint_time"] for c in cps]
    assert len({e.event_id for e in out}) == 3


def test_zto_and_yto_keep_the_flat_contract() -> None:
    z = one(envelope("zto", p.zto_scan("签收", "2026-12-04 10:00:00")))
    y = one(envelope("yto", p.yto_scan("SIGNED", "2026-12-04 10:00:00")))
    assert z.claims == y.claims == ("DELIVERED",)
    assert z.event_ms == y.event_ms == utc(2026, 12, 4, 2)


# ------------------------------------------------------------------ every entry of every kind
T0 = 1796176800  # 2026-12-02T02:00:00Z


def _shopify_order(path: str, raw: str, fulfillments: list | None = None) -> dict:
    order = p.shopify_order("paid", "2026-12-02T09:00:00-05:00", fulfillments=fulfillments)
    order[path] = raw
    return order


def _fulfillment(path: str, raw: str) -> dict:
    f = p.shopify_fulfillment(1, p.UPS_NO, "2026-12-02T08:00:00-05:00")
    f[path] = raw
    return f


def _dhl(raw: str) -> dict:
    return p.dhl_push(p.dhl_shipment([p.dhl_event("2026-12-02T18:44:22+01:00", raw, "X", "x")]))


def _aftership(raw: str) -> dict:
    cp = p.aftership_checkpoint("2026-12-02T08:12:00-05:00", raw, f"{raw}_001", "x", "y")
    return p.aftership_webhook("e-1", raw, f"{raw}_001", [cp], T0)


def _aftership_tracking(raw: str) -> dict:
    webhook = p.aftership_webhook("e-1", raw, f"{raw}_001", [], T0)
    webhook["msg"]["updated_at"] = "2026-12-02T08:12:00+00:00"
    return webhook


def _sf(raw: str) -> dict:
    return p.sf_route("1", raw, "2026-12-02 14:02:11", "x", "x")


def _wechat_flat(raw: str) -> dict:
    n = p.wechat_transaction(p.DOUYIN_OMS, "2026-12-02T10:01:00+08:00", notification_id="EV")
    return {**n["resource"], "trade_state": raw}


def _wechat_refund(raw: str) -> dict:
    n = p.wechat_refund(
        p.DOUYIN_OMS, "CLOSED", notification_id="EV", create_time="2026-12-03T12:00:06+08:00"
    )
    n["resource"]["refund_status"] = raw
    return n


def _paypal_refund(raw: str) -> dict:
    return p.paypal_refund("WH-1", "2026-12-03T14:21:08Z", event_type=raw)


KIND_BUILDERS: dict[tuple[str, str], Any] = {
    # (source, kind): (status path, raw value) -> a payload of that kind saying it
    ("shopee", "order_status"): lambda _, raw: p.shopee_status_push(raw, T0),
    ("shopee", "tracking_no"): lambda _, raw: p.shopee_tracking_push(p.JT_BILL, T0),
    ("shopee", "order"): lambda _, raw: {
        "order_sn": p.SHOPEE_SN,
        "order_status": raw,
        "update_time": T0,
        "tracking_number": p.JT_BILL,
    },
    ("shopify", "fulfillment"): _fulfillment,
    ("shopify", "order_fulfilled"): lambda path, raw: _shopify_order(
        path, raw, [p.shopify_fulfillment(1, p.UPS_NO, "2026-12-02T08:00:00-05:00")]
    ),
    ("shopify", "order"): _shopify_order,
    ("shopify", "synced"): lambda path, raw: {
        **_shopify_order(path, raw),
        "name": "SH2026120600042",
        "order_number": None,
        "fulfillments": [{"tracking_number": p.UPS_NO, "tracking_company": "UPS"}],
    },
    ("wechatpay", "transaction"): lambda _, raw: p.wechat_transaction(
        p.DOUYIN_OMS, "2026-12-02T10:01:00+08:00", notification_id="EV", trade_state=raw
    ),
    ("wechatpay", "refund"): lambda _, raw: _wechat_refund(raw),
    ("wechatpay", "transaction_only"): lambda _, raw: _wechat_flat(raw),
    ("alipay", "refund"): lambda _, raw: {**p.alipay_full_refund(), "trade_status": raw},
    ("alipay", "payment"): lambda _, raw: {**p.alipay_paid(), "trade_status": raw},
    ("stripe", "payment_intent"): lambda _, raw: p.stripe_payment_intent("evt", raw, T0, "x"),
    ("stripe", "dispute"): lambda _, raw: {**p.stripe_dispute("evt", T0), "type": raw},
    ("stripe", "charge"): lambda _, raw: p.stripe_charge(
        "evt", raw, T0, refunded=raw == "charge.refunded"
    ),
    ("paypal", "capture"): lambda _, raw: p.paypal_capture(
        raw, "WH-1", "2026-12-02T15:00:00Z", "X"
    ),
    ("paypal", "refund"): lambda _, raw: _paypal_refund(raw),
    ("paypal", "event"): lambda _, raw: {
        k: v
        for k, v in p.paypal_capture(raw, "WH-1", "2026-12-02T15:00:00Z", "X").items()
        if k != "resource_type"
    },
    ("sf", "json"): lambda _, raw: p.sf_push(_sf(raw)),
    ("sf", "form"): lambda _, raw: p.sf_form_push(_sf(raw)),
    ("sf", "xml"): lambda _, raw: p.sf_xml_push(_sf(raw)),
    ("sf", "route"): lambda _, raw: _sf(raw),
    ("dhl", "push"): lambda _, raw: _dhl(raw),
    ("dhl", "shipment"): lambda _, raw: {
        "trackingNumber": p.DHL_ID,
        "status": p.dhl_event("2026-12-02T18:44:22+01:00", raw, "X", "x"),
    },
    ("aftership", "checkpoints"): lambda _, raw: _aftership(raw),
    ("aftership", "tracking"): lambda _, raw: _aftership_tracking(raw),
    ("aftership", "checkpoint"): lambda _, raw: {
        "tracking_number": p.UPS_NO,
        "slug": "ups",
        "tag": raw,
        "subtag": f"{raw}_001",
        "checkpoint_time": "2026-12-02T08:12:00-05:00",
    },
}


def _kind_cases() -> list[Any]:
    cases = []
    for name, spec in SETTINGS.sources.items():
        for kind in spec.kinds:
            for f in spec.resolve(kind).statuses:
                for raw, claim in f.map.items():
                    case_id = f"{name}.{kind}.{f.path}={raw}"
                    cases.append(pytest.param(name, kind, f.path, raw, claim, id=case_id))
    return cases


def test_every_kind_of_every_source_has_a_fixture() -> None:
    kinds = {(n, k) for n, spec in SETTINGS.sources.items() for k in spec.kinds}
    assert kinds == set(KIND_BUILDERS)


@pytest.mark.parametrize(("source", "kind", "path", "raw", "claim"), _kind_cases())
def test_every_status_value_of_every_kind(
    source: str, kind: str, path: str, raw: str, claim: str | None
) -> None:
    leaf = path.rsplit(".", 1)[-1]
    out = events(envelope(source, KIND_BUILDERS[source, kind](leaf, raw)))
    assert out
    for e in out:
        if claim is None:
            assert raw in e.raw_status  # known, and claims nothing of its own
        else:
            assert claim in e.claims


# ------------------------------------------------------------------ identity and splitting
def test_a_gateway_reference_with_an_attempt_suffix_is_the_oms_id() -> None:
    e = one(envelope("alipay", {**p.alipay_paid(), "out_trade_no": f"{p.TAOBAO_OMS}-2"}))
    assert (e.order_id, e.ref) == (p.TAOBAO_OMS, None)


def test_a_merchant_reference_that_is_no_order_id_is_dead_lettered() -> None:
    d = dead(envelope("alipay", {**p.alipay_paid(), "out_trade_no": "0719141034-6418"}))
    assert d.reason == "invalid_order_id"


def test_a_channel_id_of_the_wrong_form_is_dead_lettered() -> None:
    bad = p.pinduoduo_order(1, 1, "2026-12-02 11:20:31", order_sn="20261206-1")
    assert dead(envelope("pinduoduo", bad)).reason == "invalid_order_id"


def test_a_19_digit_tid_is_read_as_its_digits() -> None:
    trade = p.taobao_trade("WAIT_SELLER_SEND_GOODS", "2026-12-02 10:00:06", tid=4012345678901234567)
    assert one(envelope("taobao", trade)).ref == "taobao:4012345678901234567"


def test_oms_links_a_shopify_order_by_its_numeric_id() -> None:
    order = p.oms_order(
        "SH2026120600042",
        "已支付",
        "2026-12-01T09:06:00-05:00",
        channel="shopify",
        platform_order_id=str(p.SHOPIFY_ID),
    )
    assert one(envelope("oms", order)).links == (f"shopify:{p.SHOPIFY_ID}",)


def test_sf_reordered_redelivery_and_a_repeated_route_keep_their_ids() -> None:
    ids = {
        r["id"]: e.event_id
        for r, e in zip(p.SF_ROUTES, events(envelope("sf", p.sf_push(*p.SF_ROUTES))), strict=True)
    }
    reordered = events(envelope("sf", p.sf_push(*reversed(p.SF_ROUTES))))
    assert [e.event_id for e in reordered] == [ids[r["id"]] for r in reversed(p.SF_ROUTES)]
    later = events(envelope("sf", p.sf_push(p.SF_ROUTES[2], p.SF_LATER_ROUTE)))
    assert later[0].event_id == ids[p.SF_ROUTES[2]["id"]]  # the same route: one event
    assert later[1].event_id not in ids.values()


def test_sf_xml_push_of_one_route() -> None:
    e = one(envelope("sf", p.sf_xml_push(p.SF_LATER_ROUTE)))  # a lone child, not a list
    assert (e.tracking_no, e.claims) == (p.SF_MAILNO, ("OUT_FOR_DELIVERY",))
    assert e.event_ms == utc(2026, 12, 3, 0, 30)


def test_jt_biz_content_that_is_not_json_is_dead_lettered() -> None:
    assert dead(envelope("jt", {"bizContent": "{billCode: JT"})).reason == "undecodable"


def test_dhl_push_of_two_shipments() -> None:
    a = p.dhl_shipment([p.dhl_event("2026-12-02T18:44:22+01:00", "transit", "X", "x")])
    b = p.dhl_shipment(
        [
            p.dhl_event("2026-12-03T10:00:00+01:00", "delivered", "X", "x"),
            p.dhl_event("2026-12-02T08:00:00+01:00", "pre-transit", "X", "x"),
        ],
        shipment_id="9876543210",
    )
    out = events(envelope("dhl", p.dhl_push(a, b)))
    assert [(e.tracking_no, e.claims) for e in out] == [
        (p.DHL_ID, ("IN_TRANSIT",)),
        ("9876543210", ("DELIVERED",)),
        ("9876543210", ("LABEL_CREATED",)),
    ]


def test_aftership_later_webhook_repeats_its_checkpoints_under_the_same_ids() -> None:
    first = p.aftership_checkpoint(
        "2026-12-02T08:12:00-05:00", "InTransit", "InTransit_001", "a", "b"
    )
    second = p.aftership_checkpoint(
        "2026-12-03T06:30:00", "OutForDelivery", "OutForDelivery_001", "c", "d"
    )
    one_cp = events(
        envelope(
            "aftership", p.aftership_webhook("ev-1", "InTransit", "InTransit_001", [first], T0)
        )
    )
    two_cp = events(
        envelope(
            "aftership",
            p.aftership_webhook(
                "ev-2", "OutForDelivery", "OutForDelivery_001", [first, second], T0 + 60
            ),
        )
    )
    assert two_cp[0].event_id == one_cp[0].event_id  # AfterShip resends every checkpoint
    assert two_cp[1].event_id != two_cp[0].event_id


def test_aftership_webhook_without_checkpoints_reads_the_tracking_tag() -> None:
    webhook = p.aftership_webhook("ev-3", "Pending", "Pending_001", [], T0)
    webhook["msg"]["updated_at"] = "2026-12-02T02:00:00+00:00"
    e = one(envelope("aftership", webhook))
    assert (e.tracking_no, e.claims, e.event_id) == (p.UPS_NO, (), "ev-3")


def test_stripe_charge_and_intent_of_one_payment_claim_one_fact() -> None:
    pi = one(
        envelope(
            "stripe", p.stripe_payment_intent("evt_a", "payment_intent.succeeded", T0, "succeeded")
        )
    )
    ch = one(envelope("stripe", p.stripe_charge("evt_b", "charge.succeeded", T0, metadata={})))
    assert pi.event_id != ch.event_id
    assert pi.claims == ch.claims == ("PAID",)
    assert ch.ref in pi.links  # the charge's order is the intent's


def test_aftership_naive_checkpoint_time_is_local_to_its_country() -> None:
    cps = [
        p.aftership_checkpoint(
            "2026-12-02T18:00:00", "InTransit", "InTransit_001", "a", "Shenzhen", "CHN"
        ),
        p.aftership_checkpoint("2026-12-03", "Delivered", "Delivered_001", "b", "Berlin", "DEU"),
        p.aftership_checkpoint(
            "2026-12-03T06:30:00", "InTransit", "InTransit_001", "c", "x", "USA"
        ),
    ]
    out = events(
        envelope("aftership", p.aftership_webhook("ev-4", "Delivered", "Delivered_001", cps, T0))
    )
    assert [e.event_ms for e in out] == [
        utc(2026, 12, 2, 10),  # Shanghai, UTC+8
        utc(2026, 12, 2, 23),  # the day starts in Berlin, UTC+1
        utc(2026, 12, 3, 6, 30),  # several zones: the configured zone, UTC
    ]
    assert [e.zone for e in out] == ["Asia/Shanghai", "Europe/Berlin", "UTC"]
