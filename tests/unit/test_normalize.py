"""Normalizer: every source's payload to an Event, every kind of bad input to a DeadLetter.

Payloads are built here from the input contract (docs: sources.md), one valid
base per source, then varied; the status-map tests walk ops/sources.yaml itself.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import errors
from schemas.config import SourceSpec, load_settings
from schemas.event import DeadLetter, Event
from schemas.normalize import Normalizer

SETTINGS = load_settings()
NORMALIZER = Normalizer(SETTINGS)
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "day-in-the-life.jsonl"
RECEIVED_AT = "2026-01-27T05:31:22.000Z"
ORIGIN = {"topic": "orders", "partition": 3, "offset": 42}
_AUTO = object()


def utc_ms(*args: int, ms: int = 0) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1000 + ms


RECEIVED_MS = utc_ms(2026, 1, 27, 5, 31, 22)

BASE: dict[str, dict[str, Any]] = {
    "taobao": {
        "tid": "TB2026012700123",
        "status": "WAIT_BUYER_CONFIRM_GOODS",
        "created": "2026-01-27 10:00:00",
        "pay_time": "2026-01-27 10:05:09",
        "modified": "2026-01-27 13:31:20",
        "buyer_open_uid": "AAH3kQ7x1",
        "payment": "199.00",
        "out_sid": "SF123456789012",
        "company_code": "SF",
    },
    "pinduoduo": {
        "order_sn": "PDD2026012700456",
        "order_status": 2,
        "refund_status": 1,
        "created_time": "2026-01-27 13:13:20",
        "pay_time": "2026-01-27 13:14:00",
        "updated_at": "2026-01-27 16:14:00",
        "tracking_number": "751234567890123",
        "logistics_id": 115,
        "pay_amount": 29.9,
    },
    "douyin": {
        "order_id": "DY2026012700789",
        "order_status": 3,
        "create_time": 1769477460,
        "pay_time": 1769477510,
        "update_time": 1769488260,
        "logistics_no": "YT8841234567",
        "user_id": "dy_88123",
    },
    "shopee": {
        "order_sn": "SP2026013100001",
        "order_status": "SHIPPED",
        "create_time": 1769800000,
        "update_time": 1769810000,
        "tracking_number": "JT0001234567890",
        "buyer_user_id": 55501234,
    },
    "shopify": {
        "name": "SH2026011500042",
        "id": 5123456789012,
        "financial_status": "partially_refunded",  # claims nothing: the other fields speak
        "fulfillment_status": None,
        "created_at": "2026-01-15T09:00:00-05:00",
        "updated_at": "2026-01-15T12:00:00-05:00",
        "cancelled_at": None,
        "fulfillments": [{"tracking_number": "1Z999AA10123456784", "tracking_company": "UPS"}],
        "customer": {"id": 207119551},
    },
    "oms": {
        "order_id": "TB2026012700123",
        "status": "已发货",
        "updated_at": "2026-01-27T13:31:00+08:00",
        "customer_id": "C10001",
        "channel": "taobao",
        "tracking_no": "SF123456789012",
        "carrier": "sf",
        "amount": "199.00",
        "currency": "CNY",
    },
    "wms": {
        "order_id": "TB2026012700123",
        "event": "LABEL_PRINTED",
        "warehouse": "HZ-01",
        "tracking_no": "SF123456789012",
        "carrier": "sf",
        "at": "2026-01-27T05:30:09Z",
    },
    "wechatpay": {
        "out_trade_no": "TB2026012700123",
        "transaction_id": "4200002026012712345678901",
        "trade_state": "SUCCESS",
        "success_time": "2026-01-27T10:05:09+08:00",
        "amount": {"total": 19900, "currency": "CNY"},
    },
    "alipay": {
        "out_trade_no": "DY2026012700789",
        "trade_no": "2026012722001412345678901234",
        "trade_status": "TRADE_SUCCESS",
        "gmt_payment": "2026-01-27 09:31:50",
        "notify_time": "2026-01-27 09:31:51",
        "total_amount": "59.90",
    },
    "stripe": {
        "id": "evt_3QxB2L2eZvKYlo2C1Nq0aBcD",
        "type": "payment_intent.succeeded",
        "created": 1770631240,
        "data": {
            "object": {
                "id": "pi_3QxB2L2eZvKYlo2C1abcdEfg",
                "amount": 8900,
                "currency": "eur",
                "metadata": {"order_id": "WEB2026020900007"},
            }
        },
    },
    "paypal": {
        "id": "WH-58D329510W468432D-8HN650336L201105X",
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "create_time": "2026-01-15T14:02:00.250Z",
        "resource": {
            "id": "8F148933LY9388354",
            "custom_id": "SH2026011500042",
            "status": "COMPLETED",
            "amount": {"value": "49.99", "currency_code": "USD"},
        },
    },
    "sf": {
        "mailno": "SF123456789012",
        "orderid": "TB2026012700123",
        "opCode": "30",
        "acceptTime": "2026-01-27 22:41:00",
        "acceptAddress": "杭州转运中心",
        "remark": "快件到达 杭州转运中心",
    },
    "zto": {
        "billCode": "751234567890123",
        "orderId": "PDD2026012700456",
        "scanType": "发件",
        "scanDate": "2026-01-27 19:02:00",
        "scanSite": "义乌转运中心",
    },
    "yto": {
        "mailNo": "YT8841234567",
        "orderNo": "DY2026012700789",
        "infoContent": "DEPARTURE",
        "acceptTime": "2026-01-27 21:40:00",
    },
    "jt": {
        "billCode": "JT0001234567890",
        "txlogisticId": "SP2026013100001",
        "scanType": "入仓扫描",
        "scanTime": "2026-02-01 08:00:00",
    },
    "dhl": {
        "trackingNumber": "1234567890",
        "orderReference": "WEB2026020900007",
        "status": {
            "statusCode": "transit",
            "status": "IN_TRANSIT",
            "timestamp": "2026-02-11T18:44:22+01:00",
            "description": "In Transit",
        },
    },
    "aftership": {
        "tracking_number": "1Z999AA10123456784",
        "slug": "ups",
        "order_id": "SH2026011500042",
        "tag": "InTransit",
        "subtag": "InTransit_002",
        "checkpoint_time": "2026-01-15T14:00:00-05:00",
    },
    "carrier_api": {
        "carrier": "jt",
        "operation": "create_label",
        "latency_ms": 180,
        "ok": True,
        "error": None,
        "at": "2026-01-27T04:00:00Z",
    },
}
INT_STATUSES = {"pinduoduo", "douyin"}  # these platforms send their codes as JSON numbers


def payload(source: str, **changes: Any) -> dict[str, Any]:
    """The source's base payload with changes; a value of ... removes the key."""
    p = copy.deepcopy(BASE[source])
    for key, value in changes.items():
        if value is ...:
            p.pop(key, None)
        else:
            p[key] = value
    return p


def envelope(
    source: Any,
    body: Any,
    *,
    stream: Any = _AUTO,
    received_at: Any = RECEIVED_AT,
    event_id: Any = None,
) -> bytes:
    env: dict[str, Any] = {}
    if stream is _AUTO:
        env["stream"] = SETTINGS.sources[source].stream
    elif stream is not ...:
        env["stream"] = stream
    env["source"] = source
    if received_at is not ...:
        env["received_at"] = received_at
    if event_id is not None:
        env["event_id"] = event_id
    env["payload"] = body
    return orjson.dumps(env)


def event(raw: bytes, **kw: Any) -> Event:
    kw.setdefault("origin", ORIGIN)
    result = NORMALIZER.normalize(raw, **kw)
    assert isinstance(result, Event), result
    return result


def dead(raw: bytes, reason: str, **kw: Any) -> DeadLetter:
    kw.setdefault("origin", ORIGIN)
    result = NORMALIZER.normalize(raw, **kw)
    assert isinstance(result, DeadLetter), result
    assert result.reason == reason, result
    assert result.reason in errors.REASONS
    if reason == errors.TOO_LARGE:  # a prefix only (tests/unit/test_limits.py)
        assert raw.startswith(result.raw) and len(result.raw) < len(raw)
    else:
        assert result.raw is raw
    assert result.origin is kw["origin"]
    assert result.error
    return result


def of(source: str, **changes: Any) -> Event:
    return event(envelope(source, payload(source, **changes)))


def set_path(body: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        body = body[key]
    body[leaf] = value


# ---------------------------------------------------------------- every status map entry
def base_spec(name: str) -> SourceSpec:
    """The spec the base payload (sources.md's flat form) is read with: for a source with
    message kinds, the first kind whose `present` path is there or whose `when` matches
    its `kind_by` value (the registry's documented rule); the real shapes' kinds are
    walked in test_provider_payloads.py."""
    spec = SETTINGS.sources[name]
    body = BASE[name]
    tag = None if spec.kind_by is None else body.get(spec.kind_by)
    for kind, k in spec.kinds.items():
        if k.present is not None and body.get(k.present) is not None:
            return spec.resolve(kind)
        if tag is not None and any(fnmatch.fnmatchcase(str(tag), w) for w in k.when):
            return spec.resolve(kind)
    assert not spec.kinds, f"{name}: the base payload is of no kind"
    return spec


def flat(path: str) -> str:
    """Where a split path reads a flat payload: every [*] level is the payload itself."""
    return path.rsplit("[*].", 1)[-1]


def _map_cases() -> list[Any]:
    cases = []
    for name in SETTINGS.sources:
        for f in base_spec(name).statuses:
            for raw, claim in f.map.items():
                cases.append(pytest.param(name, f.path, raw, claim, id=f"{name}.{f.path}={raw}"))
    return cases


@pytest.mark.parametrize(("source", "path", "raw", "claim"), _map_cases())
def test_every_status_value_of_every_map(source: str, path: str, raw: str, claim: str) -> None:
    body = payload(source)
    set_path(body, flat(path), int(raw) if source in INT_STATUSES else raw)
    ev = event(envelope(source, body))
    before = ("LABEL_CREATED",) if (source, path) == ("pinduoduo", "refund_status") else ()
    assert ev.claims == (*before, *((claim,) if claim else ()))
    if len(base_spec(source).statuses) == 1:
        assert ev.raw_status == raw
    else:
        assert f"{path}={raw}" in ev.raw_status.split(",")
    assert ev.drift_fields == ()  # every base carries its tracking field


def test_the_map_cases_cover_every_source_with_statuses() -> None:
    covered = {c.values[0] for c in _map_cases()}
    assert covered == set(SETTINGS.sources) - {"carrier_api"}


@pytest.mark.parametrize(
    ("raw", "claim"),
    [(raw, claim) for raw, claim in SETTINGS.sources["oms"].statuses[0].map.items()],
)
def test_a_refund_order_claims_for_its_original(raw: str, claim: str) -> None:
    ev = of("oms", order_id="REF-TB2026012700124-01", status=raw)
    assert (ev.order_id, ev.refund_id) == ("TB2026012700124", "REF-TB2026012700124-01")
    expected = SETTINGS.refund_order.get(claim, SETTINGS.refund_order_default)
    assert ev.claims == (expected,)


def test_a_refund_orders_conditional_claim_is_translated_per_branch() -> None:
    ev = of("taobao", tid="REF-TB2026012700123-02", status="TRADE_CLOSED")
    assert ev.claims == ("REFUNDED/REFUND_CLOSED",)
    assert of(
        "alipay", out_trade_no="REF-DY2026012700789-01", trade_status="TRADE_SUCCESS"
    ).claims == ("REFUND_REQUESTED",)


def test_status_values_are_matched_after_stripping_and_as_numbers() -> None:
    assert of("taobao", status=" TRADE_FINISHED ").claims == ("COMPLETED",)
    assert of("sf", opCode=80).claims == ("DELIVERED",)
    assert of("douyin", order_status="105").claims == ("PAID",)


# ---------------------------------------------------------------- one source at a time
def test_taobao() -> None:
    ev = of("taobao")
    assert (ev.stream, ev.source, ev.kind) == ("orders", "taobao", "channel")
    assert (ev.order_id, ev.refund_id, ev.channel) == ("TB2026012700123", None, "taobao")
    assert (ev.tracking_no, ev.tracking_valid, ev.carrier) == ("SF123456789012", True, "sf")
    assert ev.customer_id == "AAH3kQ7x1"
    assert ev.claims == ("LABEL_CREATED",)
    assert ev.event_ms == utc_ms(2026, 1, 27, 5, 31, 20)  # `modified`, read in Shanghai
    assert (ev.event_time_raw, ev.zone) == ("2026-01-27 13:31:20", "Asia/Shanghai")
    assert ev.received_ms == RECEIVED_MS
    assert ev.keys == tuple(sorted(BASE["taobao"]))
    assert (ev.signal, ev.outcome, ev.telemetry) == (None, None, None)
    assert of("taobao", status="TRADE_CLOSED").claims == ("REFUNDED/CANCELLED",)


def test_taobao_event_time_falls_back_along_its_paths() -> None:
    assert of("taobao", modified=None).event_ms == utc_ms(2026, 1, 27, 2, 5, 9)  # pay_time
    assert of("taobao", modified=..., pay_time=...).event_ms == utc_ms(2026, 1, 27, 2, 0, 0)
    ev = of("taobao", modified=None, pay_time=None, created=...)
    assert (ev.event_ms, ev.event_time_raw, ev.zone) == (RECEIVED_MS, None, None)


def test_taobao_unpaid_order_without_tracking() -> None:
    ev = of("taobao", status="WAIT_BUYER_PAY", out_sid=None, company_code=None)
    assert (ev.tracking_no, ev.carrier, ev.tracking_valid) == (None, None, False)
    assert ev.drift_fields == ()


def test_pinduoduo() -> None:
    ev = of("pinduoduo")
    assert ev.claims == ("LABEL_CREATED",)
    assert ev.raw_status == "order_status=2,refund_status=1"
    assert (ev.order_id, ev.channel) == ("PDD2026012700456", "pinduoduo")
    assert (ev.tracking_no, ev.carrier, ev.tracking_valid) == ("751234567890123", "zto", True)
    assert ev.event_ms == utc_ms(2026, 1, 27, 8, 14, 0)
    # providers.md: 2 after-sale in progress, 3 refunding, 4 refund succeeded
    assert of("pinduoduo", refund_status=2).claims == ("LABEL_CREATED", "REFUND_REQUESTED")
    assert of("pinduoduo", refund_status=3).claims == ("LABEL_CREATED", "REFUND_REQUESTED")
    assert of("pinduoduo", refund_status=4).claims == ("LABEL_CREATED", "REFUNDED")


def test_pinduoduo_optional_refund_status_and_empty_tracking() -> None:
    ev = of("pinduoduo", order_status=1, refund_status=..., tracking_number="")
    assert ev.claims == ("PAID",)
    assert ev.raw_status == "order_status=1"
    assert ev.tracking_no is None
    # a shipped status with an empty (present) tracking field is not schema drift
    assert of("pinduoduo", tracking_number="").drift_fields == ()


def test_douyin() -> None:
    ev = of("douyin")
    assert ev.claims == ("LABEL_CREATED",)
    assert (ev.tracking_no, ev.carrier, ev.tracking_valid) == ("YT8841234567", "yto", True)
    assert ev.customer_id == "dy_88123"
    assert ev.event_ms == 1769488260_000
    assert (ev.event_time_raw, ev.zone) == ("1769488260", "UTC")


def test_douyin_renamed_tracking_field() -> None:
    ev = of("douyin", logistics_no=..., tracking_number="YT8841234567")
    assert (ev.tracking_no, ev.carrier, ev.drift_fields) == ("YT8841234567", "yto", ())
    # neither configured name present: drift, and the new key is in the evidence
    ev = of("douyin", logistics_no=..., waybill_no="YT8841234567")
    assert ev.drift_fields == ("tracking_no",)
    assert ev.tracking_no is None
    assert "waybill_no" in ev.keys
    # null is present: not drift
    assert of("douyin", logistics_no=None).drift_fields == ()
    # a status before shipping implies no tracking number
    assert of("douyin", order_status=105, logistics_no=...).drift_fields == ()


def test_shopee() -> None:
    ev = of("shopee")
    assert (ev.order_id, ev.channel, ev.claims) == ("SP2026013100001", "shopee", ("LABEL_CREATED",))
    assert (ev.tracking_no, ev.carrier) == ("JT0001234567890", "jt")
    assert ev.customer_id == "55501234"  # a number becomes a string
    assert ev.event_ms == 1769810000_000
    assert of("shopee", order_status="IN_CANCEL").claims == ()


def test_shopify() -> None:
    fulfillments = [
        {"tracking_number": "SF123456789012", "tracking_company": "SF Express"},
        {"tracking_number": "1Z999AA10123456784", "tracking_company": "UPS"},
    ]
    ev = of(
        "shopify",
        financial_status="paid",
        fulfillment_status="fulfilled",
        fulfillments=fulfillments,
    )
    assert ev.claims == ("PAID", "LABEL_CREATED")
    assert ev.raw_status == "financial_status=paid,fulfillment_status=fulfilled"
    assert (ev.order_id, ev.channel, ev.customer_id) == ("SH2026011500042", "shopify", "207119551")
    assert (ev.tracking_no, ev.carrier, ev.tracking_valid) == ("1Z999AA10123456784", "ups", True)
    assert ev.event_ms == utc_ms(2026, 1, 15, 17, 0, 0)  # 12:00-05:00, offset kept


def test_shopify_cancelled_at_is_a_flag() -> None:
    ev = of("shopify", financial_status="voided", cancelled_at="2026-01-15T10:00:00-05:00")
    assert ev.claims == ("CLOSED_UNPAID", "CANCELLED")
    assert ev.raw_status == "financial_status=voided,cancelled_at=2026-01-15T10:00:00-05:00"
    assert of("shopify", financial_status="pending").claims == ("PENDING_PAYMENT",)


def test_shopify_without_fulfillments() -> None:
    ev = of("shopify", financial_status="pending", fulfillments=[])
    assert (ev.tracking_no, ev.carrier, ev.drift_fields) == (None, None, ())
    # fulfilled yet no fulfillment at all: the tracking path does not exist
    assert of("shopify", fulfillment_status="fulfilled", fulfillments=[]).drift_fields == (
        "tracking_no",
    )


def test_oms() -> None:
    ev = of("oms")
    assert (ev.kind, ev.claims, ev.raw_status) == ("oms", ("LABEL_CREATED",), "已发货")
    assert (ev.order_id, ev.channel, ev.customer_id) == ("TB2026012700123", "taobao", "C10001")
    assert (ev.tracking_no, ev.carrier) == ("SF123456789012", "sf")
    assert ev.event_ms == utc_ms(2026, 1, 27, 5, 31, 0)


def test_oms_english_and_the_channel_comes_from_the_id() -> None:
    ev = of(
        "oms",
        order_id="WEB2026020900007",
        status="Shipped",
        channel="website",
        tracking_no="1234567890",
        carrier="DHL",
    )
    assert (ev.claims, ev.channel, ev.carrier, ev.tracking_valid) == (
        ("LABEL_CREATED",),
        "web",
        "dhl",
        True,
    )
    assert of("oms", channel="pinduoduo").channel == "taobao"  # the TB prefix wins


def test_oms_risk_control_holds() -> None:
    assert of("oms", status="风控拦截").claims == ("ON_HOLD",)
    assert of("oms", status="人工审核中").claims == ("ON_HOLD",)


def test_wms() -> None:
    ev = of("wms")
    assert (ev.kind, ev.claims, ev.signal) == ("wms", ("LABEL_CREATED",), None)
    assert (ev.tracking_no, ev.carrier, ev.tracking_valid) == ("SF123456789012", "sf", True)
    assert ev.event_ms == utc_ms(2026, 1, 27, 5, 30, 9)
    assert ev.channel == "taobao"


def test_wms_carrier_codes_that_name_no_carrier_fall_back_to_the_pattern() -> None:
    assert of("wms", carrier=7).carrier == "sf"
    assert of("wms", carrier="pigeon post").carrier == "sf"
    assert of("wms", carrier="pigeon post", tracking_no="X1").carrier is None


def test_wms_reship_is_a_signal_without_a_claim() -> None:
    ev = of("wms", event="RESHIP_REQUESTED")
    assert (ev.claims, ev.signal, ev.raw_status) == ((), "reship", "RESHIP_REQUESTED")


def test_wechatpay() -> None:
    ev = of("wechatpay")
    assert (ev.stream, ev.kind, ev.claims, ev.outcome) == (
        "payments",
        "gateway",
        ("PAID",),
        "success",
    )
    assert ev.event_ms == utc_ms(2026, 1, 27, 2, 5, 9)
    assert of("wechatpay", trade_state="PAYERROR").outcome == "failure"
    assert of("wechatpay", trade_state="NOTPAY", success_time=...).event_ms == RECEIVED_MS


def test_wechatpay_refund_is_timed_by_the_envelope() -> None:
    ev = of("wechatpay", trade_state="REFUND")  # success_time is the original payment's
    assert ev.claims == ("REFUND_REQUESTED",)
    assert (ev.event_ms, ev.event_time_raw) == (RECEIVED_MS, None)
    assert ev.outcome is None


def test_alipay() -> None:
    ev = of("alipay")
    assert (ev.claims, ev.outcome, ev.channel) == (("PAID",), "success", "douyin")
    assert ev.event_ms == utc_ms(2026, 1, 27, 1, 31, 50)  # gmt_payment: the payment's own time
    assert of("alipay", gmt_payment=None).event_ms == utc_ms(2026, 1, 27, 1, 31, 51)  # the notify's
    assert of("alipay", trade_status="TRADE_CLOSED").claims == ("REFUNDED/CLOSED_UNPAID",)


def test_stripe() -> None:
    ev = of("stripe")
    assert (ev.order_id, ev.claims, ev.outcome) == ("WEB2026020900007", ("PAID",), "success")
    assert ev.event_id == "evt_3QxB2L2eZvKYlo2C1Nq0aBcD"  # the provider's id, from the payload
    assert ev.event_ms == 1770631240_000
    assert of("stripe", type="payment_intent.payment_failed").outcome == "failure"
    assert of("stripe", type="charge.refunded").claims == ("REFUNDED",)


def test_paypal() -> None:
    ev = of("paypal")
    assert (ev.order_id, ev.claims, ev.outcome) == ("SH2026011500042", ("PAID",), "success")
    assert ev.event_id == "WH-58D329510W468432D-8HN650336L201105X"
    assert ev.event_ms == utc_ms(2026, 1, 15, 14, 2, 0, ms=250)
    assert of("paypal", event_type="PAYMENT.CAPTURE.DENIED").outcome == "failure"


def test_sf() -> None:
    ev = of("sf")
    assert (ev.stream, ev.kind, ev.claims) == ("tracking", "carrier", ("IN_TRANSIT",))
    assert (ev.tracking_no, ev.carrier, ev.tracking_valid) == ("SF123456789012", "sf", True)
    assert (ev.order_id, ev.channel) == ("TB2026012700123", "taobao")
    assert ev.event_ms == utc_ms(2026, 1, 27, 14, 41, 0)


def test_sf_invalid_tracking_number_is_kept_and_flagged() -> None:
    ev = of("sf", mailno="SF12345")
    assert (ev.tracking_no, ev.carrier, ev.tracking_valid) == ("SF12345", "sf", False)


def test_zto_scan_with_only_a_tracking_number() -> None:
    ev = of("zto", orderId=...)
    assert (ev.order_id, ev.channel) == (None, None)
    assert (ev.tracking_no, ev.carrier, ev.tracking_valid) == ("751234567890123", "zto", True)
    assert ev.claims == ("IN_TRANSIT",)
    assert of("zto", orderId="").order_id is None  # blank is absent


def test_yto() -> None:
    ev = of("yto", infoContent="GOT")
    assert (ev.claims, ev.carrier, ev.order_id) == (("PICKED_UP",), "yto", "DY2026012700789")
    assert ev.event_ms == utc_ms(2026, 1, 27, 13, 40, 0)


def test_jt() -> None:
    ev = of("jt", scanType="快件签收")
    assert (ev.claims, ev.carrier, ev.tracking_valid) == (("DELIVERED",), "jt", True)
    assert (ev.order_id, ev.channel) == ("SP2026013100001", "shopee")


@pytest.mark.parametrize(
    ("code", "text", "claim"),
    [
        ("transit", "IN_TRANSIT", "IN_TRANSIT"),
        ("transit", "PICKED_UP", "PICKED_UP"),
        ("transit", "picked_up", "PICKED_UP"),  # searched case-insensitively
        ("transit", "OUT_FOR_DELIVERY", "OUT_FOR_DELIVERY"),
        ("transit", "RETURN", "RETURNING"),
        ("transit", "NOT_PICKED_UP", "IN_TRANSIT"),  # anchored
        ("delivered", "PICKED_UP", "DELIVERED"),  # refinements apply to `transit` only
        ("pre-transit", "OUT_FOR_DELIVERY", "LABEL_CREATED"),
        ("failure", "RETURN", "DELIVERY_EXCEPTION"),
    ],
)
def test_dhl_refines_transit_by_its_text(code: str, text: str, claim: str) -> None:
    body = payload("dhl")
    body["status"].update(statusCode=code, status=text)
    assert event(envelope("dhl", body)).claims == (claim,)


def test_dhl() -> None:
    ev = of("dhl")
    assert ev.event_ms == utc_ms(2026, 2, 11, 17, 44, 22)  # 18:44:22+01:00
    assert (ev.event_time_raw, ev.zone) == ("2026-02-11T18:44:22+01:00", "UTC")
    assert (ev.tracking_no, ev.carrier, ev.tracking_valid) == ("1234567890", "dhl", True)
    assert (ev.order_id, ev.channel) == ("WEB2026020900007", "web")
    body = payload("dhl")
    body["status"]["statusCode"] = "unknown"
    assert event(envelope("dhl", body)).claims == ()


@pytest.mark.parametrize(
    ("tag", "subtag", "claim"),
    [
        ("Exception", "Exception_010", "RETURNING"),
        ("Exception", "Exception_011", "RETURNED"),
        ("Exception", "Exception_004", "DELIVERY_EXCEPTION"),
        ("Exception", "Exception_0101", "DELIVERY_EXCEPTION"),
        ("AttemptFail", "Exception_010", "DELIVERY_EXCEPTION"),
        ("InTransit", "InTransit_002", "IN_TRANSIT"),
    ],
)
def test_aftership_refines_exceptions_by_subtag(tag: str, subtag: str, claim: str) -> None:
    assert of("aftership", tag=tag, subtag=subtag).claims == (claim,)


def test_aftership() -> None:
    ev = of("aftership")
    assert (ev.carrier, ev.tracking_valid) == ("ups", True)  # from the slug
    assert (ev.order_id, ev.channel) == ("SH2026011500042", "shopify")
    assert ev.event_ms == utc_ms(2026, 1, 15, 19, 0, 0)
    # an unknown slug: the carrier is inferred from the only matching pattern
    assert of("aftership", slug="some-courier").carrier == "ups"
    assert of("aftership", slug="some-courier", tracking_number="ABC").carrier is None
    assert of("aftership", tag="Pending").claims == ()


@pytest.mark.parametrize(
    ("source", "path", "text", "expected"),
    [
        # AfterShip's checkpoint_time: with an offset, naive local, or a date alone
        ("aftership", "checkpoint_time", "2021-01-14T00:52:00", utc_ms(2021, 1, 14, 0, 52)),
        ("aftership", "checkpoint_time", "2026-12-06", utc_ms(2026, 12, 6)),
        ("aftership", "checkpoint_time", "2026-12-05T10:00:00.1", utc_ms(2026, 12, 5, 10, ms=100)),
        # DHL parcel services send naive local times beside offset ones
        ("dhl", "status.timestamp", "2026-02-11T18:44:22", utc_ms(2026, 2, 11, 18, 44, 22)),
        ("dhl", "status.timestamp", "2026-02-11T18:44:22+01:00", utc_ms(2026, 2, 11, 17, 44, 22)),
        # naive sources take fractional seconds
        ("sf", "acceptTime", "2026-12-05 10:00:00.123", utc_ms(2026, 12, 5, 2, ms=123)),
    ],
)
def test_offset_less_and_date_only_times_are_local_to_the_source_and_kept(
    source: str, path: str, text: str, expected: int
) -> None:
    body = payload(source)
    set_path(body, path, text)
    ev = event(envelope(source, body))
    zone = SETTINGS.sources[source].zone
    assert (ev.event_ms, ev.event_time_raw, ev.zone) == (expected, text, zone)


def test_carrier_api_telemetry() -> None:
    ev = of("carrier_api", carrier="J&T", latency_ms=3200.5, ok=False, error="timeout")
    assert (ev.kind, ev.carrier, ev.order_id, ev.claims) == ("telemetry", "jt", None, ())
    assert ev.telemetry is not None
    t = ev.telemetry
    assert (t.carrier, t.operation, t.latency_ms, t.ok, t.error) == (
        "jt",
        "create_label",
        3200.5,
        False,
        "timeout",
    )
    assert ev.event_ms == utc_ms(2026, 1, 27, 4, 0, 0)
    assert of("carrier_api", error=...).telemetry.error is None  # type: ignore[union-attr]
    assert of("carrier_api", at=...).event_ms == RECEIVED_MS


# ---------------------------------------------------------------- the envelope
def test_whitespace_around_ids_is_noise() -> None:
    ev = of("taobao", tid="  TB2026012700123 ", out_sid=" SF123456789012 ")
    assert (ev.order_id, ev.tracking_no) == ("TB2026012700123", "SF123456789012")


def test_stream_from_the_topic_when_the_envelope_has_none() -> None:
    raw = envelope("sf", payload("sf"), stream=...)
    assert event(raw, stream="tracking").stream == "tracking"
    assert event(envelope("sf", payload("sf")), stream="tracking").stream == "tracking"


def test_fallback_ingestion_time() -> None:
    raw = envelope("sf", payload("sf", acceptTime=...), received_at=...)
    ev = event(raw, fallback_received_ms=1_700_000_000_000)
    assert (ev.received_ms, ev.event_ms) == (1_700_000_000_000, 1_700_000_000_000)


def test_envelope_event_id_wins() -> None:
    assert event(envelope("stripe", payload("stripe"), event_id="E1")).event_id == "E1"
    assert event(envelope("sf", payload("sf"), event_id=17)).event_id == "17"


def test_identity_without_an_event_id_is_source_plus_canonical_payload() -> None:
    body = payload("sf")
    a = event(envelope("sf", body)).event_id
    assert re.fullmatch(r"h:[0-9a-f]{16}", a)
    reordered = dict(reversed(list(body.items())))
    assert event(envelope("sf", reordered, received_at="2026-01-28T00:00:00Z")).event_id == a
    assert event(envelope("sf", payload("sf", opCode="31"))).event_id != a
    # the same payload from another source is another event
    both = {"order_id": "TB2026012700123", "event": "PACKED", "status": "已支付"}
    both |= {"at": "2026-01-27T05:25:09Z", "updated_at": "2026-01-27T05:25:09Z"}
    assert event(envelope("wms", both)).event_id != event(envelope("oms", both)).event_id


def test_a_payload_nested_deeper_than_orjson_writes_still_gets_an_identity() -> None:
    deep = b"[" * 300 + b'"x"' + b"]" * 300  # orjson reads 1024 levels but writes 255
    raw = envelope("sf", payload("sf", extra="DEEP")).replace(b'"DEEP"', deep)
    a = event(raw).event_id
    assert re.fullmatch(r"h:[0-9a-f]{16}", a)
    assert event(raw).event_id == a
    assert event(raw.replace(b'"30"', b'"31"')).event_id != a


def test_identical_payload_shapes_share_one_keys_tuple() -> None:
    a = of("sf")
    b = of("sf", opCode="80")
    assert a.keys == b.keys == tuple(sorted(BASE["sf"]))
    assert a.keys is b.keys


def test_seq_is_carried() -> None:
    assert event(envelope("sf", payload("sf")), seq=99).seq == 99


# ---------------------------------------------------------------- every dead-letter reason
DEAD_CASES: list[Any] = [
    # (id, raw, normalize kwargs, reason, value, words in the error)
    ("too large", b"{" * 600_000, {}, errors.TOO_LARGE, None, "limits.input_record"),
    ("not json", b"{nope", {}, errors.NOT_JSON, None, "not JSON"),
    ("not utf-8", b'{"a": "\xff"}', {}, errors.NOT_JSON, None, "not JSON"),
    ("empty", b"", {}, errors.NOT_JSON, None, "not JSON"),
    ("array", b"[1, 2]", {}, errors.NOT_OBJECT, "[1,2]", "array"),
    ("string", b'"x"', {}, errors.NOT_OBJECT, "x", "string"),
    ("no source", b'{"payload": {}}', {}, errors.BAD_ENVELOPE, None, "source"),
    ("source int", b'{"source": 5}', {}, errors.BAD_ENVELOPE, "5", "source"),
    (
        "unknown source",
        envelope("fedex", {}, stream="tracking"),
        {},
        errors.UNKNOWN_SOURCE,
        "fedex",
        "unknown source",
    ),
    ("stream int", envelope("sf", BASE["sf"], stream=3), {}, errors.BAD_ENVELOPE, "3", "stream"),
    ("no stream", envelope("sf", BASE["sf"], stream=...), {}, errors.BAD_ENVELOPE, None, "stream"),
    (
        "stream vs topic",
        envelope("sf", BASE["sf"]),
        {"stream": "orders"},
        errors.STREAM_MISMATCH,
        "tracking",
        "came from",
    ),
    (
        "stream vs source",
        envelope("sf", BASE["sf"], stream="orders"),
        {},
        errors.STREAM_MISMATCH,
        "orders",
        "belongs on",
    ),
    (
        "no received_at",
        envelope("sf", BASE["sf"], received_at=...),
        {},
        errors.BAD_ENVELOPE,
        None,
        "received_at",
    ),
    (
        "bad received_at",
        envelope("sf", BASE["sf"], received_at="yesterday"),
        {},
        errors.UNPARSEABLE_TIME,
        "yesterday",
        "received_at",
    ),
    (
        "received_at ahead of the ingestion clock",
        envelope("sf", BASE["sf"], received_at="2099-01-01T00:00:00Z"),
        {"not_after": 1_772_409_600_000},
        errors.IMPLAUSIBLE_TIME,
        "2099-01-01T00:00:00Z",
        "ahead of the ingestion clock",
    ),
    (
        "received_at naive",
        envelope("sf", BASE["sf"], received_at="2026-01-27 05:31:22"),
        {},
        errors.UNPARSEABLE_TIME,
        "2026-01-27 05:31:22",
        "received_at",
    ),
    (
        "no payload",
        b'{"stream": "tracking", "source": "sf", "received_at": "2026-01-27T05:31:22Z"}',
        {},
        errors.BAD_ENVELOPE,
        None,
        "payload",
    ),
    ("payload list", envelope("sf", [1]), {}, errors.BAD_ENVELOPE, "[1]", "payload"),
    (
        "event_id object",
        envelope("sf", BASE["sf"], event_id={"a": 1}),
        {},
        errors.BAD_ENVELOPE,
        '{"a":1}',
        "event_id",
    ),
    (
        "no ids",
        envelope("sf", payload("sf", mailno=..., orderid=...)),
        {},
        errors.MISSING_ORDER_ID,
        None,
        "neither",
    ),
    (
        "blank ids",
        envelope("sf", payload("sf", mailno=" ", orderid=None)),
        {},
        errors.MISSING_ORDER_ID,
        None,
        "neither",
    ),
    (
        "lowercase id",
        envelope("taobao", payload("taobao", tid="tb2026012700123")),
        {},
        errors.INVALID_ORDER_ID,
        "tb2026012700123",
        "case-sensitive",
    ),
    (
        "wrong prefix",
        envelope("oms", payload("oms", order_id="XX2026012700123")),
        {},
        errors.INVALID_ORDER_ID,
        "XX2026012700123",
        "global id",
    ),
    (
        "numeric id",
        envelope("oms", payload("oms", order_id=2026012700123)),
        {},
        errors.INVALID_ORDER_ID,
        "2026012700123",
        "number",
    ),
    (
        "bad refund id",
        envelope("oms", payload("oms", order_id="REF-TB2026012700123")),
        {},
        errors.INVALID_ORDER_ID,
        "REF-TB2026012700123",
        "REF-",
    ),
    (
        "tracking object",
        envelope("sf", payload("sf", mailno={"no": 1})),
        {},
        errors.INVALID_FIELD,
        '{"no":1}',
        "tracking number mailno",
    ),
    (
        "customer list",
        envelope("oms", payload("oms", customer_id=["C1"])),
        {},
        errors.INVALID_FIELD,
        '["C1"]',
        "customer id",
    ),
    (
        "carrier object",
        envelope("wms", payload("wms", carrier={"name": "sf"})),
        {},
        errors.INVALID_FIELD,
        '{"name":"sf"}',
        "carrier carrier is an object",
    ),
    (
        "bad naive time",
        envelope("sf", payload("sf", acceptTime="27/01/2026 22:41")),
        {},
        errors.UNPARSEABLE_TIME,
        "27/01/2026 22:41",
        "acceptTime",
    ),
    (
        "bad epoch",
        envelope("douyin", payload("douyin", update_time="soon")),
        {},
        errors.UNPARSEABLE_TIME,
        "soon",
        "update_time",
    ),
    (
        "epoch ms as s",
        envelope("douyin", payload("douyin", update_time=1769488260000)),
        {},
        errors.UNPARSEABLE_TIME,
        "1769488260000",
        "out of range",
    ),
    (
        "rfc without offset",  # rfc3339 sources still require one (iso8601 ones do not)
        envelope("oms", payload("oms", updated_at="2026-01-27T13:31:00")),
        {},
        errors.UNPARSEABLE_TIME,
        "2026-01-27T13:31:00",
        "offset",
    ),
    (
        "bad iso time",
        envelope(
            "dhl",
            {
                **BASE["dhl"],
                "status": {**BASE["dhl"]["status"], "timestamp": "2026-02-11T18:44"},
            },
        ),
        {},
        errors.UNPARSEABLE_TIME,
        "2026-02-11T18:44",
        "ISO 8601",
    ),
    (
        "unmapped",
        envelope("taobao", payload("taobao", status="TRADE_LOST")),
        {},
        errors.UNMAPPED_STATUS,
        "TRADE_LOST",
        "not in its map",
    ),
    (
        "unmapped case",
        envelope("oms", payload("oms", status="shipped")),
        {},
        errors.UNMAPPED_STATUS,
        "shipped",
        "status",
    ),
    (
        "unmapped object",
        envelope("sf", payload("sf", opCode={"x": 1})),
        {},
        errors.UNMAPPED_STATUS,
        '{"x":1}',
        "opCode",
    ),
    (
        "unmapped bool",
        envelope("pinduoduo", payload("pinduoduo", refund_status=True)),
        {},
        errors.UNMAPPED_STATUS,
        "true",
        "refund_status",
    ),
    (
        "status absent",
        envelope("zto", payload("zto", scanType=...)),
        {},
        errors.MISSING_STATUS,
        None,
        "absent",
    ),
    (
        "status null",
        envelope("taobao", payload("taobao", status=None)),
        {},
        errors.MISSING_STATUS,
        None,
        "null",
    ),
    (
        "nested status absent",
        envelope("dhl", {**BASE["dhl"], "status": "delivered"}),
        {},
        errors.MISSING_STATUS,
        None,
        "status.statusCode",
    ),
    (
        "telemetry latency",
        envelope("carrier_api", payload("carrier_api", latency_ms="180")),
        {},
        errors.INVALID_TELEMETRY,
        "180",
        "latency_ms",
    ),
    (
        "telemetry negative",
        envelope("carrier_api", payload("carrier_api", latency_ms=-1)),
        {},
        errors.INVALID_TELEMETRY,
        "-1",
        "latency_ms",
    ),
    (
        "telemetry ok",
        envelope("carrier_api", payload("carrier_api", ok="true")),
        {},
        errors.INVALID_TELEMETRY,
        "true",
        "ok",
    ),
    (
        "telemetry carrier",
        envelope("carrier_api", payload("carrier_api", carrier="pigeon")),
        {},
        errors.INVALID_TELEMETRY,
        "pigeon",
        "unknown carrier",
    ),
    (
        "telemetry no carrier",
        envelope("carrier_api", payload("carrier_api", carrier=...)),
        {},
        errors.INVALID_TELEMETRY,
        None,
        "carrier",
    ),
    (
        "telemetry operation",
        envelope("carrier_api", payload("carrier_api", operation=None)),
        {},
        errors.INVALID_TELEMETRY,
        "null",
        "operation",
    ),
    (
        "telemetry error",
        envelope("carrier_api", payload("carrier_api", error=500)),
        {},
        errors.INVALID_TELEMETRY,
        "500",
        "error",
    ),
    (
        "telemetry time",
        envelope("carrier_api", payload("carrier_api", at="now")),
        {},
        errors.UNPARSEABLE_TIME,
        "now",
        "at",
    ),
    (
        "caller bug",
        envelope("sf", BASE["sf"]),
        {"stream": ["tracking"]},
        errors.INTERNAL_ERROR,
        None,
        "bug",
    ),
]


@pytest.mark.parametrize(
    ("raw", "kw", "reason", "value", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in DEAD_CASES],
)
def test_dead_letters(
    raw: bytes, kw: dict[str, Any], reason: str, value: str | None, words: str | None
) -> None:
    dl = dead(raw, reason, **kw)
    assert dl.value == value
    if words is not None:
        assert words in dl.error


def test_every_reason_is_exercised() -> None:
    # the shipped registry's sources split and decode nothing yet: those two reasons are
    # exercised on synthetic sources in test_normalize_mechanics.py
    split = {errors.NO_EVENTS, errors.UNDECODABLE}
    assert {case[3] for case in DEAD_CASES} == set(errors.REASONS) - split


def test_dead_letters_carry_what_is_known() -> None:
    dl = dead(
        envelope("taobao", payload("taobao", status="TRADE_LOST")), errors.UNMAPPED_STATUS, seq=7
    )
    assert (dl.stream, dl.source, dl.received_ms, dl.seq) == ("orders", "taobao", RECEIVED_MS, 7)
    assert dl.error.startswith("taobao: ")
    dl = dead(b"{nope", errors.NOT_JSON, stream="payments", fallback_received_ms=5)
    assert (dl.stream, dl.source, dl.received_ms) == ("payments", None, 5)
    dl = dead(envelope("fedex", {}, stream="tracking"), errors.UNKNOWN_SOURCE)
    assert (dl.stream, dl.source) == ("tracking", None)  # an unknown source is not a source


def test_long_offending_values_are_cut() -> None:
    dl = dead(envelope("taobao", payload("taobao", status="X" * 1000)), errors.UNMAPPED_STATUS)
    assert dl.value is not None
    assert len(dl.value) == 200
    assert dl.value.endswith("...")


# ---------------------------------------------------------------- the sample day
def _sample_lines() -> list[bytes]:
    return [line for line in SAMPLE.read_bytes().splitlines() if line.strip()]


def test_every_sample_line_normalizes_to_an_event() -> None:
    lines = _sample_lines()
    assert len(lines) >= 70
    results = []
    for i, line in enumerate(lines):  # a push (SF, DHL, AfterShip) may hold several events
        r = NORMALIZER.normalize(line, origin={"line": i}, seq=i)
        results.extend(r if isinstance(r, tuple) else (r,))
    bad = [r for r in results if not isinstance(r, Event)]
    assert bad == []
    assert len(results) > len(lines)  # AfterShip resends every checkpoint so far
    assert {r.source for r in results} == set(SETTINGS.sources) - {"shopee", "jt"}


def test_sample_spot_checks() -> None:
    by = {}
    for i, line in enumerate(_sample_lines()):
        r = NORMALIZER.normalize(line, origin=ORIGIN, seq=i)
        for ev in r if isinstance(r, tuple) else (r,):
            assert isinstance(ev, Event), ev
            by.setdefault((ev.source, ev.raw_status, ev.claims), ev)
    refund = by[("oms", "退款中", ("REFUND_REQUESTED",))]
    assert (refund.order_id, refund.refund_id, refund.claims) == (
        "TB2026012700124",
        "REF-TB2026012700124-01",
        ("REFUND_REQUESTED",),
    )
    wx_refund = next(e for e in by.values() if e.claims == ("REFUNDED",) and e.kind == "gateway")
    assert (wx_refund.source, wx_refund.event_ms) == ("wechatpay", utc_ms(2026, 1, 27, 5))
    assert wx_refund.raw_status == "SUCCESS"  # REFUND.SUCCESS: the refund's own success_time
    # the channel's own id, linked by the OMS
    taobao = by[("taobao", "WAIT_BUYER_PAY", ("PENDING_PAYMENT",))]
    assert (taobao.order_id, taobao.ref) == (None, "taobao:3456789012345678")
    oms = by[("oms", "待支付", ("PENDING_PAYMENT",))]
    assert (oms.order_id, oms.links) == ("TB2026012700123", ("taobao:3456789012345678",))
    delivered = by[("dhl", "delivered", ("DELIVERED",))]
    assert delivered.event_ms == utc_ms(2026, 2, 11, 17, 44, 22)
    assert by[("aftership", "Delivered", ("DELIVERED",))].carrier == "ups"
    assert by[("yto", "GOT", ("PICKED_UP",))].order_id == "DY2026012700789"
