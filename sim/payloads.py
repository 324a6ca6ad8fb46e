"""Provider-native payloads, one builder per source, shaped as in spec/sources.md and the
day-in-the-life sample (field names, status values, time formats and zones).

Builders are pure functions of (context, order, event time, arg): a redelivered
webhook rebuilt from the same event is byte-identical, as the real retries are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sim import catalog
from sim.clock import HOUR, cn_date, cn_naive, utc_ms, utc_s, with_offset
from sim.ids import BASE62, UPPER36, digits, mix, salt, token
from sim.model import Order

Built = tuple[str, dict, str | None]  # source, payload, event_id


@dataclass(frozen=True, slots=True)
class Ctx:
    """Run-wide switches the payload-level incidents read (None = off)."""

    seed: int
    rename_from: int | None = None  # field_rename: shopee tracking_no from this event time
    yto_skew_from: int | None = None  # carrier_wrong_timezone: yto +8 h from this event time
    outage: tuple[int, int] | None = None  # carrier_api_outage: jt calls fail in [a, b)


SHIPPED = frozenset({"shipped", "picked", "delivered", "completed"})
_TAOBAO = {
    "created": "WAIT_BUYER_PAY",
    "paid": "WAIT_SELLER_SEND_GOODS",
    "shipped": "WAIT_BUYER_CONFIRM_GOODS",
    "completed": "TRADE_FINISHED",
    "cancelled": "TRADE_CLOSED_BY_TAOBAO",
    "refunded": "TRADE_CLOSED",
}
_COMPANY = {"sf": "SF", "zto": "ZTO", "yto": "YTO", "jt": "JT"}
_PDD = {
    "paid": (1, 1),
    "shipped": (2, 1),
    "completed": (3, 1),
    "refund_requested": (1, 3),  # refunding
    "refunded": (1, 4),  # refund succeeded
}
_LOGISTICS_ID = {"sf": 44, "zto": 115, "yto": 85, "jt": 384}
_DOUYIN = {"created": 1, "paid": 105, "preparing": 2, "shipped": 3, "completed": 5, "cancelled": 4}
_SHOPEE = {
    "created": "UNPAID",
    "paid": "READY_TO_SHIP",
    "shipped": "PROCESSED",
    "picked": "SHIPPED",
    "delivered": "TO_CONFIRM_RECEIVE",
    "completed": "COMPLETED",
    "cancelled": "CANCELLED",
}
_SHOPIFY = {
    "created": ("pending", None),
    "paid": ("paid", None),
    "shipped": ("paid", "fulfilled"),
    "cancelled": ("voided", None),
    "refunded": ("refunded", None),
}
_OMS_CN = {
    "pending": "待支付",
    "paid": "已支付",
    "to_ship": "待发货",
    "shipped": "已发货",
    "delivered": "已签收",
    "completed": "已完成",
    "cancelled": "已取消",
    "closed_unpaid": "支付超时关闭",
    "refunding": "退款中",
    "refunded": "已退款",
}
_OMS_EN = {  # older producers: no word for a refund in progress, so a REF order is Pending
    "pending": "Pending",
    "paid": "Paid",
    "shipped": "Shipped",
    "delivered": "Delivered",
    "completed": "Completed",
    "cancelled": "Cancelled",
    "closed_unpaid": "Cancelled",
    "refunding": "Pending",
    "refunded": "Refunded",
}
_OMS_SHIPPED = frozenset({"shipped", "delivered", "completed"})


def _epoch(ms: int) -> int:
    return ms // 1000


def _amount(o: Order) -> float:
    return o.amount / 100


# ---------------------------------------------------------------- orders stream
def _taobao(ctx: Ctx, o: Order, t: int, stage: str) -> Built:
    p: dict = {"tid": o.oid, "status": _TAOBAO[stage], "created": cn_naive(o.t0)}
    if o.tp >= 0 and stage != "created":
        p["pay_time"] = cn_naive(o.t0 + o.tp)
    shipped = stage in SHIPPED
    p["modified"] = cn_naive(t)
    p["buyer_open_uid"] = o.buyer
    p["payment"] = o.amount_str
    p["out_sid"] = o.tracking if shipped else None
    p["company_code"] = _COMPANY[o.carrier] if shipped else None
    return "taobao", p, None


def _pinduoduo(ctx: Ctx, o: Order, t: int, stage: str) -> Built:
    status, refund = _PDD[stage]
    shipped = stage in SHIPPED
    p = {
        "order_sn": o.oid,
        "order_status": status,
        "refund_status": refund,
        "created_time": cn_naive(o.t0),
        "pay_time": cn_naive(o.t0 + o.tp),
        "updated_at": cn_naive(t),
        "tracking_number": o.tracking if shipped else "",
        "logistics_id": _LOGISTICS_ID[o.carrier] if shipped else 0,
        "pay_amount": _amount(o),
    }
    return "pinduoduo", p, None


def _douyin(ctx: Ctx, o: Order, t: int, stage: str) -> Built:
    key = o.dy_tracking_key
    p = {
        "order_id": o.oid,
        "order_status": _DOUYIN[stage],
        "create_time": _epoch(o.t0),
        "pay_time": _epoch(o.t0 + o.tp) if o.tp >= 0 and stage != "created" else None,
        "update_time": _epoch(t),
        key: o.tracking if stage in SHIPPED else None,
        "user_id": f"dy_{10000 + o.customer}",
    }
    return "douyin", p, None


def _shopee(ctx: Ctx, o: Order, t: int, stage: str) -> Built:
    renamed = ctx.rename_from is not None and t >= ctx.rename_from
    p = {
        "order_sn": o.oid,
        "order_status": _SHOPEE[stage],
        "create_time": _epoch(o.t0),
        "update_time": _epoch(t),
        "tracking_no" if renamed else "tracking_number": o.tracking if stage in SHIPPED else "",
        "buyer_user_id": 3_000_000 + o.customer * 37,
    }
    return "shopee", p, None


def _shopify(ctx: Ctx, o: Order, t: int, stage: str) -> Built:
    financial, fulfillment = _SHOPIFY[stage]
    company = "UPS" if o.carrier == "ups" else "DHL"
    p = {
        "name": o.oid,
        "id": 5_100_000_000_000 + int(digits(12, o.idx, o.seed, 11)),
        "financial_status": financial,
        "fulfillment_status": fulfillment,
        "created_at": with_offset(o.t0, catalog.OFFSET_SHOPIFY),
        "updated_at": with_offset(t, catalog.OFFSET_SHOPIFY),
        "cancelled_at": with_offset(t, catalog.OFFSET_SHOPIFY) if stage == "cancelled" else None,
        "fulfillments": (
            [{"tracking_number": o.tracking, "tracking_company": company}] if fulfillment else []
        ),
        "customer": {"id": 207_000_000 + o.customer},
    }
    return "shopify", p, None


_CHANNEL: dict[str, Callable[[Ctx, Order, int, str], Built]] = {
    "taobao": _taobao,
    "pinduoduo": _pinduoduo,
    "douyin": _douyin,
    "shopee": _shopee,
    "shopify": _shopify,
}


def channel(ctx: Ctx, o: Order, t: int, stage: str) -> Built:
    return _CHANNEL[o.channel](ctx, o, t, stage)


def oms(ctx: Ctx, o: Order, t: int, arg: tuple[str, bool]) -> Built:
    key, ref = arg
    if o.cn:
        status, updated = _OMS_CN[key], with_offset(t, catalog.OFFSET_CN)
    else:
        status, updated = _OMS_EN[key], utc_s(t)
        if key == "pending" and not ref and o.awaiting:
            status = "Awaiting Payment"
    shipped = key in _OMS_SHIPPED and not ref
    p = {
        "order_id": f"REF-{o.oid}-01" if ref else o.oid,
        "status": status,
        "updated_at": updated,
        "customer_id": f"C{10000 + o.customer}",
        "channel": o.channel,
        "tracking_no": o.tracking if shipped else None,
        "carrier": o.carrier if shipped else None,
        "amount": o.amount_str,
        "currency": o.currency,
    }
    return "oms", p, None


def wms(ctx: Ctx, o: Order, t: int, event: str) -> Built:
    labelled = event in ("LABEL_PRINTED", "HANDED_OVER")
    p = {
        "order_id": o.oid,
        "event": event,
        "warehouse": catalog.WAREHOUSE[o.channel][0],
        "tracking_no": o.tracking if labelled else None,
        "carrier": o.carrier if labelled else None,
        "at": utc_s(t),
    }
    return "wms", p, None


# ---------------------------------------------------------------- payments stream
_S_PAY = salt("payment-ids")


def _pid(o: Order, n: int, what: int, alphabet: str = BASE62) -> str:
    return token(alphabet, n, o.seed, o.idx, _S_PAY, what)


def _wechatpay(ctx: Ctx, o: Order, t: int, what: str) -> Built:
    tp = o.t0 + o.tp
    txn = f"420000{cn_date(tp)}{digits(11, o.idx, o.seed, _S_PAY)}"
    p = {
        "out_trade_no": o.oid,
        "transaction_id": txn,
        # REFUND carries the original payment's success_time: its own time is received_at.
        "trade_state": "SUCCESS" if what == "success" else "REFUND",
        "success_time": with_offset(tp, catalog.OFFSET_CN),
        "amount": {"total": o.amount, "currency": "CNY"},
    }
    return "wechatpay", p, (f"wx-{txn}" if what == "success" and o.wx_event_id else None)


def _alipay(ctx: Ctx, o: Order, t: int, what: str) -> Built:
    tp = o.t0 + o.tp
    p = {
        "out_trade_no": o.oid,
        "trade_no": f"{cn_date(tp)}22001{digits(15, o.idx, o.seed, _S_PAY, 1)}",
        "trade_status": "TRADE_SUCCESS" if what == "success" else "TRADE_CLOSED",
        "gmt_payment": cn_naive(tp),
        "notify_time": cn_naive(t),
        "total_amount": o.amount_str,
    }
    if what == "refund":  # closed after success = fully refunded
        p["gmt_close"] = cn_naive(t)
    return "alipay", p, None


def _stripe(ctx: Ctx, o: Order, t: int, what: str) -> Built:
    pi = "pi_" + _pid(o, 24, 1)
    meta = {"order_id": o.oid}
    if what in ("success", "failed"):
        evt, kind = (
            ("evt_" + _pid(o, 24, 2), "payment_intent.succeeded")
            if what == "success"
            else ("evt_" + _pid(o, 24, 5), "payment_intent.payment_failed")
        )
        obj: dict = {"id": pi, "amount": o.amount, "currency": o.currency.lower(), "metadata": meta}
    else:
        evt, kind = "evt_" + _pid(o, 24, 3), "charge.refunded"
        obj = {
            "id": "ch_" + _pid(o, 24, 4),
            "amount": o.amount,
            "amount_refunded": o.amount,
            "refunded": True,  # the whole charge
            "currency": o.currency.lower(),
            "payment_intent": pi,
            "metadata": meta,
        }
    p = {"id": evt, "type": kind, "created": _epoch(t), "data": {"object": obj}}
    return "stripe", p, evt


def _paypal(ctx: Ctx, o: Order, t: int, what: str) -> Built:
    success = what == "success"
    a, b = (5, 7) if success else (6, 8)
    wh = f"WH-{_pid(o, 17, a, UPPER36)}-{_pid(o, 17, b, UPPER36)}"
    p = {
        "id": wh,
        "event_type": "PAYMENT.CAPTURE.COMPLETED" if success else "PAYMENT.CAPTURE.REFUNDED",
        "create_time": utc_ms(t),
        "resource": {
            "id": _pid(o, 17, 9 if success else 10, UPPER36),
            "custom_id": o.oid,
            "status": "COMPLETED",
            "amount": {"value": o.amount_str, "currency_code": o.currency},
        },
    }
    return "paypal", p, wh


_GATEWAY = {"wechatpay": _wechatpay, "alipay": _alipay, "stripe": _stripe, "paypal": _paypal}


def payment(ctx: Ctx, o: Order, t: int, what: str) -> Built:
    return _GATEWAY[o.gateway](ctx, o, t, what)


# ---------------------------------------------------------------- tracking stream
_SF = {
    "pickup": ("50", "顺丰速运 已收取快件"),
    "arrive": ("30", "快件到达 {}"),
    "depart": ("31", "快件已发车"),
    "ofd": ("44", "快件交给派送员，正在派送途中"),
    "delivered": ("80", "快件已签收，签收人：本人"),
}
_ZTO = {"pickup": "收件", "arrive": "到件", "depart": "发件", "ofd": "派件", "delivered": "签收"}
_YTO = {
    "pickup": "GOT",
    "arrive": "ARRIVAL",
    "depart": "DEPARTURE",
    "ofd": "SENT_SCAN",
    "delivered": "SIGNED",
}
_JT = {
    "pickup": "快件揽收",
    "arrive": "到件扫描",
    "depart": "发件扫描",
    "ofd": "出仓扫描",
    "delivered": "快件签收",
}
_DHL = {
    "info": ("pre-transit", "SHIPMENT_INFORMATION_RECEIVED", "Shipment information received"),
    "pickup": ("transit", "PICKED_UP", "Picked Up"),
    "arrive": ("transit", "ARRIVED_AT_FACILITY", "Arrived at Sort Facility"),
    "depart": ("transit", "DEPARTED_FACILITY", "Departed Facility"),
    "ofd": ("transit", "OUT_FOR_DELIVERY", "Out For Delivery"),
    "delivered": ("delivered", "DELIVERED", "Delivered"),
    "exception": ("failure", "DELIVERY_ATTEMPT_FAILED", "Recipient not at home"),
    "return": ("transit", "RETURN", "Returned to shipper"),
}
_AFTERSHIP = {
    "info": ("InfoReceived", "InfoReceived_001"),
    "pickup": ("InTransit", "InTransit_002"),
    "arrive": ("InTransit", "InTransit_003"),
    "depart": ("InTransit", "InTransit_004"),
    "ofd": ("OutForDelivery", "OutForDelivery_001"),
    "delivered": ("Delivered", "Delivered_001"),
}


def _site(o: Order, step: str, hub: int) -> str:
    """Where a scan happened: origin warehouse city, a hub, or the delivery station."""
    if step == "pickup":
        return catalog.WAREHOUSE[o.channel][1]
    if step in ("arrive", "depart"):
        hubs = catalog.HUBS_CN if o.cn else catalog.HUBS_INTL
        return hubs[(o.idx * 7 + hub * 3) % len(hubs)]
    if o.cn:
        return catalog.STATIONS_CN[o.idx % len(catalog.STATIONS_CN)]
    return catalog.HUBS_INTL[o.idx % len(catalog.HUBS_INTL)]


def scan(ctx: Ctx, o: Order, t: int, arg: tuple[str, int]) -> Built:
    step, hub = arg
    via = o.via
    if via == "sf":
        code, remark = _SF[step]
        site = _site(o, step, hub)
        p: dict = {
            "mailno": o.tracking,
            "orderid": o.oid,
            "opCode": code,
            "acceptTime": cn_naive(t),
            "acceptAddress": site,
            "remark": remark.format(site),
        }
    elif via == "zto":
        p = {"billCode": o.tracking}
        if o.with_ref:  # ZTO scans usually omit orderId: the tracking number must find it
            p["orderId"] = o.oid
        p.update(scanType=_ZTO[step], scanDate=cn_naive(t), scanSite=_site(o, step, hub))
    elif via == "yto":
        skewed = ctx.yto_skew_from is not None and t >= ctx.yto_skew_from
        p = {
            "mailNo": o.tracking,
            "orderNo": o.oid,
            "infoContent": _YTO[step],
            "acceptTime": cn_naive(t + 8 * HOUR if skewed else t),
        }
    elif via == "jt":
        p = {"billCode": o.tracking, "txlogisticId": o.oid, "scanType": _JT[step]}
        p["scanTime"] = cn_naive(t)
    elif via == "dhl":
        code, status, text = _DHL[step]
        p = {
            "trackingNumber": o.tracking,
            "orderReference": o.oid,
            "status": {
                "statusCode": code,
                "status": status,
                "timestamp": with_offset(t, catalog.OFFSET_CARRIER["dhl"]),
                "description": text,
            },
        }
    else:
        tag, subtag = _AFTERSHIP[step]
        p = {
            "tracking_number": o.tracking,
            "slug": o.carrier,
            "order_id": o.oid,
            "tag": tag,
            "subtag": subtag,
            "checkpoint_time": with_offset(t, catalog.OFFSET_CARRIER[o.carrier]),
        }
    return via, p, None


_ERRORS = ("HTTP 503 Service Unavailable", "ReadTimeout: no response within 10s", "HTTP 502")


def carrier_api(ctx: Ctx, o: Order | None, t: int, arg: tuple[str, str, int]) -> Built:
    carrier, operation, latency = arg
    ok, error = True, None
    if ctx.outage is not None and carrier == "jt" and ctx.outage[0] <= t < ctx.outage[1]:
        h = mix(ctx.seed, t)
        ok, error, latency = False, _ERRORS[h % 3], 3000 + (h >> 8) % 9000
    p = {
        "carrier": carrier,
        "operation": operation,
        "latency_ms": latency,
        "ok": ok,
        "error": error,
        "at": utc_s(t),
    }
    return "carrier_api", p, None


def renamed(ctx: Ctx, o: Order, t: int, stage: str) -> Built:
    """A channel update from a producer that renamed the tracking field (SCHEMA_DRIFT)."""
    return channel(replace(ctx, rename_from=t), o, t, stage)


def skewed(ctx: Ctx, o: Order, t: int, arg: tuple[str, int]) -> Built:
    """A yto scan stamped as if UTC were China time (CLOCK_SKEW)."""
    return scan(replace(ctx, yto_skew_from=t), o, t, arg)


BUILD: dict[str, Callable[[Ctx, Order, int, object], Built]] = {
    "ch": channel,
    "oms": oms,
    "wms": wms,
    "pay": payment,
    "scan": scan,
    "api": carrier_api,
    "renamed": renamed,
    "skewed": skewed,
}
