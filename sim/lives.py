"""Order lifecycles: what happens to one order, when, and when each source reports it.

A life is built relative to the order's creation (t = 0) so the generator can place it
anywhere afterwards (the day curve, or a cut-off position for open orders). Every gap
between the events of a normal life stays inside the alert thresholds of
ops/orderguard.yaml (OMS reflects payment in seconds, label ≤ 3.4 h after payment,
pickup ≤ 3 h after the label, carrier scans ≤ 9.5 h apart, OMS reflects delivery
≤ 1 h, refunds settle ≤ 11 h), so a normal day raises no alert.

An event is a list [received_ms, event_ms, kind, arg]; payloads are built from it
only when written (see sim.payloads), which keeps a million pending events small.
"""

from __future__ import annotations

from random import Random

from sim.catalog import DELAY
from sim.clock import DAY, HOUR, MINUTE, SECOND
from sim.model import CANCELLED, REFUNDED, Order

Ev = list  # [received_ms, event_ms, kind, arg]

STAGES = {
    "taobao": frozenset({"created", "paid", "shipped", "completed", "cancelled", "refunded"}),
    "pinduoduo": frozenset({"paid", "shipped", "completed", "refund_requested", "refunded"}),
    "douyin": frozenset({"created", "paid", "preparing", "shipped", "completed", "cancelled"}),
    "shopee": frozenset(
        {"created", "paid", "shipped", "picked", "delivered", "completed", "cancelled"}
    ),
    "shopify": frozenset({"created", "paid", "shipped", "cancelled", "refunded"}),
    "web": frozenset(),  # the own site has no channel feed: the OMS speaks for it
}
"""The channel stages each channel reports (pinduoduo only shows paid orders)."""


class _Life:
    """Collects one order's events; `u` draws a uniform int in [lo, hi)."""

    __slots__ = ("ev", "o", "r", "stages")

    def __init__(self, o: Order, rng: Random) -> None:
        self.o = o
        self.r = rng.random
        self.ev: list[Ev] = []
        self.stages = STAGES[o.channel]

    def u(self, lo: int, hi: int) -> int:
        return lo + int(self.r() * (hi - lo))

    def add(self, t: int, kind: str, arg: object, src: str) -> None:
        lo, hi = DELAY[src]
        self.ev.append([t + lo + int(self.r() * (hi - lo)), t, kind, arg])

    def ch(self, t: int, stage: str) -> None:
        if stage in self.stages:
            self.add(t, "ch", stage, self.o.channel)

    def oms(self, t: int, key: str, ref: bool = False) -> None:
        if self.o.has_oms:
            self.add(t, "oms", (key, ref), "oms")


def build_life(o: Order, rng: Random) -> list[Ev]:
    life = _Life(o, rng)
    r, u, add, ch, oms = life.r, life.u, life.add, life.ch, life.oms

    ch(0, "created")
    oms(u(500, 3 * SECOND), "pending")
    if o.outcome == CANCELLED:
        tc = u(15 * MINUTE, 30 * MINUTE)
        ch(tc, "cancelled")
        oms(tc + u(SECOND, 5 * SECOND), "closed_unpaid" if r() < 0.5 else "cancelled")
        return life.ev

    tp = o.tp = u(20 * SECOND, 10 * MINUTE)
    add(tp, "pay", "success", o.gateway)
    if o.gateway == "stripe":  # Stripe sends the Charge's event beside the PaymentIntent's
        add(tp, "pay", "charge", "stripe")
    ch(tp + u(2 * SECOND, 5 * SECOND), "paid")
    oms(tp + u(3 * SECOND, 8 * SECOND), "paid")
    if o.cn and r() < 0.3:
        oms(tp + u(20 * SECOND, 90 * SECOND), "to_ship")
    if o.outcome == REFUNDED:
        _refund(life, tp)
        return life.ev

    # Warehouse: the label within 45 min .. 3.4 h of payment (mostly 1-3 h).
    tl = tp + int(rng.triangular(45 * MINUTE, 3.4 * HOUR, 1.6 * HOUR))
    ch(tp + u(10 * MINUTE, min(60 * MINUTE, tl - tp - 10 * MINUTE)), "preparing")
    lo = tp + 3 * MINUTE
    times = iter(sorted(u(lo, tl - 2 * MINUTE) for _ in range(3)))
    for name, share in (("ALLOCATED", 0.8), ("PICKED", 0.6), ("PACKED", 0.8)):
        t = next(times)
        if r() < share:
            add(t, "wms", name, "wms")
    add(tl - u(500, 3 * SECOND), "api", (o.carrier, "create_label", u(100, 800)), "carrier_api")
    add(tl, "wms", "LABEL_PRINTED", "wms")
    if o.channel == "shopee":  # Shopee pushes the tracking number on its own (code 4)
        add(tl + u(MINUTE, 10 * MINUTE), "shopee_tracking", None, "shopee")
    oms(tl + u(30 * SECOND, 3 * MINUTE), "shipped")
    ch(tl + u(MINUTE, 15 * MINUTE), "shipped")

    # Carrier: pickup 1-3 h after the label, hubs every 3-9.5 h, then delivery.
    via = o.via
    if via == "aftership" or (via == "dhl" and r() < 0.3):
        add(tl + u(5 * MINUTE, 30 * MINUTE), "scan", ("info", 0), via)
    t = tpick = tl + u(HOUR, 3 * HOUR)
    if r() < 0.4:
        add(t - u(MINUTE, 10 * MINUTE), "wms", "HANDED_OVER", "wms")
    add(t, "scan", ("pickup", 0), via)
    ch(t + u(5 * MINUTE, 60 * MINUTE), "picked")
    for hub in range(u(1, 4) if o.cn else u(2, 5)):
        t += u(3 * HOUR, int(9.5 * HOUR))
        add(t, "scan", ("arrive", hub), via)
        if r() < 0.6:
            t += u(10 * MINUTE, 60 * MINUTE)
            add(t, "scan", ("depart", hub), via)
    t += u(3 * HOUR, int(9.5 * HOUR))
    add(t, "scan", ("ofd", 0), via)
    tdel = t + u(30 * MINUTE, 6 * HOUR)
    add(tdel, "scan", ("delivered", 0), via)
    for _ in range(u(0, 3)):
        add(u(tpick, tdel), "api", (o.carrier, "query_tracking", u(100, 800)), "carrier_api")

    oms(tdel + u(2 * MINUTE, 60 * MINUTE), "delivered")
    ch(tdel + u(10 * MINUTE, 3 * HOUR), "delivered")
    tc = tdel + u(DAY, 8 * DAY)  # the buyer confirms days later, often past the period
    ch(tc, "completed")
    oms(tc + u(10 * SECOND, 60 * SECOND), "completed")
    return life.ev


def _refund(life: _Life, tp: int) -> None:
    """A paid order refunded before it ships: REF-<id>-01 退款中 .. 已退款 within ~11 h."""
    u, add = life.u, life.add
    tr = tp + u(10 * MINUTE, 3 * HOUR)
    if u(0, 10) < 6:
        add(tp + u(3 * MINUTE, tr - tp - MINUTE), "wms", "ALLOCATED", "wms")
    add(tr, "oms", ("refunding", True), "oms")
    life.ch(tr + u(10 * SECOND, 60 * SECOND), "refund_requested")
    tg = tr + u(5 * MINUTE, 6 * HOUR)  # the gateway's refund notice: the money is back
    done = tg + u(MINUTE, 30 * MINUTE)
    add(tg, "pay", "refund", life.o.gateway)
    add(done, "oms", ("refunded", True), "oms")
    life.ch(done + u(MINUTE, 10 * MINUTE), "refunded")
