"""The traffic simulator: deterministic, shaped like the real sources, and normal unless told.

A small independent checker (`violations`) re-derives the stuck-state deadlines of
ops/orderguard.yaml from the raw envelopes, so "a normal day trips nothing" and "this
incident trips that" are checked without the pipeline.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from sim import INCIDENTS, generate, incident_windows, write_jsonl

START = datetime(2026, 1, 27, tzinfo=UTC)
END_MS = int((START + timedelta(hours=24)).timestamp() * 1000)
MIN, HOUR = 60_000, 3_600_000
CN = timezone(timedelta(hours=8))
ALL_SOURCES = {
    "taobao", "pinduoduo", "douyin", "shopee", "shopify", "oms", "wms",
    "wechatpay", "alipay", "stripe", "paypal",
    "sf", "zto", "yto", "jt", "dhl", "aftership", "carrier_api",
}  # fmt: skip
CARRIERS = ("sf", "zto", "yto", "jt", "dhl", "aftership")
GATEWAYS = ("wechatpay", "alipay", "stripe", "paypal")
OMS_PENDING = ("待支付", "Pending", "Awaiting Payment")
OMS_TERMINAL = ("已完成", "Completed", "已取消", "支付超时关闭", "Cancelled", "已退款", "Refunded")
PATTERNS = {
    name: re.compile(c["pattern"])
    for name, c in yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "ops" / "orderguard.yaml").read_text()
    )["carriers"].items()
}


@cache
def day(
    orders: int = 300, seed: int = 3, incidents: tuple[str, ...] = (), open_share: float = 0.0
) -> tuple[dict, ...]:
    return tuple(
        generate(
            orders=orders,
            seed=seed,
            start=START,
            incidents=frozenset(incidents),
            open_share=open_share,
        )
    )


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def cn_ms(naive: str) -> int:
    return int(datetime.strptime(naive, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CN).timestamp() * 1000)


def recv(env: dict) -> int:
    return ms(env["received_at"])


def window(name: str) -> tuple[int, int | None]:
    a, b = incident_windows(START, 24)[name]
    return int(a.timestamp() * 1000), None if b is None else int(b.timestamp() * 1000)


def envelopes(envs, *sources: str) -> list[dict]:
    return [e for e in envs if "__raw__" not in e and (not sources or e["source"] in sources)]


# ---------------------------------------------------------------- payload times by source
NAIVE, EPOCH, ISO = "naive", "epoch", "iso"
TIME_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "taobao": (NAIVE, ("created", "pay_time", "modified")),
    "pinduoduo": (NAIVE, ("created_time", "pay_time", "updated_at")),
    "douyin": (EPOCH, ("create_time", "pay_time", "update_time")),
    "shopee": (EPOCH, ("data.update_time",)),
    "shopify": (ISO, ("created_at", "updated_at", "cancelled_at")),
    "oms": (ISO, ("updated_at",)),
    "wms": (ISO, ("at",)),
    "wechatpay": (ISO, ("resource.success_time", "create_time")),
    "alipay": (NAIVE, ("gmt_create", "gmt_payment", "notify_time", "gmt_refund", "gmt_close")),
    "stripe": (EPOCH, ("created",)),
    "paypal": (ISO, ("create_time",)),
    "sf": (NAIVE, ("Body.WaybillRoute.0.acceptTime",)),
    "zto": (NAIVE, ("scanDate",)),
    "yto": (NAIVE, ("acceptTime",)),
    "jt": (NAIVE, ("bizContent.details.0.scanTime",)),
    "dhl": (ISO, ("shipments.0.status.timestamp",)),
    "aftership": (ISO, ("msg.checkpoints.0.checkpoint_time",)),
    "carrier_api": (ISO, ("at",)),
}
ZONE_SUFFIX = {  # what each RFC 3339 source ends its times with
    "shopify": r"-05:00",
    "oms": r"(\+08:00|Z)",
    "wms": r"Z",
    "wechatpay": r"\+08:00",
    "paypal": r"\.\d{3}Z",
    "dhl": r"\+01:00",
    "aftership": r"(\+01:00|-05:00)",
    "carrier_api": r"Z",
}


def at(payload: dict, path: str) -> object:
    """The value at a dotted path (integers index lists; JSON text fields are decoded)."""
    v: object = payload
    for key in path.split("."):
        if isinstance(v, str) and v.startswith("{"):
            v = json.loads(v)  # J&T's bizContent
        if isinstance(v, list):
            v = v[int(key)] if key.isdigit() and int(key) < len(v) else None
        else:
            v = v.get(key) if isinstance(v, dict) else None
    return v


def raw_times(env: dict) -> list[object]:
    out = []
    for path in TIME_FIELDS[env["source"]][1]:
        v = at(env["payload"], path)
        if v is not None:
            out.append(v)
    return out


def event_times(env: dict) -> list[int]:
    kind = TIME_FIELDS[env["source"]][0]
    conv = {NAIVE: cn_ms, EPOCH: lambda s: s * 1000, ISO: ms}[kind]
    return [conv(v) for v in raw_times(env)]


# ---------------------------------------------------------------- an independent checker
GATEWAY_OK = {"SUCCESS", "TRADE_SUCCESS", "payment_intent.succeeded", "PAYMENT.CAPTURE.COMPLETED"}
GATEWAY_FAIL = {"PAYERROR", "payment_intent.payment_failed", "PAYMENT.CAPTURE.DENIED"}
OMS_PAID = {
    "已支付",
    "待发货",
    "已发货",
    "已签收",
    "已完成",
    "Paid",
    "Shipped",
    "Delivered",
    "Completed",
}
OMS_DELIVERED = {"已签收", "已完成", "Delivered", "Completed"}
OMS_REFUNDED = {"已退款", "Refunded"}
DELIVERED = {"80", "签收", "SIGNED", "快件签收", "delivered", "Delivered"}
NOT_A_SCAN = {"pre-transit", "InfoReceived"}
SCAN_FIELDS = {  # source -> (tracking no, status): each push carries one scan here
    "sf": ("Body.WaybillRoute.0.mailno", "Body.WaybillRoute.0.opCode"),
    "zto": ("billCode", "scanType"),
    "yto": ("mailNo", "infoContent"),
    "jt": ("bizContent.billCode", "bizContent.details.0.scanType"),
    "dhl": ("shipments.0.id", "shipments.0.status.statusCode"),
    "aftership": ("msg.tracking_number", "msg.tag"),
}


def scan_of(env: dict) -> tuple[str, str]:
    tn, st = SCAN_FIELDS[env["source"]]
    return at(env["payload"], tn), at(env["payload"], st)  # type: ignore[return-value]


def gateway_of(env: dict) -> tuple[str, str]:
    """(the merchant's order reference, the status)."""
    p, s = env["payload"], env["source"]
    if s == "stripe":
        return p["data"]["object"]["metadata"]["order_id"], p["type"]
    if s == "paypal":
        return p["resource"]["custom_id"], p["event_type"]
    if s == "wechatpay":
        r = p["resource"]
        return r["out_trade_no"], r.get("trade_state") or p["event_type"]
    return p["out_trade_no"], p["trade_status"]


def violations(envs, clock: int | None = None) -> Counter:
    """Alert situations by type, from received_at gaps, judged at `clock` (default: the end)."""
    envs = envelopes(envs)
    clock = clock if clock is not None else max(recv(e) for e in envs)
    owner = {
        e["payload"]["tracking_no"]: e["payload"]["order_id"]
        for e in envelopes(envs, "wms")
        if e["payload"]["event"] == "LABEL_PRINTED"
    }
    o: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    found: Counter = Counter()
    for e in envs:
        s, p, r = e["source"], e["payload"], recv(e)
        if s != "carrier_api" and any(t > r + 5 * MIN for t in event_times(e)):
            found["CLOCK_SKEW"] += 1
        if s in GATEWAYS:
            oid, st = gateway_of(e)
            o[oid]["pay"].append(r) if st in GATEWAY_OK else None
            found.update(["PAYMENT_FAILURE"] if st in GATEWAY_FAIL else [])
        elif s == "oms":
            oid = p["order_id"]
            if oid.startswith("REF-"):
                o[oid[4:-3]]["refunded" if p["status"] in OMS_REFUNDED else "refund"].append(r)
            else:
                o[oid]["oms"].append(r)
                o[oid]["oms_paid"].append(r) if p["status"] in OMS_PAID else None
                o[oid]["oms_delivered"].append(r) if p["status"] in OMS_DELIVERED else None
        elif s == "wms" and p["event"] == "LABEL_PRINTED":
            o[p["order_id"]]["label"].append(r)
        elif s in CARRIERS:
            tracking, status = scan_of(e)
            if status not in NOT_A_SCAN:
                o[owner[tracking]]["scan"].append(r)
                o[owner[tracking]]["delivered"].append(r) if status in DELIVERED else None

    def late(since: int, by: list[int], limit: int) -> bool:
        """Nothing in `by` arrived before the deadline (which the clock has passed)."""
        return min(by, default=clock) - since >= limit

    for x in o.values():
        pay, label, scans = min(x["pay"], default=None), min(x["label"], default=None), x["scan"]
        if pay is not None and x["oms"] and late(pay, x["oms_paid"], 2 * MIN):
            found["PAYMENT_NOT_REFLECTED"] += 1
        if pay is not None and not x["refund"] and late(pay, x["label"], 4 * HOUR):
            found["SHIPMENT_DELAYED"] += 1
        if label is not None and late(label, scans, 4 * HOUR):
            found["PICKUP_MISSING"] += 1
        if scans and not x["delivered"]:
            scans = [*scans, clock]
        scans.sort()
        if any(b - a >= 12 * HOUR for a, b in pairwise(scans)):
            found["TRACKING_STALLED"] += 1
        if x["delivered"] and x["oms"] and late(min(x["delivered"]), x["oms_delivered"], 2 * HOUR):
            found["DELIVERY_NOT_REFLECTED"] += 1
        if x["refund"] and late(min(x["refund"]), x["refunded"], 24 * HOUR):
            found["REFUND_STUCK"] += 1
    return found


# ---------------------------------------------------------------- determinism and shape
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    paths = [tmp_path / f"{i}.jsonl" for i in range(3)]
    for path, seed in zip(paths, (5, 5, 6), strict=True):
        n = write_jsonl(path, generate(orders=120, seed=seed, start=START))
        assert n == len(path.read_bytes().splitlines()) > 1000
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b
    assert a != c


def test_sorted_by_received_at_in_utc_with_milliseconds():
    envs = day()
    stamps = [e["received_at"] for e in envs]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", s) for s in stamps)
    assert stamps == sorted(stamps)
    assert len(set(stamps)) > len(stamps) // 2  # really spread in time, not one instant


def test_every_source_appears_on_its_stream():
    envs = day()
    assert {e["source"] for e in envs} == ALL_SOURCES
    streams = {e["source"]: e["stream"] for e in envs}
    assert {s for s, st in streams.items() if st == "payments"} == {
        "wechatpay", "alipay", "stripe", "paypal"
    }  # fmt: skip
    assert {s for s, st in streams.items() if st == "tracking"} == {
        "sf", "zto", "yto", "jt", "dhl", "aftership", "carrier_api"
    }  # fmt: skip
    assert all(set(e) <= {"stream", "source", "received_at", "event_id", "payload"} for e in envs)


def test_event_ids_only_where_providers_have_them():
    envs = day()
    by_source = defaultdict(set)
    for e in envs:
        by_source[e["source"]].add("event_id" in e)
    assert {s for s, has in by_source.items() if True in has} == {"wechatpay", "stripe", "paypal"}
    assert by_source["wechatpay"] == {True}  # the v3 notification's id, always
    for e in envelopes(envs, "stripe", "paypal"):
        assert e["event_id"] == e["payload"]["id"]
        assert e["event_id"].startswith("evt_" if e["source"] == "stripe" else "WH-")


def test_tracking_numbers_match_their_carrier():
    envs = day()
    seen = 0
    for e in envs:
        p, s = e["payload"], e["source"]
        if s in ("wms", "oms") and p["tracking_no"] is not None:
            carrier, number = p["carrier"], p["tracking_no"]
        elif s in ("sf", "zto", "yto", "jt", "dhl"):
            carrier, number = s, scan_of(e)[0]
        elif s == "aftership":
            carrier, number = p["msg"]["slug"], p["msg"]["tracking_number"]
        else:
            continue
        assert PATTERNS[carrier].fullmatch(number), (s, carrier, number)
        seen += 1
    assert seen > 1000
    slugs = {e["payload"]["msg"]["slug"] for e in envelopes(envs, "aftership")}
    assert slugs == {"ups", "dhl"}


def test_payload_times_use_each_sources_format():
    envs = day()
    checked = Counter()
    for e in envelopes(envs):
        kind = TIME_FIELDS[e["source"]][0]
        for v in raw_times(e):
            if kind == NAIVE:
                assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", v), (e["source"], v)
            elif kind == EPOCH:
                assert type(v) is int and 1.7e9 < v < 1.8e9, (e["source"], v)
            else:
                pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d" + ZONE_SUFFIX[e["source"]]
                assert re.fullmatch(pattern, v), (e["source"], v)
            checked[e["source"]] += 1
    assert set(checked) == ALL_SOURCES


def test_wechat_amounts_in_fen_and_channel_fits_gateway_and_carrier():
    envs = day()
    for e in envelopes(envs, "wechatpay"):
        assert type(e["payload"]["resource"]["amount"]["total"]) is int
    gateway = {gateway_of(e)[0]: e["source"] for e in envelopes(envs, *GATEWAYS)}
    carrier = {
        e["payload"]["order_id"]: e["payload"]["carrier"]
        for e in envelopes(envs, "wms")
        if e["payload"]["carrier"]
    }
    assert gateway and carrier
    for oid, gw in gateway.items():
        cn = oid.startswith(("TB", "PDD", "DY"))
        assert gw in ({"alipay", "wechatpay"} if cn else {"stripe", "paypal"}), oid
    for oid, c in carrier.items():
        cn = oid.startswith(("TB", "PDD", "DY"))
        assert c in ({"sf", "zto", "yto", "jt"} if cn else {"dhl", "ups"}), oid


def test_order_ids_follow_the_seeds_rule():
    envs = day()
    ids = {e["payload"]["order_id"] for e in envelopes(envs, "oms")}
    plain = {i for i in ids if not i.startswith("REF-")}
    refs = ids - plain
    assert all(re.fullmatch(r"(TB|PDD|DY|SP|SH|WEB)202601(27|28)\d{5}", i) for i in plain), plain
    assert refs and all(re.fullmatch(r"REF-(.+)-01", r).group(1) in plain for r in refs)


CHANNEL_IDS = {  # source -> (id path, the channel's own id form)
    "taobao": ("tid", r"3[0-9]{18}"),
    "pinduoduo": ("order_sn", r"[0-9]{6}-[0-9]{15}"),
    "douyin": ("order_id", r"69[0-9]{17}"),
    "shopee": ("data.ordersn", r"[0-9]{6}[0-9A-Z]{8}"),
    "shopify": ("name", r"#[0-9]+"),  # linked by Shopify's numeric `id`
}


def test_each_system_names_the_order_by_its_own_id_and_the_oms_links_them():
    envs = day()
    links = {
        (p["channel"], p["platform_order_id"]): p["order_id"]
        for e in envelopes(envs, "oms")
        if (p := e["payload"])["platform_order_id"] is not None
    }
    assert links and all(ch != "web" for ch, _ in links)
    native = legacy = 0
    for source, (path, form) in CHANNEL_IDS.items():
        for e in envelopes(envs, source):
            value = str(at(e["payload"], path))
            if re.fullmatch(form, value):
                native += 1
                if source == "shopify":
                    value = str(e["payload"]["id"])
                assert (source, value) in links, (source, value)  # the OMS links every one
            else:  # an order whose OMS is off the feed: the sync wrote the OMS id
                legacy += 1
                oid = value
                assert re.fullmatch(r"(TB|PDD|DY|SP|SH)202601(27|28)\d{5}", oid), oid
                assert oid not in links.values()
    assert native > 4 * legacy > 0
    linked_ids = set(links.values())
    for e in envelopes(envs, *GATEWAYS):  # the merchant's reference is the OMS id
        ref = gateway_of(e)[0]
        assert re.fullmatch(r"(TB|PDD|DY|SP|SH|WEB)202601(27|28)\d{5}", ref)
    assert linked_ids & {gateway_of(e)[0] for e in envelopes(envs, *GATEWAYS)}


def test_stripe_sends_the_charge_beside_the_payment_intent():
    events = [e["payload"] for e in envelopes(day(), "stripe")]
    intents = {
        p["data"]["object"]["id"]: p for p in events if p["type"] == "payment_intent.succeeded"
    }
    charges = [p for p in events if p["type"] == "charge.succeeded"]
    assert intents and len(charges) == len(intents)
    for c in charges:
        obj = c["data"]["object"]
        assert obj["payment_intent"] in intents  # metadata copied at confirmation
        assert obj["metadata"] == intents[obj["payment_intent"]]["data"]["object"]["metadata"]
        assert intents[obj["payment_intent"]]["data"]["object"]["latest_charge"] == obj["id"]


def test_shopee_pushes_status_and_tracking_number_apart():
    pushes = [e["payload"] for e in envelopes(day(), "shopee")]
    codes = Counter(p["code"] for p in pushes)
    assert set(codes) == {3, 4} and codes[3] > codes[4] > 0
    status = [p["data"] for p in pushes if p["code"] == 3]
    assert all(set(d) == {"ordersn", "status", "update_time"} for d in status)
    wms = {
        e["payload"]["tracking_no"]
        for e in envelopes(day(), "wms")
        if e["payload"]["event"] == "LABEL_PRINTED"
    }
    assert all(p["data"]["tracking_no"] in wms for p in pushes if p["code"] == 4)


def test_zto_scans_often_omit_the_order_id():
    scans = envelopes(day(), "zto")
    without = sum("orderId" not in e["payload"] for e in scans)
    assert 0.3 < without / len(scans) < 0.9


def test_lifecycle_mix_and_day_curve():
    envs = day(orders=2000, seed=9)
    oms = envelopes(envs, "oms")
    orders = {e["payload"]["order_id"] for e in oms if not e["payload"]["order_id"].startswith("R")}
    cancelled = {
        e["payload"]["order_id"]
        for e in oms
        if e["payload"]["status"] in ("已取消", "支付超时关闭", "Cancelled")
    }
    refunded = {e["payload"]["order_id"] for e in oms if e["payload"]["status"] in OMS_REFUNDED}
    assert 0.75 < len(orders) / 2000 < 0.9  # ~80% of orders reach the OMS (all web ones)
    assert 0.03 < len(cancelled) / len(orders) < 0.08
    assert 0.015 < len(refunded) / 2000 < 0.05
    created = Counter(
        datetime.fromisoformat(e["payload"]["updated_at"]).astimezone(CN).hour
        for e in oms
        if e["payload"]["status"] in OMS_PENDING and not e["payload"]["order_id"].startswith("R")
    )
    night = sum(created[h] for h in (2, 3, 4, 5)) / 4
    assert created[10] > 5 * night and created[21] > 5 * night


# ---------------------------------------------------------------- normal means normal
def test_a_normal_day_trips_no_threshold():
    for seed in (3, 4):
        envs = day(orders=300, seed=seed)
        assert violations(envs) == Counter()
    assert not [e for e in day() if "__raw__" in e]


def test_the_checker_would_see_a_stuck_order():
    envs = list(day())
    label = next(
        e for e in envs if e["source"] == "wms" and e["payload"]["event"] == "LABEL_PRINTED"
    )
    tracking = label["payload"]["tracking_no"]
    no_scans = [e for e in envs if not (e["source"] in CARRIERS and scan_of(e)[0] == tracking)]
    assert len(no_scans) < len(envs)
    assert violations(no_scans) == Counter(PICKUP_MISSING=1)


def test_no_event_time_ahead_of_ingestion_in_a_normal_day():
    checked = 0
    for e in envelopes(day()):
        for t in event_times(e):
            assert t <= recv(e), e
            checked += 1
    assert checked > 5000


def test_open_orders_stop_just_before_a_deadline_at_the_end():
    envs = day(orders=400, seed=5, open_share=1.0)
    assert max(recv(e) for e in envs) <= END_MS
    assert violations(envs, clock=END_MS) == Counter()
    oms = envelopes(envs, "oms")
    final = {e["payload"]["order_id"]: e["payload"]["status"] for e in oms}
    still_open = [s for s in final.values() if s not in OMS_TERMINAL]
    assert len(still_open) > 0.8 * len(final)
    stages = Counter(final.values())
    assert stages["待支付"] and stages["已支付"] and stages["已发货"] and stages["已签收"]


def test_open_share_cuts_that_share_and_leaves_the_rest_whole():
    def done(envs) -> set[str]:
        return {
            e["payload"]["order_id"]
            for e in envelopes(envs, "oms")
            if e["payload"]["status"] in ("已完成", "Completed")
        }

    whole, half = day(orders=400, seed=5), day(orders=400, seed=5, open_share=0.5)
    assert 0.35 < len(done(half)) / len(done(whole)) < 0.65


# ---------------------------------------------------------------- incidents
def test_incident_names_and_unknown_ones_rejected():
    assert set(INCIDENTS) == {
        "lost_payment_callback", "field_rename", "carrier_wrong_timezone", "carrier_api_outage",
        "channel_error_storm", "duplicate_webhooks", "out_of_order_scans", "reship_delivered",
        "flash_sale", "stalled_tracking", "delivery_not_reflected",
    }  # fmt: skip
    assert all(isinstance(v, str) and v for v in INCIDENTS.values())
    with pytest.raises(ValueError, match="unknown incidents"):
        generate(orders=1, seed=1, start=START, incidents=frozenset({"meteor"}))


@pytest.mark.parametrize("name", sorted(INCIDENTS))
def test_every_incident_changes_the_output(name):
    assert day(incidents=(name,)) != day()


def test_lost_payment_callback_leaves_the_oms_unpaid():
    envs = day(orders=600, incidents=("lost_payment_callback",))
    paid = {gateway_of(e)[0] for e in envelopes(envs, *GATEWAYS)}
    oms = defaultdict(list)
    for e in envelopes(envs, "oms"):
        oms[e["payload"]["order_id"]].append(e["payload"]["status"])
    lost = [o for o in paid if o in oms and not {"已支付", "待发货", "Paid"} & set(oms[o])]
    assert 0.02 < len(lost) / len(paid) < 0.09
    assert all(oms[o][0] in OMS_PENDING for o in lost)
    assert violations(envs) == Counter(PAYMENT_NOT_REFLECTED=len(lost))


def test_field_rename_from_mid_period_on_douyin_only():
    mid, _ = window("field_rename")
    envs = day(incidents=("field_rename",))
    douyin = envelopes(envs, "douyin")
    after = [e for e in douyin if e["payload"]["update_time"] * 1000 >= mid]
    before = [e for e in douyin if e["payload"]["update_time"] * 1000 < mid]
    assert after and before
    names = {"logistics_no", "tracking_number"}
    assert all("waybill_no" in e["payload"] and not names & set(e["payload"]) for e in after)
    assert all(names & set(e["payload"]) for e in before)
    assert any(e["payload"]["waybill_no"] for e in after if e["payload"]["order_status"] == 3)
    others = {e["source"] for e in envs if "waybill_no" in str(e.get("payload"))}
    assert others == {"douyin"}
    assert [e for e in envs if recv(e) < mid] == [e for e in day() if recv(e) < mid]


def test_carrier_wrong_timezone_runs_yto_8_hours_ahead():
    mid, _ = window("carrier_wrong_timezone")
    envs = day(incidents=("carrier_wrong_timezone",))
    ahead = {id(e): event_times(e)[0] - recv(e) for e in envelopes(envs, "yto")}
    skewed = [e for e in envelopes(envs, "yto") if ahead[id(e)] > 0]
    assert skewed and all(7.5 * HOUR < ahead[id(e)] < 8 * HOUR for e in skewed)
    assert all(recv(e) >= mid for e in skewed)
    assert all(ahead[id(e)] > 0 for e in envelopes(envs, "yto") if recv(e) > mid + 5 * MIN)
    assert violations(envs) == Counter(CLOCK_SKEW=len(skewed))


def test_carrier_api_outage_fails_jt_calls_in_its_window_only():
    a, b = window("carrier_api_outage")
    assert b is not None
    envs = day(incidents=("carrier_api_outage",))
    calls = envelopes(envs, "carrier_api")
    inside = [
        e["payload"]
        for e in calls
        if a <= ms(e["payload"]["at"]) < b and e["payload"]["carrier"] == "jt"
    ]
    assert len(inside) >= 20
    assert all(not p["ok"] and p["error"] and p["latency_ms"] >= 3000 for p in inside)
    others = [e["payload"] for e in calls if e["payload"] not in inside]
    assert others and all(
        p["ok"] and p["error"] is None and 100 <= p["latency_ms"] < 800 for p in others
    )
    labels = [e for e in envelopes(envs, "wms") if e["payload"]["event"] == "LABEL_PRINTED"]
    assert not [e for e in labels if e["payload"]["carrier"] == "jt" and a <= recv(e) < b]
    assert violations(envs) == Counter()  # labels wait out the outage but stay within 4 h


def test_channel_error_storm_breaks_pinduoduo_in_its_window(tmp_path):
    a, b = window("channel_error_storm")
    assert b is not None
    envs = day(incidents=("channel_error_storm",))
    raw = [e for e in envs if "__raw__" in e]
    unknown = [
        e for e in envelopes(envs, "pinduoduo") if e["payload"]["order_status"] not in (1, 2, 3)
    ]
    in_window = [
        e for e in envs if a <= recv(e) < b and ("__raw__" in e or e["source"] == "pinduoduo")
    ]
    assert raw and unknown
    assert all(a <= recv(e) < b for e in raw + unknown)
    assert 0.15 < (len(raw) + len(unknown)) / len(in_window) < 0.45
    path = tmp_path / "storm.jsonl"
    assert write_jsonl(path, envs) == len(envs)
    broken = 0
    for line in path.read_bytes().splitlines():
        try:
            json.loads(line)
        except ValueError:
            broken += 1
    assert broken == len(raw)


def test_incident_hours_place_the_windows_in_the_first_hours():
    """The live demo's backlog: two days of traffic, incidents in the first day only."""
    envs = generate(
        orders=300,
        seed=3,
        start=START,
        hours=48,
        incidents=frozenset({"channel_error_storm"}),
        incident_hours=24,
    )
    raw = [recv(e) for e in envs if "__raw__" in e]
    a, b = window("channel_error_storm")  # where a 24-hour period puts it
    assert raw and all(a <= t < b for t in raw)  # type: ignore[operator]


def test_duplicate_webhooks_are_identical_and_seconds_apart():
    envs = day(incidents=("duplicate_webhooks",))
    hooks = {*GATEWAYS, *CARRIERS}
    seen: dict[tuple, int] = {}
    gaps = []
    for e in envelopes(envs, *hooks):
        key = (e["source"], e.get("event_id"), json.dumps(e["payload"], sort_keys=True))
        if key in seen:
            gaps.append((e["source"], recv(e) - seen[key]))
        seen[key] = recv(e)
    assert gaps and all(s in hooks and 1000 <= g <= 30_000 for s, g in gaps)
    total = len(envelopes(envs, *hooks)) - len(gaps)
    assert 0.06 < len(gaps) / total < 0.14
    assert violations(envs) == Counter()


def scan_orders(envs) -> dict[str, list[tuple[int, int]]]:
    """Tracking number -> [(received, event time)] in received order."""
    out = defaultdict(list)
    for e in envelopes(envs, *CARRIERS):
        out[scan_of(e)[0]].append((recv(e), event_times(e)[0]))
    return out


def test_out_of_order_scans_differ_from_event_time_order():
    def shuffled(envs) -> list[str]:
        return [
            n for n, s in scan_orders(envs).items() if [t for _, t in s] != sorted(t for _, t in s)
        ]

    assert shuffled(day()) == []
    envs = day(incidents=("out_of_order_scans",))
    parcels, scans = shuffled(envs), scan_orders(envs)
    assert 0.1 < len(parcels) / len(scans) < 0.3
    for n in parcels:
        pairs = scans[n]
        late = [(r1, r2) for (r1, t1), (r2, t2) in pairwise(pairs) if t2 < t1]
        assert late and all(r2 - r1 <= 3 * MIN for r1, r2 in late)
    assert violations(envs) == Counter()


def test_reship_follows_a_delivery():
    envs = day(orders=2000, seed=9, incidents=("reship_delivered",))
    wms = envelopes(envs, "wms")
    reships = [e for e in wms if e["payload"]["event"] == "RESHIP_REQUESTED"]
    tracking = {
        e["payload"]["order_id"]: e["payload"]["tracking_no"]
        for e in wms
        if e["payload"]["tracking_no"]
    }
    delivered = {
        scan_of(e)[0]: recv(e) for e in envelopes(envs, *CARRIERS) if scan_of(e)[1] in DELIVERED
    }
    assert 5 <= len(reships) <= 40
    assert all(recv(e) > delivered[tracking[e["payload"]["order_id"]]] + HOUR for e in reships)
    assert [
        e
        for e in envelopes(day(orders=2000, seed=9), "wms")
        if e["payload"]["event"] == "RESHIP_REQUESTED"
    ] == []


def test_flash_sale_is_ten_times_the_rate_for_an_hour():
    a, b = window("flash_sale")
    assert b is not None
    assert b - a == HOUR

    def created(envs) -> int:
        return len(
            {
                e["payload"]["order_id"]
                for e in envelopes(envs, "oms")
                if a <= recv(e) < b and e["payload"]["status"] in OMS_PENDING
            }
        )

    flash_day = day(orders=2000, seed=9, incidents=("flash_sale",))
    base, flash = created(day(orders=2000, seed=9)), created(flash_day)
    assert base > 20 and 7 * base < flash < 13 * base
    assert violations(flash_day) == Counter()


def test_stalled_tracking_goes_quiet_for_20_hours_after_pickup():
    envs = day(orders=600, incidents=("stalled_tracking",))
    stalls = [
        n
        for n, s in scan_orders(envs).items()
        if any(b - a >= 19.5 * HOUR for (a, _), (b, _) in pairwise(s))
    ]
    assert 0.005 < len(stalls) / len(scan_orders(envs)) < 0.05
    assert violations(envs) == Counter(TRACKING_STALLED=len(stalls))


def test_delivery_not_reflected_keeps_the_oms_in_shipped():
    envs = day(orders=600, incidents=("delivery_not_reflected",))
    found = violations(envs)
    assert set(found) == {"DELIVERY_NOT_REFLECTED"}
    shipped = {
        e["payload"]["order_id"]
        for e in envelopes(envs, "oms")
        if e["payload"]["status"] in ("已发货", "Shipped")
    }
    assert 0.01 < found["DELIVERY_NOT_REFLECTED"] / len(shipped) < 0.06
