"""Provider-native payloads, one builder per source, shaped as the providers send them
(spec/providers.md, the fixtures in tests/fixtures/providers.py): field names, nesting,
status values, time formats and zones, and each system's own ids.

Ids: channels name an order by their own id (Taobao's numeric `tid`, Pinduoduo's
`yymmdd-…`, Douyin's 19 digits, Shopee's `ordersn`, Shopify's `id` and `#name`); the OMS
by its global id, with `channel` + `platform_order_id` linking the two; gateways by the
merchant's reference (the OMS id); carriers by tracking number. An order whose OMS is not
on the feed (`Order.has_oms` false) comes from a channel sync that writes the OMS id
into the channel's id field, the old contract, still valid input.

Builders are pure functions of (context, order, event time, arg): a redelivered
webhook rebuilt from the same event is byte-identical, as the real retries are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import orjson

from sim import catalog
from sim.clock import HOUR, cn_date, cn_naive, utc_ms, utc_s, with_offset
from sim.ids import BASE62, UPPER36, digits, mix, salt, token, uuid
from sim.model import Order

Built = tuple[str, dict, str | None]  # source, payload, event_id


@dataclass(frozen=True, slots=True)
class Ctx:
    """Run-wide switches the payload-level incidents read (None = off)."""

    seed: int
    rename_from: int | None = None  # field_rename: douyin waybill_no from this event time
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


_S_NATIVE = salt("channel-order-ids")


def native_id(o: Order) -> str:
    """The channel's own id of the order (the OMS id when the OMS is off the feed)."""
    if not o.has_oms or o.channel == "web":
        return o.oid
    n = (o.seed, _S_NATIVE, int(cn_date(o.t0)))  # unique per order, across days too
    ch = o.channel
    if ch == "taobao":  # TOP `tid`: a number of up to 19 digits
        return "3" + digits(18, o.idx, *n)
    if ch == "pinduoduo":  # `order_sn`: yymmdd- + 15 digits
        return f"{cn_date(o.t0)[2:]}-{digits(15, o.idx, *n)}"
    if ch == "douyin":  # `order_id`: 19 digits, as a string
        return "69" + digits(17, o.idx, *n)
    if ch == "shopee":  # `ordersn`: yymmdd + 8 upper-case alphanumerics
        return cn_date(o.t0)[2:] + token(UPPER36, 8, o.idx, *n)
    return str(shopify_id(o))


def shopify_id(o: Order) -> int:
    return 5_100_000_000_000 + int(digits(12, o.idx, o.seed, 11, int(cn_date(o.t0))))


def _epoch(ms: int) -> int:
    return ms // 1000


def _amount(o: Order) -> float:
    return o.amount / 100


# ---------------------------------------------------------------- orders stream
def _taobao(ctx: Ctx, o: Order, t: int, stage: str) -> Built:
    tid = native_id(o)
    p: dict = {
        "tid": int(tid) if tid.isdigit() else tid,
        "status": _TAOBAO[stage],
        "created": cn_naive(o.t0),
    }
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
        "order_sn": native_id(o),
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
    renamed = ctx.rename_from is not None and t >= ctx.rename_from
    key = "waybill_no" if renamed else o.dy_tracking_key
    p = {
        "order_id": native_id(o),
        "order_status": _DOUYIN[stage],
        "create_time": _epoch(o.t0),
        "pay_time": _epoch(o.t0 + o.tp) if o.tp >= 0 and stage != "created" else None,
        "update_time": _epoch(t),
        key: o.tracking if stage in SHIPPED else None,
        "user_id": f"dy_{10000 + o.customer}",
    }
    return "douyin", p, None


def _shopee(ctx: Ctx, o: Order, t: int, stage: str) -> Built:
    """Shopee's order status push (`code` 3); the tracking number comes as `code` 4."""
    p = {
        "code": 3,
        "shop_id": SHOPEE_SHOP,
        "timestamp": _epoch(t) + 1,
        "data": {"ordersn": native_id(o), "status": _SHOPEE[stage], "update_time": _epoch(t)},
    }
    return "shopee", p, None


def shopee_tracking(ctx: Ctx, o: Order, t: int, arg: object) -> Built:
    """Shopee's tracking number push (`code` 4), sent when the label is printed."""
    p = {
        "code": 4,
        "shop_id": SHOPEE_SHOP,
        "timestamp": _epoch(t) + 1,
        "data": {
            "ordersn": native_id(o),
            "package_number": "OFG" + digits(12, o.idx, o.seed, 13),
            "tracking_no": o.tracking,
        },
    }
    return "shopee", p, None


SHOPEE_SHOP = 220_118_793


def _shopify(ctx: Ctx, o: Order, t: int, stage: str) -> Built:
    """The Order resource of Shopify's order webhooks; an order whose OMS is off the feed
    comes from the channel sync service, flattened, its `name` the OMS id (sources.md)."""
    financial, fulfillment = _SHOPIFY[stage]
    company = "UPS" if o.carrier == "ups" else "DHL"
    updated = with_offset(t, catalog.OFFSET_SHOPIFY)
    p: dict = {"id": shopify_id(o), "name": o.oid}
    if o.has_oms:
        p["name"] = f"#{1001 + o.idx}"
        p["order_number"] = 1001 + o.idx
    p.update(
        financial_status=financial,
        fulfillment_status=fulfillment,
        created_at=with_offset(o.t0, catalog.OFFSET_SHOPIFY),
        updated_at=updated,
        cancelled_at=updated if stage == "cancelled" else None,
        fulfillments=[],
        customer={"id": 207_000_000 + o.customer},
    )
    if fulfillment:
        f = {"tracking_number": o.tracking, "tracking_company": company}
        if o.has_oms:
            f = {"id": 4_400_000_000_000 + shopify_id(o) % 10**12, "order_id": p["id"], **f}
            f.update(name=f"{p['name']}.1", status="success", created_at=updated)
        p["fulfillments"] = [f]
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
        "platform_order_id": None if ref or o.channel == "web" else native_id(o),
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
    """A WeChat Pay v3 notification as the gateway stores it: `resource` decrypted in place."""
    tp = o.t0 + o.tp
    txn = f"420000{cn_date(tp)}{digits(11, o.idx, o.seed, _S_PAY)}"
    nid = uuid(o.seed, o.idx, _S_PAY, 20 if what == "success" else 21)
    paid = what == "success"
    resource: dict = {
        "mchid": WECHAT_MCHID,
        "out_trade_no": o.oid,
        "transaction_id": txn,
        "amount": {"total": o.amount, "currency": "CNY"},
    }
    if paid:
        resource.update(
            appid=WECHAT_APPID,
            trade_type="JSAPI",
            trade_state="SUCCESS",
            trade_state_desc="支付成功",
            bank_type="OTHERS",
            success_time=with_offset(tp, catalog.OFFSET_CN),
            payer={"openid": "o" + _pid(o, 27, 22)},
        )
        resource["amount"].update(payer_total=o.amount, payer_currency="CNY")
    else:
        resource.update(
            out_refund_no=f"RF{o.oid}",
            refund_id="50" + digits(27, o.idx, o.seed, _S_PAY, 23),
            refund_status="SUCCESS",
            success_time=with_offset(t, catalog.OFFSET_CN),
            user_received_account="支付用户零钱",
        )
        resource["amount"].update(refund=o.amount, payer_total=o.amount, payer_refund=o.amount)
    p = {
        "id": nid,
        "create_time": with_offset(t, catalog.OFFSET_CN),
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS" if paid else "REFUND.SUCCESS",
        "summary": "支付成功" if paid else "退款成功",
        "resource": resource,
    }
    return "wechatpay", p, nid


WECHAT_MCHID = "1900009191"
WECHAT_APPID = "wxd678efh567hg6787"
ALIPAY_APP_ID = "2021004100000001"


def _alipay(ctx: Ctx, o: Order, t: int, what: str) -> Built:
    """Alipay's asynchronous notification: the form's fields, every value a string."""
    tp = o.t0 + o.tp
    p = {
        "notify_time": cn_naive(t),
        "notify_type": "trade_status_sync",
        "notify_id": _pid(o, 32, 30 if what == "success" else 31, UPPER36).lower(),
        "app_id": ALIPAY_APP_ID,
        "charset": "utf-8",
        "version": "1.0",
        "trade_no": f"{cn_date(tp)}22001{digits(15, o.idx, o.seed, _S_PAY, 1)}",
        "out_trade_no": o.oid,
        "trade_status": "TRADE_SUCCESS" if what == "success" else "TRADE_CLOSED",
        "total_amount": o.amount_str,
        "receipt_amount": o.amount_str,
        "buyer_id": "2088" + digits(12, o.customer, o.seed, _S_PAY, 2),
        "gmt_create": cn_naive(o.t0 + o.tp - 5 * 1000),
        "gmt_payment": cn_naive(tp),
    }
    if what == "refund":  # closed after success = fully refunded
        p.update(refund_fee=o.amount_str, gmt_refund=cn_naive(t), gmt_close=cn_naive(t))
        p["out_biz_no"] = f"RF{o.oid}"
    return "alipay", p, None


def _stripe(ctx: Ctx, o: Order, t: int, what: str) -> Built:
    """Stripe Events: the PaymentIntent's and its Charge's. Stripe copies the intent's
    metadata to the Charge once, at confirmation (docs/providers-checked.md)."""
    pi = "pi_" + _pid(o, 24, 1)
    ch = "ch_" + _pid(o, 24, 4)
    if what in ("success", "failed"):
        evt, kind = (
            ("evt_" + _pid(o, 24, 2), "payment_intent.succeeded")
            if what == "success"
            else ("evt_" + _pid(o, 24, 5), "payment_intent.payment_failed")
        )
        obj: dict = {
            "id": pi,
            "object": "payment_intent",
            "amount": o.amount,
            "currency": o.currency.lower(),
            "status": "succeeded" if what == "success" else "requires_payment_method",
            "latest_charge": ch,
            "metadata": {"order_id": o.oid},
        }
    else:
        charged = what == "charge"
        evt = "evt_" + _pid(o, 24, 6 if charged else 3)
        kind = "charge.succeeded" if charged else "charge.refunded"
        obj = {
            "id": ch,
            "object": "charge",
            "amount": o.amount,
            "amount_captured": o.amount,
            "amount_refunded": 0 if charged else o.amount,
            "captured": True,
            "paid": True,
            "refunded": not charged,  # the whole charge
            "status": "succeeded",
            "currency": o.currency.lower(),
            "payment_intent": pi,
            "metadata": {"order_id": o.oid},
        }
    p = {
        "id": evt,
        "object": "event",
        "api_version": "2024-06-20",
        "type": kind,
        "created": _epoch(t),
        "livemode": False,
        "data": {"object": obj},
    }
    return "stripe", p, evt


def _paypal(ctx: Ctx, o: Order, t: int, what: str) -> Built:
    success = what == "success"
    a, b = (5, 7) if success else (6, 8)
    wh = f"WH-{_pid(o, 17, a, UPPER36)}-{_pid(o, 17, b, UPPER36)}"
    capture = _pid(o, 17, 9, UPPER36)
    api = "https://api.paypal.com/v2/payments"
    amount = {"value": o.amount_str, "currency_code": o.currency}
    if success:
        resource: dict = {
            "id": capture,
            "status": "COMPLETED",
            "amount": amount,
            "final_capture": True,
            "custom_id": o.oid,
            "invoice_id": f"INV-{o.oid}",
            "create_time": utc_s(t),
            "update_time": utc_s(t),
            "links": [{"href": f"{api}/captures/{capture}", "rel": "self", "method": "GET"}],
        }
    else:
        refund = _pid(o, 17, 10, UPPER36)
        resource = {
            "id": refund,
            "status": "COMPLETED",
            "amount": amount,
            "custom_id": o.oid,
            "invoice_id": f"INV-{o.oid}",
            "create_time": utc_s(t),
            "update_time": utc_s(t),
            "links": [
                {"href": f"{api}/refunds/{refund}", "rel": "self", "method": "GET"},
                {"href": f"{api}/captures/{capture}", "rel": "up", "method": "GET"},
            ],
        }
    p = {
        "id": wh,
        "event_version": "1.0",
        "create_time": utc_ms(t),
        "resource_type": "capture" if success else "refund",
        "resource_version": "2.0",
        "event_type": "PAYMENT.CAPTURE.COMPLETED" if success else "PAYMENT.CAPTURE.REFUNDED",
        "summary": f"Payment {'completed' if success else 'refunded'} for {o.currency} "
        f"{o.amount_str}",
        "resource": resource,
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
    if via == "sf":  # route push: a batch of up to 10 routes (here the waybill's newest)
        code, remark = _SF[step]
        site = _site(o, step, hub)
        route = {
            "id": digits(12, o.idx * 16 + _STEP[step] * 4 + hub, o.seed, _S_SCAN),
            "mailno": o.tracking,
            "orderid": o.oid,
            "acceptTime": cn_naive(t),
            "acceptAddress": site,
            "remark": remark.format(site),
            "opCode": code,
        }
        p: dict = {"Body": {"WaybillRoute": [route]}}
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
    elif via == "jt":  # form field bizContent: JSON text, decoded by the source's config
        detail = {"scanType": _JT[step], "scanTime": cn_naive(t)}
        detail["scanNetworkName"] = _site(o, step, hub)
        biz = {"billCode": o.tracking, "txlogisticId": o.oid, "details": [detail]}
        p = {"bizContent": orjson.dumps(biz).decode()}
    elif via == "dhl":  # Unified Push: shipments[], each with its status and events
        code, status, text = _DHL[step]
        event = {
            "timestamp": with_offset(t, catalog.OFFSET_CARRIER["dhl"]),
            "statusCode": code,
            "status": status,
            "description": text,
            "location": {"address": {"addressLocality": _site(o, step, hub)}},
        }
        p = {
            "shipments": [
                {
                    "id": o.tracking,
                    "service": "express",
                    "status": event,
                    "details": {"references": [{"number": o.oid, "type": "customer-reference"}]},
                    "events": [event],
                }
            ]
        }
    else:  # AfterShip: the tracking's state and its checkpoints (here the newest)
        tag, subtag = _AFTERSHIP[step]
        checkpoint = {
            "checkpoint_time": with_offset(t, catalog.OFFSET_CARRIER[o.carrier]),
            "tag": tag,
            "subtag": subtag,
            "message": subtag.replace("_", " "),
            "location": _site(o, step, hub),
        }
        p = {
            "event": "tracking_update",
            "event_id": uuid(o.seed, o.idx, _S_SCAN, _STEP[step], hub),
            "is_tracking_first_tag": False,
            "msg": {
                "id": token(BASE62, 24, o.seed, o.idx, _S_SCAN),
                "tracking_number": o.tracking,
                "slug": o.carrier,
                "tag": tag,
                "subtag": subtag,
                "order_id": o.oid,
                "checkpoints": [checkpoint],
            },
            "ts": _epoch(t) + 30,
        }
    return via, p, None


_S_SCAN = salt("scans")
_STEP = {
    **{"info": 0, "pickup": 1, "arrive": 2, "depart": 3},
    **{"ofd": 4, "delivered": 5, "exception": 6, "return": 7},
}


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
    "shopee_tracking": shopee_tracking,
}
