"""One simulated order: who bought what, how it is paid and shipped, and how it ends.

Orders are slotted (100k of them live at once) and drawn from their own RNG, so an
order's facts do not depend on which other orders or incidents exist.
"""

from __future__ import annotations

from random import Random

from sim import catalog
from sim.ids import mix, salt, tracking_number

NORMAL, CANCELLED, REFUNDED = "normal", "cancelled", "refunded"
CANCEL_SHARE = 0.05
REFUND_SHARE = 0.03
OMS_SHARE = 0.80

_S_EN = salt("oms-english-awaiting")


def pick(r: float, mix_: tuple[tuple[str, float], ...]) -> str:
    for name, weight in mix_:
        if r < weight:
            return name
        r -= weight
    return mix_[-1][0]


class Order:
    """Facts of one order. Times `tp` is relative to creation; `t0` is absolute (ms)."""

    __slots__ = (
        "amount",
        "carrier",
        "channel",
        "cn",
        "currency",
        "customer",
        "gateway",
        "has_oms",
        "idx",
        "oid",
        "outcome",
        "seed",
        "t0",
        "tp",
        "tracking",
        "variant",
        "via",
    )

    def __init__(self, idx: int, seed: int, rng: Random, customers: int) -> None:
        r = rng.random
        self.idx = idx
        self.seed = seed
        self.oid = ""  # assigned once every order's creation time is known
        self.t0 = 0
        self.tp = -1
        self.channel = ch = pick(r(), catalog.CHANNEL_MIX)
        self.cn = ch in catalog.CN_CHANNELS
        self.customer = int(r() * customers)
        prices = catalog.PRICES_CN if self.cn else catalog.PRICES_INTL
        self.amount = prices[int(r() * len(prices))]
        self.currency = "CNY" if self.cn else catalog.CURRENCY[ch]
        self.gateway = pick(r(), catalog.GATEWAY_MIX[ch])
        self.carrier = pick(r(), catalog.CARRIER_MIX_CN if self.cn else catalog.CARRIER_MIX_INTL)
        via = self.carrier
        if via == "ups" or (via == "dhl" and r() < catalog.DHL_VIA_AFTERSHIP):
            via = "aftership"
        self.via = via
        self.tracking = tracking_number(self.carrier, idx, seed)
        u = r()
        self.outcome = CANCELLED if u < CANCEL_SHARE else REFUNDED if u > 1 - REFUND_SHARE else NORMAL
        # Own-site orders live in the OMS; refunds are only visible through it (REF-... orders).
        self.has_oms = r() < OMS_SHARE or ch == "web" or self.outcome == REFUNDED
        # Producer quirks fixed per order: ZTO orderId present, douyin tracking_number key,
        # wechatpay event_id present, English OMS saying "Awaiting Payment".
        self.variant = mix(seed, idx, _S_EN)

    @property
    def amount_str(self) -> str:
        return f"{self.amount // 100}.{self.amount % 100:02d}"

    def flag(self, bit: int, percent: int) -> bool:
        """A stable per-order yes/no with the given chance (bit selects an independent draw)."""
        return (self.variant >> (bit * 7)) % 100 < percent
