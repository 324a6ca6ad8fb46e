"""The customer desk: holds across all of a customer's orders.

Orders of one customer live in different shards, so holds live here, fed by the
shards' signals in a deterministic order. A hold opens on DELIVERY_NOT_REFLECTED
or DUPLICATE_SHIPMENT_RISK; a reship or second tracking number for any order of a
held customer is itself a DUPLICATE_SHIPMENT_RISK, which resolves with the hold.

Operator commands for customers (`schemas.commands`: HOLD, RELEASED) arrive mixed
with the signals of the same input batch, via order shard 0, and are applied in
ingestion-time order with them: at the same time, signals first (a deadline due
at t fires before an input at t), then commands in input order. A command whose id
was already applied, or stale, is dead-lettered (`state.command_ids`); a second
release of a released customer (another command) says nothing.
"""

from __future__ import annotations

from schemas.commands import Command
from schemas.config import Settings
from schemas.event import DeadLetter
from state.breakers import CustomerHolds
from state.command_ids import SeenCommands
from state.order_alerts import MESSAGES
from state.records import Alert, CustomerSignal, Decision
from state.watermark import key_clock


class CustomerDesk:
    def __init__(self, settings: Settings) -> None:
        self.holds = CustomerHolds(settings.breakers.customer)
        self.clock = 0
        self.seen = SeenCommands.for_config(settings.control)  # recent command ids applied
        # customer -> {order_id: first_seen} of risks this desk raised while held
        self.risks: dict[str, dict[str, tuple[int, dict[str, str]]]] = {}

    def process(
        self, signals: list[CustomerSignal | Command], clock: int
    ) -> list[Alert | Decision | DeadLetter]:
        out: list[Alert | Decision | DeadLetter] = []
        for s in sorted(signals, key=in_order):
            if isinstance(s, Command):
                at = max(s.received_ms, self.clock)
                self.advance(at, out)
                refused = self.seen.refuse(s.command_id, s.received_ms, at)
                out += self.command(s, at) if refused is None else [s.refused(refused)]
                continue
            self.advance(s.at_ms, out)
            if s.kind == "hold":
                reason = f"{s.alert_type} on order {s.order_id}"
                d = self.holds.hold(s.customer_id, s.at_ms, reason, s.order_id, s.alert_type or "")
                if d is not None:
                    out.append(d)
            elif s.kind == "shipment" and self.holds.is_held(s.customer_id, s.at_ms):
                out.append(self._risk(s))
        self.advance(clock, out)
        return out

    def command(self, c: Command, at_ms: int) -> list[Alert | Decision]:
        """An operator's HOLD or RELEASED for a customer, at `at_ms`; [] if nothing changes."""
        reason, figures = c.explanation(), c.figures(forced=False)
        if c.state == "HOLD":
            d = self.holds.hold_by_operator(c.key, at_ms, reason, figures)
            return [] if d is None else [d]
        return self.release(c.key, at_ms, c.operator, reason, figures)

    def release(
        self,
        customer_id: str,
        at_ms: int,
        by: str,
        reason: str | None = None,
        figures: dict[str, object] | None = None,
    ) -> list[Alert | Decision]:
        """An operator's release; it resolves the risks raised while the customer was held."""
        out: list[Alert | Decision] = []
        d = self.holds.release(customer_id, at_ms, by, reason, figures)
        if d is not None:
            out.append(d)
            self._resolve(customer_id, at_ms, out)
        return out

    def advance(self, now: int, out: list[Alert | Decision | DeadLetter]) -> None:
        if now <= self.clock:
            return
        for d in self.holds.advance(now):
            out.append(d)
            self._resolve(d.key, d.at_ms, out)
        self.clock = now

    def _risk(self, s: CustomerSignal) -> Alert:
        subject = {"order_id": s.order_id, "customer_id": s.customer_id}
        if s.channel:
            subject["channel"] = s.channel
        if s.carrier:
            subject["carrier"] = s.carrier
        self.risks.setdefault(s.customer_id, {})[s.order_id] = (s.at_ms, subject)
        return Alert(
            type="DUPLICATE_SHIPMENT_RISK",
            state="firing",
            subject=subject,
            message=f"{s.order_id}: {MESSAGES['DUPLICATE_SHIPMENT_RISK']} (customer on hold)",
            first_seen_ms=s.at_ms,
            at_ms=s.at_ms,
            details={"customer_on_hold": True},
        )

    def _resolve(
        self, customer_id: str, at_ms: int, out: list[Alert | Decision | DeadLetter]
    ) -> None:
        for order_id, (first_seen, subject) in sorted(self.risks.pop(customer_id, {}).items()):
            out.append(
                Alert(
                    type="DUPLICATE_SHIPMENT_RISK",
                    state="resolved",
                    subject=subject,
                    message=f"{order_id}: customer hold released",
                    first_seen_ms=first_seen,
                    at_ms=at_ms,
                    details={"customer_on_hold": False},
                )
            )


def in_order(s: CustomerSignal | Command) -> tuple[int, int, str, str, str, int]:
    """Time order; at one time signals first (by order and kind), then commands by position.

    A command's time is its arrival on the ingestion clock (its merge key's clock, or its
    own `received_at` if later): a late command cannot reach the desk before that.
    """
    if isinstance(s, Command):
        return (max(s.received_ms, key_clock(s.seq)), 1, "", "", "", s.seq)
    return (s.at_ms, 0, s.order_id, s.kind, s.alert_type or "", 0)
