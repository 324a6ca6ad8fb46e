"""`channels.<name>.canonical_id`: whose id names a channel's orders (README "Identity").

The same payloads normalized under the shipped configuration (`oms`, every channel) and
under one where Pinduoduo, Shopify and Taobao name their orders by their own ids.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from schemas.config import DEFAULT_CONFIG, ConfigError, Settings, SourceSpec, load_settings
from schemas.event import DeadLetter, Event
from schemas.normalize import Normalizer
from tests.fixtures import providers as p

SHIPPED = load_settings()
CHANNEL_NAMED = ("pinduoduo", "shopify", "taobao")
ORIGIN = {"topic": "test", "partition": 0, "offset": 0}
PAY = SourceSpec(  # a gateway whose merchant reference is Taobao's tid (test_identity_replay)
    stream="payments",
    kind="gateway",
    time_format="naive",
    zone="Asia/Shanghai",
    identity={"namespace": "taobao", "strip": "-[0-9]{1,3}$"},
    fields={"order_id": ["out_trade_no"], "event_time": ["gmt_payment"]},
    statuses=[{"path": "trade_status", "map": {"TRADE_SUCCESS": "PAID"}}],
)


def channel_named(settings: Settings, *names: str) -> Settings:
    """`settings` with `canonical_id: channel` for `names`."""
    channels = {
        k: v.model_copy(update={"canonical_id": "channel"}) if k in names else v
        for k, v in settings.channels.items()
    }
    return settings.model_copy(update={"channels": channels})


def with_pay(settings: Settings) -> Settings:
    return settings.model_copy(update={"sources": {**settings.sources, "pay": PAY}})


DEFAULT = Normalizer(with_pay(SHIPPED))
CHANNEL = Normalizer(with_pay(channel_named(SHIPPED, *CHANNEL_NAMED)))


def envelope(source: str, payload: dict) -> bytes:
    stream = PAY.stream if source == "pay" else p.SOURCE_STREAM[source]
    return orjson.dumps(
        {"stream": stream, "source": source, "received_at": p.RECEIVED_AT, "payload": payload}
    )


def one(normalizer: Normalizer, source: str, payload: dict) -> Event:
    out = normalizer.normalize(envelope(source, payload), origin=ORIGIN)
    out = out if isinstance(out, tuple) else (out,)
    assert len(out) == 1 and isinstance(out[0], Event), out
    return out[0]


def wms(order_id: str) -> dict:
    return {"order_id": order_id, "event": "PACKED", "at": "2026-12-02T04:00:00Z"}


def pdd_oms(**extra: str) -> dict:
    return p.oms_order(
        p.PDD_OMS, "已支付", "2026-12-02T11:21:00+08:00", channel="pinduoduo", **extra
    )


# ------------------------------------------------------------------ a channel's own events
def test_a_channel_own_id_is_a_reference_by_default_and_the_order_id_in_channel_mode() -> None:
    order = p.pinduoduo_order(1, 1, "2026-12-02 11:20:31")
    default, mine = one(DEFAULT, "pinduoduo", order), one(CHANNEL, "pinduoduo", order)
    assert (default.order_id, default.ref) == (None, f"pinduoduo:{p.PDD_SN}")
    assert (mine.order_id, mine.ref, mine.channel) == (f"pinduoduo:{p.PDD_SN}", None, "pinduoduo")
    assert mine.claims == default.claims == ("PAID",)


def test_a_channel_fulfillment_in_channel_mode_carries_its_tracking_number_under_its_id() -> None:
    ful = p.shopify_fulfillment(1, p.UPS_NO, "2026-12-02T08:00:00-05:00")
    e = one(CHANNEL, "shopify", ful)
    assert (e.order_id, e.ref) == (f"shopify:{p.SHOPIFY_ID}", None)
    assert (e.tracking_no, e.tracking_valid) == (p.UPS_NO, True)  # so it registers the number


def test_only_the_channels_in_channel_mode_change() -> None:
    e = one(CHANNEL, "douyin", p.douyin_order(2, 1796176800))
    assert (e.order_id, e.ref) == (None, f"douyin:{p.DOUYIN_ID}")


# ------------------------------------------------------------------ the OMS
def test_the_oms_names_a_channel_mode_order_by_the_channel_id_and_links_its_own() -> None:
    order = pdd_oms(platform_order_id=p.PDD_SN)
    default, mine = one(DEFAULT, "oms", order), one(CHANNEL, "oms", order)
    assert (default.order_id, default.links) == (p.PDD_OMS, (f"pinduoduo:{p.PDD_SN}",))
    assert (mine.order_id, mine.ref) == (f"pinduoduo:{p.PDD_SN}", None)
    assert mine.links == (f"oms:{p.PDD_OMS}",)
    assert mine.channel == "pinduoduo"


def test_the_oms_without_platform_order_id_keeps_its_global_id() -> None:
    e = one(CHANNEL, "oms", pdd_oms())
    assert (e.order_id, e.ref, e.links) == (p.PDD_OMS, None, ())


def test_an_oms_refund_order_keeps_its_refund_id_under_the_channel_id() -> None:
    refund = f"REF-{p.PDD_OMS}-01"
    order = p.oms_order(
        refund,
        "已退款",
        "2026-12-04T10:00:00+08:00",
        channel="pinduoduo",
        platform_order_id=p.PDD_SN,
    )
    e = one(CHANNEL, "oms", order)
    assert (e.order_id, e.refund_id) == (f"pinduoduo:{p.PDD_SN}", refund)
    assert e.links == (f"oms:{p.PDD_OMS}",)


# ------------------------------------------------------------------ everyone else
def test_a_global_id_elsewhere_waits_for_the_oms_link_in_channel_mode() -> None:
    default, mine = one(DEFAULT, "wms", wms(p.PDD_OMS)), one(CHANNEL, "wms", wms(p.PDD_OMS))
    assert (default.order_id, default.ref) == (p.PDD_OMS, None)
    assert (mine.order_id, mine.ref) == (None, f"oms:{p.PDD_OMS}")
    # a payment reference (Alipay's out_trade_no holds the OMS id of a Taobao order)
    pay = one(CHANNEL, "alipay", p.alipay_paid())
    assert (pay.order_id, pay.ref, pay.claims) == (None, f"oms:{p.TAOBAO_OMS}", ("PAID",))
    # a global id of a channel in oms mode is still the order id
    dy = one(CHANNEL, "wms", wms(p.DOUYIN_OMS))
    assert (dy.order_id, dy.ref) == (p.DOUYIN_OMS, None)


def test_a_gateway_in_a_channel_mode_namespace_names_the_order_directly() -> None:
    body = {
        "out_trade_no": f"{p.TAOBAO_TID}-2",
        "trade_status": "TRADE_SUCCESS",
        "gmt_payment": "2026-12-02 10:00:05",
    }
    default = one(DEFAULT, "pay", body)
    mine = one(CHANNEL, "pay", body)
    assert (default.order_id, default.ref) == (None, f"taobao:{p.TAOBAO_TID}")
    assert (mine.order_id, mine.ref, mine.channel) == (f"taobao:{p.TAOBAO_TID}", None, "taobao")


def test_a_channel_mode_payload_that_is_bad_is_still_a_dead_letter() -> None:
    order = p.pinduoduo_order(1, 1, "2026-12-02 11:20:31", order_sn="not-an-sn")
    out = CHANNEL.normalize(envelope("pinduoduo", order), origin=ORIGIN)
    out = out if isinstance(out, tuple) else (out,)
    assert len(out) == 1 and isinstance(out[0], DeadLetter)
    assert out[0].reason == "invalid_order_id"


# ------------------------------------------------------------------ configuration
def test_an_unknown_canonical_id_names_the_key_and_the_file(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["channels"]["pinduoduo"]["canonical_id"] = "merchant"
    data["sources"] = str(DEFAULT_CONFIG.parent / "sources.yaml")
    path = tmp_path / "og.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    assert str(path) in str(e.value)
    assert "channels.pinduoduo.canonical_id" in str(e.value)
    data["channels"]["pinduoduo"]["canonical_id"] = "channel"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    assert load_settings(path).channels["pinduoduo"].canonical_id == "channel"
