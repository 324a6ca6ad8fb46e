"""A few scripted orders that make every alert type fire in the first minutes of real time.

The live demo starts from a day of backlog; left to chance, a rare incident (a reship,
a stalled parcel) may take an hour to show, and the operator cannot try a customer
hold. Each script takes a freshly drawn order that fits it, places its life so that
its alert falls due (deadlines: on the ingestion clock) or its odd report arrives in
minutes 0-4 of real time, and bends it. The orders come from their own RNG and index
range, so the rest of the traffic draws exactly what it draws without them.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random

from sim.clock import HOUR, MINUTE, SECOND
from sim.ids import mix, salt
from sim.lives import Ev, build_life
from sim.model import CANCELLED, NORMAL, REFUNDED, Order

_S_SHOWCASE = salt("showcase")
QUICK = ("sf", "jt", "dhl")
"""Carriers whose scans arrive within 2.5 min: a deadline lands where it is placed."""
RATE_BURST = 30
"""Stripe orders whose first attempt fails: 60 outcomes in 5 min, over the minimum volume."""


def _first(evs: list[Ev], kind: str, arg: object) -> Ev:
    return next(e for e in evs if e[2] == kind and e[3] == arg)


def _move(evs: list[Ev], delta: int, after: int) -> None:
    """Move the events that happen at or after `after` by `delta` ms."""
    for e in evs:
        if e[1] >= after:
            e[0] += delta
            e[1] += delta


def _place(o: Order, evs: list[Ev], delta: int) -> None:
    """Move the whole life (built from t0 = 0) by `delta` ms."""
    _move(evs, delta, -(1 << 62))
    o.t0 += delta


def _add(evs: list[Ev], at: int, kind: str, arg: object) -> None:
    """An event received at `at`, taken a few seconds earlier."""
    evs.append([at, at - 5 * SECOND, kind, arg])


def _without(evs: list[Ev], kind: str, *args: object) -> list[Ev]:
    return [e for e in evs if not (e[2] == kind and e[3] in args)]


# Each script: (does this order fit, how to place and bend its life given real time's start).
Script = tuple[Callable[[Order], bool], Callable[[Order, list[Ev], int], list[Ev]]]


def _normal(o: Order) -> bool:
    return o.outcome == NORMAL


def _payment_not_reflected(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    _place(o, evs, live + MINUTE - _first(evs, "pay", "success")[0])
    return _without(evs, "oms", ("paid", False), ("to_ship", False))


def _paid_after_close(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    closed = max(e[1] for e in evs)
    o.tp = closed + 2 * MINUTE
    evs.append([o.tp + 2 * SECOND, o.tp, "pay", "success"])
    _place(o, evs, live + 90 * SECOND - evs[-1][0])
    return evs


def _shipment_delayed(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    label = next(e for e in evs if e[2] == "api")  # the tracking number is asked for here
    _move(evs, 5 * HOUR, after=label[1])
    _place(o, evs, live - 4 * HOUR + MINUTE - _first(evs, "pay", "success")[1])
    return evs


def _pickup_missing(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    pickup = _first(evs, "scan", ("pickup", 0))
    _move(evs, 5 * HOUR, after=pickup[1] - 10 * MINUTE)  # with the hand-over
    _place(o, evs, live - 4 * HOUR + 2 * MINUTE - _first(evs, "wms", "LABEL_PRINTED")[1])
    return evs


def _tracking_stalled(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    pickup = _first(evs, "scan", ("pickup", 0))
    _move(evs, 13 * HOUR, after=pickup[1] + 1)
    _place(o, evs, live - 12 * HOUR + 2 * MINUTE - pickup[1])
    return evs


def _delivery_not_reflected(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    _place(o, evs, live - 2 * HOUR + MINUTE - _first(evs, "scan", ("delivered", 0))[1])
    return _without(evs, "oms", ("delivered", False), ("completed", False))


def _reship(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    _place(o, evs, live - 6 * HOUR - _first(evs, "scan", ("delivered", 0))[1])
    _add(evs, live + 2 * MINUTE, "wms", "RESHIP_REQUESTED")
    return evs


def _returned(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    _place(o, evs, live - 3 * HOUR - _first(evs, "scan", ("delivered", 0))[1])
    _add(evs, live + 150 * SECOND, "scan", ("return", 0))
    return evs


def _failed_attempt(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    delivered = _first(evs, "scan", ("delivered", 0))
    _move(evs, 3 * HOUR, after=delivered[1])  # the next attempt
    _place(o, evs, live - 30 * MINUTE - _first(evs, "scan", ("ofd", 0))[1])
    _add(evs, live + MINUTE, "scan", ("exception", 0))
    return evs


def _regression(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    _place(o, evs, live - HOUR - _first(evs, "oms", ("shipped", False))[1])
    _add(evs, live + 3 * MINUTE, "oms", ("to_ship", False))
    return evs


def _refund_stuck(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    asked = _first(evs, "oms", ("refunding", True))
    _move(evs, 25 * HOUR, after=asked[1] + 2 * MINUTE)  # the refund itself: past the deadline
    _place(o, evs, live - 24 * HOUR + 3 * MINUTE - asked[1])
    return evs


def _unmapped(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    _place(o, evs, live - 2 * HOUR - _first(evs, "pay", "success")[1])
    _add(evs, live + MINUTE, "bad", "shipped")  # pinduoduo order_status 9
    return evs


def _drift(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    picked = _first(evs, "ch", "shipped")  # shipped: a status that implies a tracking number
    _place(o, evs, live + 2 * MINUTE - picked[0])
    picked[2] = "renamed"
    return evs


def _skew(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    arrive = _first(evs, "scan", ("arrive", 0))
    _place(o, evs, live + 90 * SECOND - arrive[0])
    arrive[2] = "skewed"
    return evs


def _declined_first(o: Order, evs: list[Ev], live: int) -> list[Ev]:
    paid = _first(evs, "pay", "success")
    _place(o, evs, live + 20 * SECOND - paid[0])
    evs.append([paid[0] - 20 * SECOND, paid[1] - 20 * SECOND, "pay", "failed"])
    return evs


SCRIPTS: dict[str, Script] = {
    "PAYMENT_NOT_REFLECTED": (lambda o: _normal(o) and o.has_oms, _payment_not_reflected),
    "PAID_AFTER_CLOSE": (lambda o: o.outcome == CANCELLED and o.has_oms, _paid_after_close),
    "SHIPMENT_DELAYED": (_normal, _shipment_delayed),
    "PICKUP_MISSING": (lambda o: _normal(o) and o.via in QUICK, _pickup_missing),
    "TRACKING_STALLED": (lambda o: _normal(o) and o.via in QUICK, _tracking_stalled),
    "DELIVERY_NOT_REFLECTED": (
        lambda o: _normal(o) and o.has_oms and o.via in QUICK,
        _delivery_not_reflected,
    ),
    "DUPLICATE_SHIPMENT_RISK": (_normal, _reship),
    "POST_DELIVERY_ANOMALY": (lambda o: _normal(o) and o.via == "dhl", _returned),
    "DELIVERY_EXCEPTION": (lambda o: _normal(o) and o.via == "dhl", _failed_attempt),
    "STATUS_REGRESSION": (lambda o: _normal(o) and o.has_oms and o.cn, _regression),
    "REFUND_STUCK": (lambda o: o.outcome == REFUNDED, _refund_stuck),
    "UNMAPPED_STATUS": (lambda o: _normal(o) and o.channel == "pinduoduo", _unmapped),
    "SCHEMA_DRIFT": (lambda o: _normal(o) and o.channel == "douyin", _drift),
    "CLOCK_SKEW": (lambda o: _normal(o) and o.via == "yto", _skew),
}
BURST: Script = (lambda o: _normal(o) and o.gateway == "stripe", _declined_first)


def scripted(
    seed: int, live_ms: int, first_idx: int, customers: int
) -> list[tuple[Order, list[Ev]]]:
    """Each script's order, then the declined-payment burst, placed around `live_ms`.

    Events come back absolute; orders draw from indexes `first_idx` on."""
    rng = Random(mix(seed, _S_SHOWCASE))
    idx = first_idx
    out: list[tuple[Order, list[Ev]]] = []
    burst = [(BURST, live_ms + k * 4 * SECOND) for k in range(RATE_BURST)]
    for (fits, bend), live in [*((s, live_ms) for s in SCRIPTS.values()), *burst]:
        while True:
            o = Order(idx, seed, rng, customers)
            life = build_life(o, rng)
            idx += 1
            if fits(o):
                break
        out.append((o, bend(o, life, live)))
    return out
