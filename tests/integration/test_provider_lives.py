"""Whole lives in the providers' real shapes, through `orderguard replay` (issue 12).

Every payload comes from tests/fixtures/providers.py (the documented shapes). The first
test's lives name their orders by the OMS id (gateways' references, carriers' order refs,
the OMS's tracking numbers); the others' events name them by a channel's id or a payment
reference, which the reference index (state/reference_index.py) resolves through the
OMS's links: they run once that index is part of the tree.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.fixtures import providers as p
from tests.integration.lives import Line, replay_lives

SF_ORDER = "TB2026120200124"


def _lives() -> list[bytes]:
    lines: list[bytes] = []

    def add(source: str, payload: dict, at: str) -> None:
        lines.append(p.envelope(source, payload, received_at=at))

    # Taobao order in the OMS, paid with Alipay, partly then fully refunded
    oms_tb = p.oms_order(
        p.TAOBAO_OMS,
        "待支付",
        "2026-12-02T09:58:20+08:00",
        channel="taobao",
        platform_order_id=str(p.TAOBAO_TID),
    )
    add("oms", oms_tb, "2026-12-02T01:58:21Z")
    add("alipay", p.alipay_paid(), "2026-12-02T02:00:07Z")
    add("alipay", p.alipay_partial_refund(), "2026-12-03T07:30:03Z")
    add("alipay", p.alipay_full_refund(), "2026-12-04T01:12:04Z")
    # own site + Stripe: payment_intent.succeeded and charge.succeeded, then charge.refunded
    add(
        "oms",
        p.oms_order(p.WEB_STRIPE_OMS, "待支付", "2026-12-02T10:00:00+08:00"),
        "2026-12-02T02:00:01Z",
    )
    pi = p.stripe_payment_intent("evt_pi", "payment_intent.succeeded", 1796176900, "succeeded")
    add("stripe", pi, "2026-12-02T02:01:41Z")
    add("stripe", p.stripe_charge("evt_ch", "charge.succeeded", 1796176901), "2026-12-02T02:01:42Z")
    refund = p.stripe_charge(
        "evt_rf", "charge.refunded", 1796254400, refunded=True, amount_refunded=4200
    )
    add("stripe", refund, "2026-12-02T23:33:21Z")
    # own site + PayPal: capture, then the refund resource
    add(
        "oms",
        p.oms_order(p.WEB_PAYPAL_OMS, "待支付", "2026-12-02T14:59:00Z"),
        "2026-12-02T14:59:01Z",
    )
    capture = p.paypal_capture(
        "PAYMENT.CAPTURE.COMPLETED", "WH-1", "2026-12-02T15:00:00.250Z", "COMPLETED"
    )
    add("paypal", capture, "2026-12-02T15:00:01Z")
    add("paypal", p.paypal_refund("WH-2", "2026-12-03T14:21:08.736Z"), "2026-12-03T14:21:09Z")
    # shipped with J&T: the OMS holds the number; two pushes of two scans each
    oms_pdd = p.oms_order(
        p.PDD_OMS,
        "已发货",
        "2026-12-02T14:00:00+08:00",
        channel="pinduoduo",
        tracking_no=p.JT_BILL,
        carrier="jt",
    )
    add("oms", oms_pdd, "2026-12-02T06:00:01Z")
    scans = [
        p.jt_detail("快件揽收", "2026-12-02 15:00:00", "x"),
        p.jt_detail("发件扫描", "2026-12-02 18:30:00", "x"),
        p.jt_detail("出仓扫描", "2026-12-03 08:10:00", "x"),
        p.jt_detail("快件签收", "2026-12-03 11:45:00", "x"),
    ]
    add("jt", p.jt_push(*scans[:2]), "2026-12-02T10:31:00Z")
    add("jt", p.jt_push(*scans[2:]), "2026-12-03T03:46:00Z")
    # shipped with SF: one push of three routes, a later push of one
    oms_sf = p.oms_order(
        SF_ORDER,
        "已发货",
        "2026-12-02T13:50:00+08:00",
        channel="taobao",
        tracking_no=p.SF_MAILNO,
        carrier="sf",
    )
    add("oms", oms_sf, "2026-12-02T05:50:01Z")
    routes = [{**r, "orderid": SF_ORDER} for r in p.SF_ROUTES]
    add("sf", p.sf_push(*routes), "2026-12-02T15:16:00Z")
    add("sf", p.sf_push({**p.SF_LATER_ROUTE, "orderid": SF_ORDER}), "2026-12-03T00:31:00Z")
    lines.sort(key=lambda raw: orjson.loads(raw)["received_at"])
    return lines


def test_lives_in_real_shapes_end_in_the_right_status_with_no_dead_letters(tmp_path: Path) -> None:
    run = replay_lives(tmp_path / "lives.jsonl", tmp_path / "out", _lives())
    assert run.dead == []
    lives = run.lives
    shipped = ["LABEL_CREATED", "PICKED_UP", "IN_TRANSIT", "OUT_FOR_DELIVERY"]
    assert lives == {
        # the partial refund claims nothing; TRADE_CLOSED after payment is the refund
        p.TAOBAO_OMS: ["PENDING_PAYMENT", "PAID", "REFUNDED"],
        # two Stripe notifications of one payment: one PAID
        p.WEB_STRIPE_OMS: ["PENDING_PAYMENT", "PAID", "REFUNDED"],
        p.WEB_PAYPAL_OMS: ["PENDING_PAYMENT", "PAID", "REFUNDED"],
        p.PDD_OMS: [*shipped, "DELIVERED"],
        SF_ORDER: shipped,
    }


def _replay(tmp_path: Path, lines: list[Line]) -> tuple[dict, list[dict]]:
    run = replay_lives(tmp_path / "lives.jsonl", tmp_path / "out", lines)
    return run.lives, run.dead


def test_lives_found_by_channel_ids(tmp_path: Path) -> None:
    pytest.importorskip("state.reference_index", reason="the reference index is not merged yet")
    tb = p.oms_order(
        p.TAOBAO_OMS,
        "待支付",
        "2026-12-02T09:58:20+08:00",
        channel="taobao",
        platform_order_id=str(p.TAOBAO_TID),
    )
    pdd = p.oms_order(
        p.PDD_OMS,
        "已支付",
        "2026-12-02T11:20:40+08:00",
        channel="pinduoduo",
        platform_order_id=p.PDD_SN,
    )
    dy = p.oms_order(
        p.DOUYIN_OMS,
        "待支付",
        "2026-12-02T10:00:30+08:00",
        channel="douyin",
        platform_order_id=p.DOUYIN_ID,
    )
    paid_wx = p.wechat_transaction(p.DOUYIN_OMS, "2026-12-02T10:01:00+08:00", notification_id="E1")
    refund_wx = p.wechat_refund(
        p.DOUYIN_OMS,
        "SUCCESS",
        notification_id="E2",
        create_time="2026-12-03T12:00:06+08:00",
        success_time="2026-12-03T12:00:05+08:00",
    )
    lives, dead = _replay(
        tmp_path,
        [
            # Taobao + OMS + Alipay: the channel's trades by tid, paid, fully refunded
            (
                "taobao",
                p.taobao_trade("WAIT_BUYER_PAY", "2026-12-02 09:58:12"),
                "2026-12-02T01:58:13Z",
            ),
            ("oms", tb, "2026-12-02T01:58:21Z"),
            ("alipay", p.alipay_paid(), "2026-12-02T02:00:07Z"),
            (
                "taobao",
                p.taobao_trade("WAIT_SELLER_SEND_GOODS", "2026-12-02 10:00:06"),
                "2026-12-02T02:00:08Z",
            ),
            ("alipay", p.alipay_full_refund(), "2026-12-04T01:12:04Z"),
            (
                "taobao",
                p.taobao_trade("TRADE_CLOSED", "2026-12-04 09:12:10"),
                "2026-12-04T01:12:11Z",
            ),
            # Pinduoduo through refund_status 3 (refunding) then 4 (refunded)
            ("pinduoduo", p.pinduoduo_order(1, 1, "2026-12-02 11:20:31"), "2026-12-02T03:20:32Z"),
            ("oms", pdd, "2026-12-02T03:20:41Z"),
            ("pinduoduo", p.pinduoduo_order(1, 3, "2026-12-03 09:00:00"), "2026-12-03T01:00:01Z"),
            ("pinduoduo", p.pinduoduo_order(1, 4, "2026-12-03 12:00:00"), "2026-12-03T04:00:01Z"),
            # Douyin + OMS + WeChat Pay v3: paid, then REFUND.SUCCESS
            ("douyin", p.douyin_order(1, 1796176830), "2026-12-02T02:00:31Z"),
            ("oms", dy, "2026-12-02T02:00:32Z"),
            ("wechatpay", paid_wx, "2026-12-02T02:01:01Z"),
            ("douyin", p.douyin_order(105, 1796176861), "2026-12-02T02:01:02Z"),
            ("wechatpay", refund_wx, "2026-12-03T04:00:07Z"),
        ],
    )
    assert dead == []
    assert lives == {
        p.TAOBAO_OMS: ["PENDING_PAYMENT", "PAID", "REFUNDED"],
        p.PDD_OMS: ["PAID", "REFUND_REQUESTED", "REFUNDED"],
        p.DOUYIN_OMS: ["PENDING_PAYMENT", "PAID", "REFUNDED"],
    }


def test_lives_of_shopify_shopee_dhl_and_a_bare_paypal_refund(tmp_path: Path) -> None:
    pytest.importorskip("state.reference_index", reason="the reference index is not merged yet")
    sh = p.oms_order(
        "SH2026120200042",
        "待支付",
        "2026-12-01T09:00:30-05:00",
        channel="shopify",
        platform_order_id=str(p.SHOPIFY_ID),
    )
    # an event found by its ref does not register its tracking number (README, Identity):
    # the OMS's "shipped" with the UPS number does, and AfterShip's scans find the order
    sh_shipped = {
        **sh,
        "status": "已发货",
        "updated_at": "2026-12-02T08:05:00-05:00",
        "tracking_no": p.UPS_NO,
        "carrier": "ups",
    }
    sp = p.oms_order(
        "SP2026120200007",
        "待支付",
        "2026-12-02T11:00:00+08:00",
        channel="shopee",
        platform_order_id=p.SHOPEE_SN,
    )
    web = p.oms_order(
        p.WEB_STRIPE_OMS,
        "已发货",
        "2026-12-02T10:00:00+01:00",
        tracking_no=p.DHL_ID,
        carrier="dhl",
    )
    ful = p.shopify_fulfillment(1, p.UPS_NO, "2026-12-02T08:00:00-05:00")
    fulfilled = p.shopify_order(
        "paid", "2026-12-02T08:00:01-05:00", fulfillment_status="fulfilled", fulfillments=[ful]
    )
    cps = [  # a naive local time and a date alone
        p.aftership_checkpoint("2026-12-02T20:00:00", "InTransit", "InTransit_001", "a", "x"),
        p.aftership_checkpoint("2026-12-03", "Delivered", "Delivered_001", "b", "y"),
    ]
    transit = p.dhl_event("2026-12-02T18:44:22+01:00", "transit", "X", "x")  # with an offset
    delivered = p.dhl_event("2026-12-03T09:30:00", "delivered", "X", "x")  # naive, in DE
    capture = p.paypal_capture(
        "PAYMENT.CAPTURE.COMPLETED", "WH-1", "2026-12-02T15:00:00.250Z", "COMPLETED"
    )
    lives, dead = _replay(
        tmp_path,
        [
            (
                "shopify",
                p.shopify_order("pending", "2026-12-01T09:00:00-05:00"),
                "2026-12-01T14:00:01Z",
            ),
            ("oms", sh, "2026-12-01T14:00:31Z"),
            (
                "shopify",
                p.shopify_order("partially_paid", "2026-12-01T09:05:00-05:00"),
                "2026-12-01T14:05:01Z",
            ),
            (
                "shopify",
                p.shopify_order("paid", "2026-12-01T09:10:00-05:00"),
                "2026-12-01T14:10:01Z",
            ),
            ("shopify", fulfilled, "2026-12-02T13:00:02Z"),
            ("oms", sh_shipped, "2026-12-02T13:05:00Z"),
            (
                "aftership",
                p.aftership_webhook("ev-1", "Delivered", "Delivered_001", cps, 1796300000),
                "2026-12-03T12:00:00Z",
            ),
            ("shopee", p.shopee_status_push("UNPAID", 1796176800), "2026-12-02T02:00:02Z"),
            ("oms", sp, "2026-12-02T03:00:01Z"),
            ("shopee", p.shopee_status_push("INVOICE_PENDING", 1796180400), "2026-12-02T03:00:02Z"),
            ("shopee", p.shopee_tracking_push(p.JT_BILL, 1796190000), "2026-12-02T05:40:01Z"),
            ("oms", web, "2026-12-02T09:00:01Z"),
            ("dhl", p.dhl_push(p.dhl_shipment([transit])), "2026-12-02T17:45:00Z"),
            ("dhl", p.dhl_push(p.dhl_shipment([delivered])), "2026-12-03T08:31:00Z"),
            (
                "oms",
                p.oms_order(p.WEB_PAYPAL_OMS, "待支付", "2026-12-02T14:59:00Z"),
                "2026-12-02T14:59:01Z",
            ),
            ("paypal", capture, "2026-12-02T15:00:01Z"),
            # the refund names only the capture it links up to
            (
                "paypal",
                p.paypal_refund("WH-2", "2026-12-03T14:21:08Z", with_ids=False),
                "2026-12-03T14:21:09Z",
            ),
        ],
    )
    assert dead == []
    assert lives == {
        # partially_paid claims PENDING_PAYMENT again: no correction
        "SH2026120200042": ["PENDING_PAYMENT", "PAID", "LABEL_CREATED", "IN_TRANSIT", "DELIVERED"],
        "SP2026120200007": ["PENDING_PAYMENT", "PAID", "LABEL_CREATED"],
        p.WEB_STRIPE_OMS: ["LABEL_CREATED", "IN_TRANSIT", "DELIVERED"],
        p.WEB_PAYPAL_OMS: ["PENDING_PAYMENT", "PAID", "REFUNDED"],
    }


def test_stripe_charges_without_metadata_are_found_through_their_payment_intent(
    tmp_path: Path,
) -> None:
    pytest.importorskip("state.reference_index", reason="the reference index is not merged yet")
    refunded = p.stripe_charge(
        "evt_rf", "charge.refunded", 1796254400, metadata={}, refunded=True, amount_refunded=4200
    )
    lives, dead = _replay(
        tmp_path,
        [
            (
                "oms",
                p.oms_order(p.WEB_STRIPE_OMS, "待支付", "2026-12-02T10:00:00+08:00"),
                "2026-12-02T02:00:01Z",
            ),
            (
                "stripe",
                p.stripe_charge("evt_ch", "charge.succeeded", 1796176901, metadata={}),
                "2026-12-02T02:01:40Z",
            ),
            (
                "stripe",
                p.stripe_payment_intent(
                    "evt_pi", "payment_intent.succeeded", 1796176900, "succeeded"
                ),
                "2026-12-02T02:01:41Z",
            ),
            ("stripe", refunded, "2026-12-02T23:33:21Z"),
            ("stripe", p.stripe_dispute("evt_du", 1796300000), "2026-12-03T12:13:21Z"),
        ],
    )
    assert dead == []
    # the charge that came first waited for the intent's link; the dispute claims nothing
    assert lives == {p.WEB_STRIPE_OMS: ["PENDING_PAYMENT", "PAID", "REFUNDED"]}
