"""Whole lives in the providers' real shapes, through `orderguard replay` (issue 12).

Every payload comes from tests/fixtures/providers.py (the documented shapes). These
lives name their orders by the OMS id (gateways' references, carriers' order refs, the
OMS's tracking numbers); lives found through channel ids need the reference index.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import orjson

from tests.fixtures import providers as p
from tests.helpers import run_cli

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


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lives_in_real_shapes_end_in_the_right_status_with_no_dead_letters(tmp_path: Path) -> None:
    src = tmp_path / "lives.jsonl"
    src.write_bytes(b"\n".join(_lives()) + b"\n")
    result = run_cli("replay", str(src), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert _read(tmp_path / "out" / "dead_letters.jsonl") == []
    lives: dict[str, list[str]] = defaultdict(list)
    for rec in _read(tmp_path / "out" / "corrected.jsonl"):
        lives[rec["order_id"]].append(rec["status"])
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
