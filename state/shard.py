"""One shard of order state: many orders, their deadlines, and the alerts they raise.

The dataflow keeps a fixed set of shards (config `pipeline.shards`), so a clock
tick reaches every shard and Bytewax sees a handful of keys instead of millions.
`process` takes events in input order plus the batch's ingestion clock; everything
it emits is a pure function of that sequence, which is what makes replay
deterministic whatever the batch size or worker count.
"""

from __future__ import annotations

import zlib
from collections import Counter
from functools import partial
from itertools import chain
from operator import attrgetter

from schemas.config import Settings
from schemas.event import Event
from schemas.statuses import standard_status
from state.evidence import (
    CARRIER_MS,
    CLOSED_EV_MS,
    CLOSED_SIDES,
    DELIVERED_AT,
    DELIVERED_MS,
    DUE,
    F_DUP_RISK,
    F_PAID_AFTER_CLOSE,
    F_POST_DELIVERY,
    LAST_AT,
    PAID_AT,
    PAID_EV_MS,
    SINCE,
    TERMINAL,
    TIER,
    Order,
    PackedOrders,
    apply_claims,
    derive,
    judge_report,
    lock_tracking,
    pack_orders,
    remember_refs,
    resolve_claim,
    unpack_orders,
)
from state.order_alerts import MESSAGES, RULES, Thresholds, candidates
from state.packing import IdTable
from state.records import Alert, Correction, CustomerSignal
from state.stages import StageTiming, time_stages
from state.timers import TimerWheel

Increment = tuple[PackedOrders, tuple[str, ...]]
"""The orders changed since the last increment, packed, and the ids that left. A delta
written with orders packed ahead (`OrderShard.prepack`) is a list of them, oldest first."""

PREPACK = 512
"""Changed orders a shard packs ahead of the epoch close once that many have gathered.

Packing every order an epoch changed at its close stalled the worker (20-40 ms a shard
at 4,000 events/s, all twelve shards in one close, and the latency spiked with it).
Packed as they gather, the close packs at most this many a shard; an order changed
again after it was packed is packed again, which costs little while epochs are short
against the spacing of an order's events."""

Output = tuple[
    str, object
]  # ("corrected", Correction) | ("alert", Alert) | ("signal", CustomerSignal)

HOLD_ALERTS = frozenset({"DELIVERY_NOT_REFLECTED", "DUPLICATE_SHIPMENT_RISK"})
PAID_BAND = frozenset({"PAID", "FULFILLING"})
RETENTION_GRAIN = 3_600_000
WHEEL_SLACK = 4096
"""Wheel entries beyond two an order (the rest stale) a shard tolerates before compacting."""
AFTER_DELIVERY = frozenset({"RETURNING", "RETURNED", "DELIVERY_EXCEPTION"})
_STATUS = attrgetter("status")
_ALERTS = attrgetter("alerts")


def event_digest(ev: Event) -> bytes:
    """4 bytes of identity, stable across processes (unlike `hash`) so it survives snapshots.

    Compared only among one order's own events (tens at most), where a crc32 collision
    is a one-in-a-hundred-million chance per pair.
    """
    return zlib.crc32(f"{ev.source}\x1f{ev.event_id}".encode()).to_bytes(4, "little")


def seen_before(seen: bytes, digest: bytes) -> bool:
    i = seen.find(digest)
    while i != -1:
        if i % 4 == 0:
            return True
        i = seen.find(digest, i + 1)
    return False


class OrderShard:
    """Orders keyed by canonical (OMS) id, with a timer wheel on the ingestion clock."""

    def __init__(self, settings: Settings) -> None:
        self.orders: dict[str, Order] = {}
        self.clock = 0
        self._wheel = TimerWheel()
        self._settings = settings
        self._thresholds = Thresholds(settings)
        r = settings.retention
        self._keep_terminal = r.terminal_order
        self._keep_idle = r.idle_order
        self._seen_bytes = 4 * r.seen_events_per_order
        self.duplicates = 0
        self.stages: list[StageTiming] = []  # the last `process` call's, for the metrics
        self.changed: set[str] | None = None  # ids touched since the last increment
        self._packed: list[Increment] = []  # this epoch's orders packed ahead (`prepack`)
        # the census, kept as orders change: counting a million orders took 18% of a run
        self.statuses: Counter[str] = Counter()
        self.open_alerts: Counter[str] = Counter()

    def __getstate__(self) -> dict:
        """The orders, packed (`state.evidence.pack_orders`), and the clock.

        The timer wheel is not kept: every order holds its registered deadline (`DUE`),
        so `restore` rebuilds it, one entry an order, without the stale ones.
        """
        return {"orders": pack_orders(self.orders), "clock": self.clock}

    def restore(self, state: dict, settings: Settings, ids: IdTable | None = None) -> None:
        """From `__getstate__`'s whole form: one base and no deltas."""
        self.restore_increments(state["clock"], [(state["orders"], ())], settings, ids)

    # ------------------------------------------------------------------ increments
    def track_changes(self) -> None:
        """Remember which orders change, for `increment` (recovery on: off, it would only
        grow)."""
        self.changed = set()

    def prepack(self) -> None:
        """Pack the orders changed so far once `PREPACK` of them have gathered."""
        changed = self.changed
        if changed is not None and len(changed) >= PREPACK:
            self.changed = set()
            self._packed.append(self._delta(changed))

    def increment(self, base: bool) -> tuple[bool, Increment | list[Increment]]:
        """The orders for a snapshot: all of them (`base`), or those changed since the last
        increment, packed, with the ids that left. Forgets the changes."""
        changed, self.changed = self.changed, set()
        packed, self._packed = self._packed, []
        if base or changed is None:
            return True, (pack_orders(self.orders), ())
        if packed:
            return False, [*packed, self._delta(changed)]
        return False, self._delta(changed)

    def _delta(self, changed: set[str]) -> Increment:
        orders = self.orders
        kept = {k: o for k in changed if (o := orders.get(k)) is not None}
        return pack_orders(kept), tuple(k for k in changed if k not in orders)

    def restore_increments(
        self,
        clock: int,
        increments: list[Increment | list[Increment]],
        settings: Settings,
        ids: IdTable | None = None,
    ) -> None:
        """The state a base and the deltas after it describe (`increment`'s, oldest first);
        `ids`: the table the steps a process resumes share their ids through."""
        self.__init__(settings)  # type: ignore[misc]
        ids = IdTable() if ids is None else ids
        (base, _), *deltas = increments
        orders = unpack_orders(base, ids)
        for delta in deltas:
            for packed, gone in delta if isinstance(delta, list) else (delta,):
                orders.update(unpack_orders(packed, ids))
                for k in gone:
                    orders.pop(k, None)
        self.orders = orders
        self.clock = clock
        self._compact_wheel()
        self.statuses, self.open_alerts = self.count()

    def census(self) -> tuple[Counter[str], Counter[str]]:
        """Orders held by derived status, and open order alerts by type: what is stuck where.

        Kept as orders change, recounted from the state itself on restore (`count`), so
        the figures are right after a restart too.
        """
        return self.statuses, self.open_alerts

    def count(self) -> tuple[Counter[str], Counter[str]]:
        """The census counted over every order (a pass over the state).

        Counted in C (`Counter` of a `map`): a Python loop over a million restored
        orders was an eighth of a restart."""
        orders = self.orders.values()
        statuses: Counter[str] = Counter(map(_STATUS, orders))
        for empty in (None, ""):
            n = statuses.pop(empty, 0)  # type: ignore[call-overload]
            if n:
                statuses["UNKNOWN"] += n
        open_alerts: Counter[str] = Counter(chain.from_iterable(filter(None, map(_ALERTS, orders))))
        return statuses, open_alerts

    # ------------------------------------------------------------------ input
    def process(self, events: list[Event], frontier: int) -> list[Output]:
        """Apply events in order; fire every deadline that falls before each arrival.

        `frontier` is the ingestion clock everything before which has been consumed
        (`state.clock.Frontier`); deadlines never fire past it, even for an event
        that a faster input partition delivered ahead of it. In replay it is the
        batch's last `received_at`, and each event's own arrival moves the clock.
        """
        out: list[Output] = []
        self.stages = []  # only this call's: a caller that never reads them holds nothing
        for ev in events:
            self.advance(min(ev.received_ms, frontier), out)
            at = max(self.clock, ev.received_ms)
            self._apply(ev, at, out)
        self.advance(frontier, out)
        if self._wheel.entries > 2 * len(self.orders) + WHEEL_SLACK:
            self._compact_wheel()
        return out

    def _compact_wheel(self) -> None:
        """Drop the wheel's stale entries: a deadline moved earlier leaves its old entry
        behind until that bucket comes up, days ahead for retention deadlines."""
        self._wheel = TimerWheel.of((k, o[DUE]) for k, o in self.orders.items())

    def advance(self, now: int, out: list[Output]) -> None:
        """Move the clock to `now`: deadlines strictly before it fire, at their own time."""
        if now <= self.clock:
            return
        nxt = self._wheel.next_due()
        if nxt is not None and nxt < now:
            orders, changed, pop = self.orders, self.changed, self._wheel.pop_next
            due_of = partial(_due, orders)
            while (entry := pop(now, due_of)) is not None:
                due, oid = entry
                if changed is not None:
                    changed.add(oid)
                o = orders[oid]
                o[DUE] = 0
                self._evaluate(oid, o, due, out)
        self.clock = now

    # ------------------------------------------------------------------ one event
    def _apply(self, ev: Event, now: int, out: list[Output]) -> None:
        oid = ev.order_id
        if oid is None:  # the router never sends these; keep the contract explicit
            return
        if self.changed is not None:
            self.changed.add(oid)
        o = self.orders.get(oid)
        if o is None:
            o = self.orders[oid] = Order()
            self.statuses["UNKNOWN"] += 1
        digest = event_digest(ev)
        if seen_before(o.seen, digest):
            self.duplicates += 1  # DELIVERIES OF THE SAME EVENT CHANGE NOTHING
            return
        seen = o.seen + digest
        o.seen = seen[-self._seen_bytes :] if len(seen) > self._seen_bytes else seen
        o[LAST_AT] = now
        prev = o.status
        before = (o.reported, o.flags, o.channel, o.carrier, o[PAID_AT], o[DELIVERED_AT])
        main_before = o.main
        tier = TIER.get(ev.kind, 0)
        kind = ev.kind

        if ev.channel is not None and o.channel is None:
            o.channel = ev.channel
        if ev.customer_id is not None and (o.customer is None or kind == "oms"):
            o.customer = ev.customer_id
        if ev.carrier is not None and (o.carrier is None or kind in ("carrier", "wms")):
            o.carrier = ev.carrier
        if ev.links or ev.ref is not None:
            remember_refs(o, ev.links if ev.ref is None else (ev.ref, *ev.links))

        shipment = False
        lock = None
        if ev.tracking_no is not None and ev.tracking_valid:
            nums = o.tracking_numbers()
            if ev.tracking_no not in nums:
                if nums:
                    shipment = True  # a second tracking number
                o.tracking = ev.tracking_no if not nums else (*nums, ev.tracking_no)
            if o.main is None or o.main in ("PENDING_PAYMENT", "PAID", "FULFILLING"):
                lock = ev.tracking_no
        if ev.signal == "reship":
            shipment = True
        if shipment:
            if o[DELIVERED_AT]:
                o.flags |= F_DUP_RISK
            elif o.customer is not None:
                out.append(("signal", self._signal("shipment", oid, o, now)))

        if kind == "gateway" and ev.outcome == "success":
            if not o[PAID_AT]:
                o[PAID_AT] = now
            o[PAID_EV_MS] = max(o[PAID_EV_MS], ev.event_ms)
        elif kind == "carrier":
            o[CARRIER_MS] = now
            if "DELIVERED" in ev.claims and not o[DELIVERED_AT]:
                o[DELIVERED_AT] = now
                o[DELIVERED_MS] = ev.event_ms
            elif (
                o[DELIVERED_AT]
                and ev.event_ms > o[DELIVERED_MS]
                and any(c in AFTER_DELIVERY for c in ev.claims)
            ):
                o.flags |= F_POST_DELIVERY

        decided = apply_claims(o, ev, tier)
        if lock is not None:
            lock_tracking(o, ev)  # after the claims: the lock must not make them look stale
        if o.side in CLOSED_SIDES and o[PAID_EV_MS] > o[CLOSED_EV_MS]:
            o.flags |= F_PAID_AFTER_CLOSE
        if kind == "oms" and ev.refund_id is None and ev.claims:
            reported = resolve_claim(o, ev.claims[0])
            o.reported = reported
            judge_report(o, ev, reported)

        status = derive(o)
        if o.main != main_before or o.reported != before[0]:
            self.stages.extend(time_stages(o, main_before, before[0], now))
        if status != prev:
            o.status = status
            self.statuses[prev or "UNKNOWN"] -= 1
            self.statuses[status or "UNKNOWN"] += 1
            if not (prev in PAID_BAND and status in PAID_BAND):
                o[SINCE] = now
            o.version += 1
            reason = f"{ev.source} reported {ev.raw_status}"
            if decided is None and lock is not None:
                reason = f"{ev.source} assigned tracking number {lock}"
            out.append(("corrected", self._correction(oid, o, prev, reason, ev)))
        elif (
            o.alerts is None
            and o[DUE]
            and before == (o.reported, o.flags, o.channel, o.carrier, o[PAID_AT], o[DELIVERED_AT])
        ):
            # Nothing any rule reads has changed but the clocks they count from, which
            # only move deadlines later; the registered deadline re-evaluates then.
            return
        self._evaluate(oid, o, now, out, horizon=self.clock)

    def _correction(self, oid: str, o: Order, prev: str | None, reason: str, ev: Event):
        status = o.status or "PENDING_PAYMENT"
        evidence = {"source": ev.source, "event_id": ev.event_id}
        if ev.refund_id is not None:
            evidence["refund_id"] = ev.refund_id
        return Correction(
            order_id=oid,
            status=status,
            standard_status=standard_status(status, o.main),
            previous_status=prev,
            reported_status=o.reported,
            mismatch=o.reported is not None and o.reported != status,
            reason=reason,
            evidence=[evidence],
            event_ms=ev.event_ms,
            version=o.version,
            ids=o.ids(),
        )

    # ------------------------------------------------------------------ alerts, deadlines
    def _evaluate(
        self, oid: str, o: Order, now: int, out: list[Output], horizon: int | None = None
    ) -> None:
        """Fire what has held long enough, resolve what cleared, schedule the next deadline.

        Event-triggered alerts fire at `now`; a timed one only once its deadline is at or
        before `horizon` (the consumed ingestion clock), else it waits in the wheel.
        """
        if horizon is None or horizon > now:
            horizon = now
        due = 0
        thresholds = self._thresholds
        for typ in candidates(o):
            rule, thr_name = RULES[typ]
            since = rule(o)
            opened = o.alerts.get(typ) if o.alerts is not None else None
            if opened is not None:
                if since == opened[1] or (since is not None and thr_name is None):
                    continue  # still the same condition
                # cleared, or a new period began (the parcel moved): resolve this one
                out.append(("alert", self._alert(typ, "resolved", oid, o, now)))
                del o.alerts[typ]  # type: ignore[union-attr]
                self.open_alerts[typ] -= 1
            if since is None:
                continue
            fire_at = since + thresholds(thr_name, o.channel, o.carrier)
            if fire_at <= (now if thr_name is None else horizon):
                if o.alerts is None:
                    o.alerts = {}
                o.alerts[typ] = (now, since)
                self.open_alerts[typ] += 1
                alert = self._alert(typ, "firing", oid, o, now, since)
                out.append(("alert", alert))
                if typ in HOLD_ALERTS and o.customer is not None:
                    sig = self._signal("hold", oid, o, now)
                    sig.alert_type = typ
                    out.append(("signal", sig))
            elif due == 0 or fire_at < due:
                due = fire_at
        if not o.alerts:
            o.alerts = None
        keep = o[LAST_AT] + (self._keep_terminal if o.status in TERMINAL else self._keep_idle)
        keep += -keep % RETENTION_GRAIN  # coarse: one wheel bucket per hour, not per order
        if keep <= now:
            self._evict(oid, o, now, out)
            return
        if due == 0 or keep < due:
            due = keep
        registered = o[DUE]
        if registered == 0 or due < registered:
            # only ever move a deadline earlier: a later one is found when the registered
            # one comes up and re-evaluates, so the wheel holds one entry per order
            self._wheel.schedule(oid, due, registered)
            o[DUE] = due

    def _evict(self, oid: str, o: Order, now: int, out: list[Output]) -> None:
        """Retention: the order leaves state; its open alerts resolve with it."""
        for typ in list(o.alerts or ()):
            alert = self._alert(typ, "resolved", oid, o, now)
            alert.details["reason"] = "order left state after its retention period"
            out.append(("alert", alert))
            self.open_alerts[typ] -= 1
        self.statuses[o.status or "UNKNOWN"] -= 1
        del self.orders[oid]

    def _alert(
        self, typ: str, state: str, oid: str, o: Order, now: int, since: int | None = None
    ) -> Alert:
        subject = {"order_id": oid}
        if o.customer is not None:
            subject["customer_id"] = o.customer
        if o.channel is not None:
            subject["channel"] = o.channel
        if o.carrier is not None:
            subject["carrier"] = o.carrier
        details: dict[str, object] = {"status": o.status, "reported_status": o.reported}
        if o.tracking is not None:
            details["tracking_numbers"] = list(o.tracking_numbers())
        if since is not None:
            details["since_ms"] = since
        first_seen = o.alerts[typ][0] if o.alerts and typ in o.alerts else now
        return Alert(
            type=typ,
            state=state,
            subject=subject,
            message=f"{oid}: {MESSAGES[typ]}",
            first_seen_ms=first_seen,
            at_ms=now,
            details=details,
            ids=o.ids(),
        )

    def _signal(self, kind: str, oid: str, o: Order, now: int) -> CustomerSignal:
        return CustomerSignal(
            kind=kind,
            customer_id=o.customer or "",
            order_id=oid,
            at_ms=now,
            channel=o.channel,
            carrier=o.carrier,
        )


def _due(orders: dict[str, Order], key: str) -> int:
    o = orders.get(key)
    return 0 if o is None else o[DUE]
