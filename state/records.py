"""The three kinds of output record the state machines produce, and their stable ids.

Records carry ingestion/event times as epoch ms; `state.encode` turns them
into the JSON the output topics and files carry (UTC RFC 3339 strings).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

SEVERITY: dict[str, str] = {
    "PAYMENT_NOT_REFLECTED": "warning",
    "PAID_AFTER_CLOSE": "critical",
    "SHIPMENT_DELAYED": "warning",
    "PICKUP_MISSING": "warning",
    "TRACKING_STALLED": "warning",
    "DELIVERY_NOT_REFLECTED": "critical",
    "DUPLICATE_SHIPMENT_RISK": "critical",
    "POST_DELIVERY_ANOMALY": "warning",
    "DELIVERY_EXCEPTION": "warning",
    "STATUS_REGRESSION": "warning",
    "REFUND_STUCK": "warning",
    "UNMAPPED_STATUS": "warning",
    "SCHEMA_DRIFT": "warning",
    "CLOCK_SKEW": "warning",
    "PAYMENT_SUCCESS_RATE_LOW": "critical",
}
ALERT_TYPES: tuple[str, ...] = tuple(SEVERITY)


def stable_id(*parts: object) -> str:
    """A short deterministic id: the same facts give the same id after any restart."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=10)
    return h.hexdigest()


@dataclass(slots=True)
class Correction:
    """One change of an order's derived status."""

    order_id: str
    status: str
    standard_status: str
    previous_status: str | None
    reported_status: str | None
    mismatch: bool
    reason: str
    evidence: list[dict[str, str]]
    event_ms: int
    version: int
    ids: list[str] = field(default_factory=list)
    """The other ids the order is known by, `<namespace>:<id>` sorted (`Order.ids`)."""

    @property
    def record_id(self) -> str:
        return stable_id("corrected", self.order_id, self.version)


@dataclass(slots=True)
class Alert:
    """A firing or resolved alert. `subject` holds order_id/channel/carrier/customer_id/source."""

    type: str
    state: str  # firing | resolved
    subject: dict[str, str]
    message: str
    first_seen_ms: int
    at_ms: int
    details: dict[str, object] = field(default_factory=dict)
    discriminator: str = ""  # what tells apart two source alerts of one type (the value, the key)
    ids: list[str] = field(default_factory=list)  # an order alert's: as Correction.ids

    @property
    def severity(self) -> str:
        return SEVERITY[self.type]

    @property
    def alert_id(self) -> str:
        key = self.subject.get("order_id") or self.subject.get("source") or ""
        return stable_id("alert", self.type, key, self.discriminator, self.first_seen_ms)

    @property
    def record_id(self) -> str:
        return stable_id(self.alert_id, self.state)


@dataclass(slots=True)
class Decision:
    """A circuit-breaker state change: an instruction to upstream."""

    breaker: str  # channel | carrier | customer
    key: str
    state: str  # OPEN HALF_OPEN CLOSED | HOLD RELEASED
    previous_state: str
    reason: str
    action: str  # route_to_manual_review | failover_to:<carrier> | pause_auto_ship | resume
    figures: dict[str, object]
    at_ms: int

    @property
    def record_id(self) -> str:
        # an operator's decision may share breaker, state and time with another (OPEN by
        # the rules, then forced OPEN): its command id tells them apart
        command = self.figures.get("command_id")
        extra = () if command is None else (command,)
        return stable_id("breaker", self.breaker, self.key, self.state, self.at_ms, *extra)


@dataclass(slots=True)
class CustomerSignal:
    """From an order shard to the customer desk: a hold to open, or a shipment to check."""

    kind: str  # "hold" (alert that opens a hold) | "shipment" (reship / second tracking no)
    customer_id: str
    order_id: str
    at_ms: int
    alert_type: str | None = None
    channel: str | None = None
    carrier: str | None = None
