"""Order alert rules: each is a condition that holds *since* some ingestion time.

An alert fires once its condition has held for its threshold (0 for the
event-triggered ones) and resolves when the condition clears. Thresholds come
from config with per-carrier and per-channel overrides. Conditions read only the
order's own state, so evaluating them is deterministic and cheap; the shard
re-evaluates after every event and at the order's next deadline.
"""

from __future__ import annotations

from collections.abc import Callable

from schemas.config import Settings
from schemas.statuses import RANK
from state.evidence import (
    CARRIER_MS,
    CLOSED_SIDES,
    DELIVERED_AT,
    DELIVERED_RANK,
    F_DUP_RISK,
    F_PAID_AFTER_CLOSE,
    F_POST_DELIVERY,
    F_REGRESSION,
    LAST_AT,
    PAID_AT,
    SINCE,
    TERMINAL,
    Order,
)

Rule = Callable[[Order], int | None]
"""Returns the ingestion ms the condition has held since, or None when it does not hold."""


def payment_not_reflected(o: Order) -> int | None:
    if o.t[PAID_AT] and o.reported == "PENDING_PAYMENT":
        return o.t[PAID_AT]
    return None


def paid_after_close(o: Order) -> int | None:
    if o.flags & F_PAID_AFTER_CLOSE and o.side in CLOSED_SIDES:
        return o.t[LAST_AT]
    return None


def shipment_delayed(o: Order) -> int | None:
    if o.status in ("PAID", "FULFILLING") and o.tracking is None:
        return o.t[SINCE]
    return None


def pickup_missing(o: Order) -> int | None:
    return o.t[SINCE] if o.status == "LABEL_CREATED" else None


def tracking_stalled(o: Order) -> int | None:
    if o.status in ("PICKED_UP", "IN_TRANSIT", "OUT_FOR_DELIVERY"):
        return max(o.t[CARRIER_MS], o.t[SINCE])
    return None


def delivery_not_reflected(o: Order) -> int | None:
    rep = o.reported
    if o.t[DELIVERED_AT] and rep is not None and RANK.get(rep, DELIVERED_RANK) < DELIVERED_RANK:
        return o.t[DELIVERED_AT]
    return None


def duplicate_shipment_risk(o: Order) -> int | None:
    if o.flags & F_DUP_RISK and o.status not in TERMINAL:
        return o.t[LAST_AT]
    return None


def post_delivery_anomaly(o: Order) -> int | None:
    if o.flags & F_POST_DELIVERY and o.side in ("RETURNING", "DELIVERY_EXCEPTION"):
        return o.t[LAST_AT]
    return None


def delivery_exception(o: Order) -> int | None:
    return o.t[LAST_AT] if o.side == "DELIVERY_EXCEPTION" else None


def status_regression(o: Order) -> int | None:
    return o.t[LAST_AT] if o.flags & F_REGRESSION else None


def refund_stuck(o: Order) -> int | None:
    return o.t[SINCE] if o.status == "REFUND_REQUESTED" else None


# type -> (rule, threshold name in config or None for "at once")
RULES: dict[str, tuple[Rule, str | None]] = {
    "PAYMENT_NOT_REFLECTED": (payment_not_reflected, "payment_not_reflected"),
    "PAID_AFTER_CLOSE": (paid_after_close, None),
    "SHIPMENT_DELAYED": (shipment_delayed, "shipment_delayed"),
    "PICKUP_MISSING": (pickup_missing, "pickup_missing"),
    "TRACKING_STALLED": (tracking_stalled, "tracking_stalled"),
    "DELIVERY_NOT_REFLECTED": (delivery_not_reflected, "delivery_not_reflected"),
    "DUPLICATE_SHIPMENT_RISK": (duplicate_shipment_risk, None),
    "POST_DELIVERY_ANOMALY": (post_delivery_anomaly, None),
    "DELIVERY_EXCEPTION": (delivery_exception, None),
    "STATUS_REGRESSION": (status_regression, None),
    "REFUND_STUCK": (refund_stuck, "refund_stuck"),
}

_BY_STATUS: dict[str | None, tuple[str, ...]] = {
    "PAID": ("SHIPMENT_DELAYED",),
    "FULFILLING": ("SHIPMENT_DELAYED",),
    "LABEL_CREATED": ("PICKUP_MISSING",),
    "PICKED_UP": ("TRACKING_STALLED",),
    "IN_TRANSIT": ("TRACKING_STALLED",),
    "OUT_FOR_DELIVERY": ("TRACKING_STALLED",),
    "REFUND_REQUESTED": ("REFUND_STUCK",),
    "DELIVERY_EXCEPTION": ("DELIVERY_EXCEPTION",),
}
_BY_FLAG = (
    (F_PAID_AFTER_CLOSE, "PAID_AFTER_CLOSE"),
    (F_DUP_RISK, "DUPLICATE_SHIPMENT_RISK"),
    (F_POST_DELIVERY, "POST_DELIVERY_ANOMALY"),
    (F_REGRESSION, "STATUS_REGRESSION"),
)
_ORDER = {t: i for i, t in enumerate(RULES)}


def candidates(o: Order) -> list[str]:
    """The rules that could hold for this order now, plus the open ones (to resolve them).

    Evaluating only these instead of every rule keeps the per-event cost flat.
    """
    found = list(_BY_STATUS.get(o.status, ()))
    if o.reported is not None:
        if o.t[PAID_AT]:
            found.append("PAYMENT_NOT_REFLECTED")
        if o.t[DELIVERED_AT]:
            found.append("DELIVERY_NOT_REFLECTED")
    if o.flags:
        found.extend(t for bit, t in _BY_FLAG if o.flags & bit)
    if o.alerts:
        found.extend(t for t in o.alerts if t not in found)
    if len(found) > 1:
        found = sorted(set(found), key=_ORDER.__getitem__)
    return found


MESSAGES: dict[str, str] = {
    "PAYMENT_NOT_REFLECTED": "gateway reported payment; the OMS still says unpaid",
    "PAID_AFTER_CLOSE": "a payment succeeded for an order that was cancelled or closed",
    "SHIPMENT_DELAYED": "paid but no tracking number yet",
    "PICKUP_MISSING": "label created but no carrier scan yet",
    "TRACKING_STALLED": "no carrier update",
    "DELIVERY_NOT_REFLECTED": "carrier delivered; the OMS does not say so",
    "DUPLICATE_SHIPMENT_RISK": "reship or second tracking number for a delivered order",
    "POST_DELIVERY_ANOMALY": "returning or exception scan after delivery",
    "DELIVERY_EXCEPTION": "carrier exception or failed delivery attempt",
    "STATUS_REGRESSION": "the OMS reported a status behind the evidence",
    "REFUND_STUCK": "refund requested and not completed",
}


class Thresholds:
    """Resolves a rule's threshold for an order (carrier override, channel, global)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cache: dict[tuple[str, str | None, str | None], int] = {}

    def __call__(self, name: str | None, channel: str | None, carrier: str | None) -> int:
        if name is None:
            return 0
        key = (name, channel, carrier)
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = self._settings.order_threshold(name, channel, carrier)
        return v
