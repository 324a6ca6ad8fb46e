"""The Redis order view: what it holds, built from the pipeline's state (no Redis here).

Upstream services read these keys (all under `redis.key_prefix`, default `og:`); the
Redis writer is `connectors.redis_view`, the reader `orderguard lookup`.

- `og:order:{order_id}` (string, JSON): `order_id`, `status` (derived), `standard_status`,
  `reported_status` (the OMS's latest), `mismatch`, `open_alerts` (list of `{type,
  severity, since, first_seen}`: since when the condition held, when the alert fired),
  `customer_id`, `channel`, `carrier`, `tracking_numbers`, `ids` (the other ids it is
  known by, `<namespace>:<id>` sorted, tracking numbers as `tracking:<no>`), `version`
  (the last correction's), `last_event_at` (ingestion time of its last event),
  `updated_at` (the ingestion clock when written). Times are UTC RFC 3339 with
  milliseconds. `order_id` is the canonical id (the OMS's, or `<channel>:<id>` for a
  channel with `canonical_id: channel`: a key `og:order:pinduoduo:260127-…`).
- `og:ref:{namespace}:{id}` (string): the canonical order id of each of an order's
  `ids`, so `orderguard lookup` finds it by any of them; written with the order's
  document and the same time to live. The first order to claim a reference keeps it
  (as in the reference index): another's write does not move it.
- `og:order:{order_id}:timeline` (sorted set): score = event time (epoch ms), member =
  compact JSON with sorted keys of one normalized event: `event_time`, `received_at`,
  `stream`, `source`, `kind`, `raw_status`, `claims`, `event_id`, and `tracking_no` /
  `refund_id` / `ref` when it has one. The newest `redis.timeline_max` are kept.
- All three expire when the pipeline forgets the order: `retention.terminal_order` after its
  last event once its status is terminal, else `retention.idle_order` (on the ingestion
  clock, rounded up to the hour as the state is). An order that changes and leaves state
  in the same batch (the clock jumped, e.g. catching up a backlog) is deleted at once,
  so the view never shows an older state of an order the pipeline forgot (its `ref:`
  keys then expire on their own, pointing at no document meanwhile).
- `og:breaker:channel`, `og:breaker:carrier` (hashes): channel or carrier key -> JSON
  `{state, action, since, reason}` of its last decision: "is channel X open?" is one HGET.
- `og:hold:{customer_id}` (string, JSON `{since, reason, orders, expires_at}`): present
  while the customer's automatic shipping is paused ("is C on hold?" is one GET or
  EXISTS); deleted on release, and expires with the hold.

Only what changed is written: after each shard batch, the orders its events touched
or that emitted a correction or alert (deadlines fire without events). Each event is
put on its order's timeline once: repeated deliveries (which the shard ignores) are
left out, and a replay after a restart writes the same members again, which a sorted
set does not duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from schemas.config import Settings
from schemas.event import Event
from schemas.statuses import standard_status
from schemas.timeparse import iso
from state.evidence import LAST_AT, TERMINAL, Order
from state.records import SEVERITY, Alert, Correction, Decision
from state.shard import RETENTION_GRAIN, OrderShard, event_digest, seen_before

OrderDoc = tuple[str, bytes, int]
"""(order id, JSON document, time to live in ms)."""
TimelineEntry = tuple[str, int, bytes]
"""(order id, score: event time ms, member: the event as JSON)."""
BreakerDoc = tuple[str, str, bytes]
"""(breaker kind: channel | carrier, its key, JSON document)."""
HoldDoc = tuple[str, bytes | None, int]
"""(customer id, JSON document or None when released, time to live in ms or 0: none)."""
Alias = tuple[str, str, int]
"""(`<namespace>:<id>`, the canonical order id, time to live in ms)."""

BREAKER_KINDS = ("channel", "carrier")


@dataclass(slots=True)
class ViewUpdate:
    """What one batch changes in the view; later updates of a key replace earlier ones."""

    orders: list[OrderDoc] = field(default_factory=list)
    aliases: list[Alias] = field(default_factory=list)  # the `ids` of orders in `orders`
    timeline: list[TimelineEntry] = field(default_factory=list)  # only of orders in `orders`
    forgotten: list[str] = field(default_factory=list)  # orders that left state: delete
    breakers: list[BreakerDoc] = field(default_factory=list)
    holds: list[HoldDoc] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.orders
            or self.aliases
            or self.timeline
            or self.forgotten
            or self.breakers
            or self.holds
        )


def order_doc(order_id: str, o: Order, clock: int) -> bytes:
    """The view of one order, as the JSON stored under `order:{order_id}`."""
    status = o.status or "PENDING_PAYMENT"  # as the shard's corrections say it
    alerts = [
        {"type": typ, "severity": SEVERITY[typ], "since": iso(since), "first_seen": iso(first)}
        for typ, (first, since) in sorted((o.alerts or {}).items())
    ]
    doc = {
        "order_id": order_id,
        "status": status,
        "standard_status": standard_status(status, o.main),
        "reported_status": o.reported,
        "mismatch": o.reported is not None and o.reported != status,
        "open_alerts": alerts,
        "customer_id": o.customer,
        "channel": o.channel,
        "carrier": o.carrier,
        "tracking_numbers": list(o.tracking_numbers()),
        "ids": o.ids(),
        "version": o.version,
        "last_event_at": iso(o[LAST_AT]),
        "updated_at": iso(clock),
    }
    return orjson.dumps(doc)


def order_ttl(o: Order, clock: int, settings: Settings) -> int:
    """Milliseconds until the state forgets the order, on the ingestion clock (at least 1)."""
    r = settings.retention
    keep = o[LAST_AT] + (r.terminal_order if o.status in TERMINAL else r.idle_order)
    keep += -keep % RETENTION_GRAIN
    return max(1, keep - clock)


def timeline_member(ev: Event) -> bytes:
    """One event as a timeline member: the same event always gives the same bytes."""
    doc: dict[str, object] = {
        "event_time": iso(ev.event_ms),
        "received_at": iso(ev.received_ms),
        "stream": ev.stream,
        "source": ev.source,
        "kind": ev.kind,
        "raw_status": ev.raw_status,
        "claims": list(ev.claims),
        "event_id": ev.event_id,
    }
    if ev.tracking_no is not None:
        doc["tracking_no"] = ev.tracking_no
    if ev.refund_id is not None:
        doc["refund_id"] = ev.refund_id
    if ev.ref is not None:
        doc["ref"] = ev.ref
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def first_deliveries(events: list[Event], orders: dict[str, Order]) -> list[Event]:
    """The events the shard will apply: call before it does (it ignores repeated deliveries)."""
    out: list[Event] = []
    batch: set[tuple[str, bytes]] = set()
    for ev in events:
        oid = ev.order_id
        if oid is None:
            continue
        digest = event_digest(ev)
        o = orders.get(oid)
        if (oid, digest) in batch or (o is not None and seen_before(o.seen, digest)):
            continue
        batch.add((oid, digest))
        out.append(ev)
    return out


def orders_update(
    settings: Settings, shard: OrderShard, events: list[Event], records: list[object]
) -> ViewUpdate:
    """The view of every order a shard batch touched; an order no longer held is left out.

    `events`: the batch's first deliveries (`first_deliveries`); `records`: what the
    batch emitted. The time is the shard's clock, or the batch's last arrival when that
    is ahead (the clock waits for the slowest input partition).
    """
    orders = shard.orders
    clock = max(shard.clock, max((ev.received_ms for ev in events), default=0))
    touched = dict.fromkeys(ev.order_id for ev in events if ev.order_id is not None)
    for r in records:
        if isinstance(r, Correction):
            touched[r.order_id] = None
        elif isinstance(r, Alert) and "order_id" in r.subject:
            touched[r.subject["order_id"]] = None
    update = ViewUpdate()
    held: set[str] = set()
    for oid in touched:
        o = orders.get(oid)
        if o is None:  # it changed, then left state in the same batch (a jump of the clock)
            update.forgotten.append(oid)
            continue
        held.add(oid)
        ttl = order_ttl(o, clock, settings)
        update.orders.append((oid, order_doc(oid, o, clock), ttl))
        update.aliases.extend((ref, oid, ttl) for ref in o.ids())
    for ev in events:
        oid = ev.order_id
        if oid is not None and oid in held:
            update.timeline.append((oid, ev.event_ms, timeline_member(ev)))
    return update


def decisions_update(records: list[object]) -> ViewUpdate:
    """Breaker states and customer holds from a batch of output records, in order."""
    update = ViewUpdate()
    for r in records:
        if not isinstance(r, Decision):
            continue
        if r.breaker in BREAKER_KINDS:
            doc = {"state": r.state, "action": r.action, "since": iso(r.at_ms), "reason": r.reason}
            update.breakers.append((r.breaker, r.key, orjson.dumps(doc)))
        elif r.breaker == "customer":
            update.holds.append(_hold(r))
    return update


def _hold(d: Decision) -> HoldDoc:
    if d.state != "HOLD":
        return d.key, None, 0
    expires = d.figures.get("expires_at")
    expires_ms = expires if isinstance(expires, int) else None  # None: until released
    order = d.figures.get("order_id")  # an operator's hold names no order
    doc = {
        "since": iso(d.at_ms),
        "reason": d.reason,
        "orders": [order] if order is not None else [],
        "expires_at": iso(expires_ms),
    }
    ttl = max(1, expires_ms - d.at_ms) if expires_ms is not None else 0
    return d.key, orjson.dumps(doc), ttl
