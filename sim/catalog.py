"""Static facts of the simulated business: channels, gateways, carriers, delays, places.

Values follow /work/shared/spec/sources.md and ops/orderguard.yaml; the mixes and
delays are plausible guesses, kept here so they are easy to tune in one place.
"""

from __future__ import annotations

from sim.clock import MINUTE, SECOND

CODES = {
    "taobao": "TB",
    "pinduoduo": "PDD",
    "douyin": "DY",
    "shopee": "SP",
    "shopify": "SH",
    "web": "WEB",
}
CHANNEL_MIX = (
    ("taobao", 0.30),
    ("pinduoduo", 0.20),
    ("douyin", 0.20),
    ("shopee", 0.10),
    ("shopify", 0.10),
    ("web", 0.10),
)
CN_CHANNELS = frozenset({"taobao", "pinduoduo", "douyin"})
CURRENCY = {"shopee": "SGD", "shopify": "USD", "web": "EUR"}  # Chinese channels: CNY

GATEWAY_MIX = {
    "taobao": (("alipay", 0.7), ("wechatpay", 0.3)),
    "pinduoduo": (("wechatpay", 0.6), ("alipay", 0.4)),
    "douyin": (("alipay", 0.5), ("wechatpay", 0.5)),
    "shopee": (("stripe", 0.6), ("paypal", 0.4)),
    "shopify": (("stripe", 0.6), ("paypal", 0.4)),
    "web": (("stripe", 0.6), ("paypal", 0.4)),
}
CARRIER_MIX_CN = (("zto", 0.35), ("yto", 0.25), ("sf", 0.20), ("jt", 0.20))
CARRIER_MIX_INTL = (("dhl", 0.55), ("ups", 0.45))
DHL_VIA_AFTERSHIP = 0.2  # UPS always comes through AfterShip

PRICES_CN = (990, 1990, 2990, 3900, 4990, 5990, 8800, 9900, 12900, 19900, 29900, 59900, 129900)
PRICES_INTL = (1999, 2999, 4999, 8900, 12900, 24900)

# Sources and the stream that carries them.
STREAM = {
    **dict.fromkeys(("taobao", "pinduoduo", "douyin", "shopee", "shopify", "oms", "wms"), "orders"),
    **dict.fromkeys(("wechatpay", "alipay", "stripe", "paypal"), "payments"),
    **dict.fromkeys(("sf", "zto", "yto", "jt", "dhl", "aftership", "carrier_api"), "tracking"),
}
SOURCES = tuple(STREAM)

# Ingestion delay (received_at - event time) per source, ms range.
DELAY = {
    "taobao": (2 * SECOND, 20 * SECOND),
    "pinduoduo": (2 * SECOND, 20 * SECOND),
    "douyin": (2 * SECOND, 20 * SECOND),
    "shopee": (3 * SECOND, 30 * SECOND),
    "shopify": (1 * SECOND, 5 * SECOND),
    "oms": (1 * SECOND, 3 * SECOND),
    "wms": (1 * SECOND, 3 * SECOND),
    "wechatpay": (1 * SECOND, 5 * SECOND),
    "alipay": (1 * SECOND, 5 * SECOND),
    "stripe": (1 * SECOND, 4 * SECOND),
    "paypal": (1 * SECOND, 5 * SECOND),
    "sf": (20 * SECOND, 60 * SECOND),
    "zto": (1 * MINUTE, 3 * MINUTE),
    "yto": (2 * MINUTE, 5 * MINUTE),
    "jt": (30 * SECOND, 150 * SECOND),
    "dhl": (5 * SECOND, 20 * SECOND),
    "aftership": (30 * SECOND, 2 * MINUTE),
    "carrier_api": (0, 500),
}

# Fixed UTC offsets (minutes) of the sources that send RFC 3339 with an offset.
OFFSET_CN = 480
OFFSET_SHOPIFY = -300
OFFSET_CARRIER = {"dhl": 60, "ups": -300}

WAREHOUSE = {
    "taobao": ("HZ-01", "杭州市余杭区"),
    "pinduoduo": ("YW-01", "义乌市北苑街道"),
    "douyin": ("SH-02", "上海市嘉定区"),
    "shopee": ("SIN-01", "Singapore"),
    "shopify": ("LAX-01", "Los Angeles"),
    "web": ("AMS-02", "Amsterdam"),
}
HUBS_CN = (
    "杭州转运中心",
    "上海浦东集散中心",
    "广州白云转运中心",
    "北京顺义集散中心",
    "武汉转运中心",
    "成都双流转运中心",
    "义乌转运中心",
    "南京转运中心",
    "郑州航空港转运中心",
)
STATIONS_CN = ("上海浦东张江营业点", "南京江宁营业点", "北京朝阳望京营业点", "深圳南山科技园营业点")
HUBS_INTL = (
    "Leipzig Hub",
    "Amsterdam Gateway",
    "Louisville Worldport",
    "Cincinnati Hub",
    "Singapore Changi",
    "Hong Kong Hub",
)
