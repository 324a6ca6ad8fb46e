"""Canonical order statuses and the coarse standard status finance and BI use.

Statuses are plain interned strings (cheap to compare, cheap to keep per order);
the main path carries a rank so that "further along" is an integer comparison.
"""

from __future__ import annotations

MAIN_PATH: tuple[str, ...] = (
    "PENDING_PAYMENT",
    "PAID",
    "FULFILLING",
    "LABEL_CREATED",
    "PICKED_UP",
    "IN_TRANSIT",
    "OUT_FOR_DELIVERY",
    "DELIVERED",
    "COMPLETED",
)
SIDE_STATES: tuple[str, ...] = (
    "CANCELLED",
    "CLOSED_UNPAID",
    "ON_HOLD",
    "REFUND_REQUESTED",
    "REFUNDED",
    "DELIVERY_EXCEPTION",
    "RETURNING",
    "RETURNED",
)
# Claims a status map may produce that are not statuses of their own: a refund
# request that was withdrawn or rejected ends REFUND_REQUESTED.
PSEUDO_CLAIMS: tuple[str, ...] = ("REFUND_CLOSED",)

CANONICAL: frozenset[str] = frozenset(MAIN_PATH + SIDE_STATES)
CLAIMABLE: frozenset[str] = CANONICAL | frozenset(PSEUDO_CLAIMS)

RANK: dict[str, int] = {s: i + 1 for i, s in enumerate(MAIN_PATH)}
"""Main-path rank, 1..9; side states have no rank."""

SHIPPED_BAND: frozenset[str] = frozenset(MAIN_PATH[3:8])
"""LABEL_CREATED..DELIVERED: statuses that imply a tracking number exists."""

STANDARD: dict[str, str] = {
    "PENDING_PAYMENT": "待支付",
    "PAID": "已支付",
    "FULFILLING": "已支付",
    "LABEL_CREATED": "已发货",
    "PICKED_UP": "已发货",
    "IN_TRANSIT": "已发货",
    "OUT_FOR_DELIVERY": "已发货",
    "DELIVERED": "已发货",
    "COMPLETED": "已完成",
    "CANCELLED": "已取消",
    "CLOSED_UNPAID": "已取消",
    "REFUNDED": "已退款",
}
"""The seeds' six. Side states absent here do not end the money flow and so take
the standard status of the main-path status underneath them."""


def standard_status(status: str, main: str | None) -> str:
    """Coarse status for finance: side states like ON_HOLD inherit the main path's."""
    std = STANDARD.get(status)
    if std is not None:
        return std
    return STANDARD.get(main or "PENDING_PAYMENT", "待支付")


def conditional(value: str) -> tuple[str, str] | None:
    """A claim "A/B" means A if the order was paid, B if not (Alipay TRADE_CLOSED)."""
    if "/" in value:
        paid, unpaid = value.split("/", 1)
        return paid, unpaid
    return None
