"""One simulated order: who bought what, how it is paid and shipped, and how it ends.

Orders are slotted (100k of them live at once) and drawn, with their lives, from the
run's life RNG in index order; incidents and open-order cuts draw elsewhere, so they
never change another order's facts.
"""

from __future__ import annotations

from random import Random

from sim import catalog
from sim.ids import BASE62, token, tracking_number

NORMAL, CANCELLED, REFUNDED = "normal", "cancelled", "refunded"
CANCEL_SHARE = 0.05
REFUND_SHARE = 0.03
OMS_SHARE = 0.80


def pick(r: float, mix_: tuple[tuple[str, float], ...]) -> str:
    for name, weight in mix_:
        if r < weight:
            return name
        r -= weight
    return mix_[-1][0]


class Order:
    """Facts of one order. `t0` (creation) is absolute, `tp` (payment) relative to it, in ms."""

    __slots__ = (
        "amount",
        "amount_str",
        "awaiting",
        "buyer",
        "carrier",
        "channel",
        "cn",
        "currency",
        "customer",
        "dy_tracking_key",
        "gateway",
        "has_oms",
        "idx",
        "oid",
        "outcome",
        "seed",
        "t0",
        "tp",
        "tracking",
        "via",
        "with_ref",
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
        self.outcome = NORMAL
        if u < CANCEL_SHARE:
            self.outcome = CANCELLED
        elif u > 1 - REFUND_SHARE:
            self.outcome = REFUNDED
        # Own-site orders live in the OMS; refunds are only visible through it (REF-... orders).
        self.has_oms = r() < OMS_SHARE or ch == "web" or self.outcome == REFUNDED
        self.amount_str = f"{self.amount // 100}.{self.amount % 100:02d}"
        self.buyer = "AA" + token(BASE62, 7, seed, self.customer) if ch == "taobao" else ""
        # Producer quirks, fixed per order.
        self.with_ref = r() < 0.4  # ZTO scans usually omit orderId
        self.awaiting = r() < 0.3  # English OMS says "Awaiting Payment" rather than "Pending"
        # Since an upstream upgrade some douyin producers name the field tracking_number.
        self.dy_tracking_key = "tracking_number" if r() < 0.2 else "logistics_no"
