"""Reference -> order: events that name their order by another id than the canonical one.

An order's canonical id is its OMS id, or `<channel>:<id>` for a channel with
`canonical_id: channel` (README "Identity"). Other ids reach it here:

- tracking numbers, registered by order-side events that carry a valid one; a later
  registration of the same number wins (carriers reuse numbers). Their key is the bare
  number, the very string the order holds (no copy per order), since a reference always
  has a `:`; a number with one is keyed `tracking:<no>`, as outputs name every number;
- namespaced references (`taobao:3456…`, `stripe_pi:pi_…`), registered by the events
  that tie them to their order (`Event.links`: the OMS's channel order id, or its own
  global id as `oms:<id>` for a channel-named order; a payment intent). The first link
  wins: a link that would re-point a reference already held by another order is
  refused and counted (`conflicts`), since the first order may already have consumed
  events by it and moving them is not possible.

One index shard per slice of references (`owns`). An event without an order id is
resolved by its `ref`, else its tracking number; one whose reference nobody has
linked yet waits here (bounded by `retention.pending_tracking`, and per shard by
`pending_tracking_max` events and `pending_tracking_max_bytes` of them: the bounds of
every waiting reference; an event keeps only the prefix of its raw bytes that its
dead letter would embed) and is released right behind the event that registers the
reference. A waiting event is kept pickled (`_freeze`): pickling is paid when it starts
waiting, spread over the epoch, instead of all at the epoch close that snapshots it
(packing a backlog of waiting events there stalled the worker for most of a second),
and the bytes take less memory than the event (1.56 against 1.83 kB for a 700-byte
record), which the byte bound now counts. Expired or overflowing ones become dead
letters (`unmatched_tracking` for scans, `unlinked_reference` for the others,
`pending_overflow`): never silently dropped.

Registrations live in two generations (`current`, `previous`) rotated every half
retention period, so entries no one used for a whole period fall away without a
timestamp per entry.
"""

from __future__ import annotations

import pickle
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from schemas import errors
from schemas.config import Settings
from schemas.event import DeadLetter, Event
from state.packing import (
    IdTable,
    pack_map,
    pack_strs,
    unpack_events,
    unpack_map,
    unpack_strs,
)

Link = tuple[int, int, str, tuple[str, ...]]
"""(merge key, received_ms, order id, references): what an event with an order id tells
an index shard, the references of that shard only. A tuple, not the event: most of the
index's traffic is links, and they cross to another worker more often than not."""


def merge_key_of(item: Event | Link) -> int:
    """An index item's merge key: a `Link`'s first field, an event's `seq`."""
    return item[0] if type(item) is tuple else item.seq


Released = tuple[tuple[int, int, int], Event]
"""(ordering key, event): the key places a released event right behind its registration."""

TRACKING = "tracking:"
"""The namespace of tracking numbers in output records' `ids` (and of a `ref` naming one)."""


def tracking_key(number: str) -> str:
    """A tracking number's key: the number itself unless it could be taken for a reference."""
    return number if ":" not in number else TRACKING + number


def is_tracking(key: str) -> bool:
    return ":" not in key or key.startswith(TRACKING)


def wait_key(ev: Event) -> str | None:
    """What an event without an order id is resolved by: its `ref`, else its tracking number."""
    if ev.ref is not None:
        if ev.ref.startswith(TRACKING):  # a reference that is a tracking number
            return tracking_key(ev.ref.removeprefix(TRACKING))
        return ev.ref
    return None if ev.tracking_no is None else tracking_key(ev.tracking_no)


def registered_keys(ev: Event) -> tuple[str, ...]:
    """The references an event with an order id ties to it: its valid tracking number, links."""
    if ev.tracking_no is not None and ev.tracking_valid:
        return (tracking_key(ev.tracking_no), *ev.links)
    return ev.links


def _everything(_key: str) -> bool:
    return True


def _freeze(ev: Event) -> bytes:
    """A waiting event as its arrival time (8 bytes, for the expiry check) and its pickle."""
    return ev.received_ms.to_bytes(8, "little", signed=True) + pickle.dumps(ev, protocol=5)


def _thaw(frozen: bytes) -> Event:
    ev: Event = pickle.loads(memoryview(frozen)[8:])
    return ev


def _frozen_received(frozen: bytes) -> int:
    return int.from_bytes(frozen[:8], "little", signed=True)


def _resolved(ev: Event, order_id: str) -> Event:
    """An event on its way to its order, without what it kept for a dead letter it will
    not become (its raw bytes, origin, size and digest): with several processes most of
    these events cross to another one, and the raw bytes were most of what crossed."""
    ev.order_id = order_id
    ev.raw = ev.origin = ev.raw_size = ev.raw_sha256 = None
    return ev


class ReferenceIndex:
    EVENT_BYTES = 160
    """What a waiting event costs besides its frozen bytes (their object, list and queue slots)."""

    def __init__(self, settings: Settings) -> None:
        r = settings.retention
        self._rotate_every = max(1, r.idle_order // 2)
        self._pending_for = r.pending_tracking
        self._pending_max = r.pending_tracking_max
        self._pending_max_bytes = r.pending_tracking_max_bytes
        self.current: dict[str, str] = {}
        self.previous: dict[str, str] = {}
        self.rotated_at = 0
        self.pending: dict[str, list[bytes]] = {}  # frozen events (`_freeze`) by key
        self.pending_queue: deque[tuple[int, str]] = deque()
        self.pending_count = 0
        self.pending_bytes = 0
        self.conflicts = 0
        """Links refused because their reference already belonged to another order."""
        self._tracking = False
        self._reset_changes()

    # ------------------------------------------------------------------ snapshots
    # Most of an index is its registrations and waiting events: snapshots keep them in
    # increments (`connectors.increments`), the counters in every snapshot.
    _INCREMENTAL = (
        "current",
        "previous",
        "pending",
        "pending_queue",
        "changed",
        "rotated",
        "waits_changed",
        "queue_added",
        "queue_popped",
        "_tracking",
    )

    def _reset_changes(self) -> None:
        self.changed: set[str] = set()  # `current` keys set since the last increment
        self.rotated = False
        self.waits_changed: set[str] = set()  # `pending` keys whose events changed
        self.queue_added: list[tuple[int, str]] = []  # `pending_queue`, appended
        self.queue_popped = 0  # and popped from its left

    def track_changes(self) -> None:
        """Remember what changes, for `increment` (recovery on; off, it would only grow)."""
        self._tracking = True
        self._reset_changes()

    def increment(self, base: bool) -> tuple[bool, Any]:
        """The registrations and waiting events for a snapshot: all (`base`, or after a
        rotation), or what changed since the last increment. Forgets the changes."""
        if base or self.rotated or not self._tracking:
            inc: Any = (
                pack_map(self.current),
                pack_map(self.previous),
                _pack_waiting(self.pending),
                _pack_queue(self.pending_queue),
            )
            self._reset_changes()
            return True, inc
        current, pending = self.current, self.pending
        inc = (
            pack_map({k: current[k] for k in self.changed}),
            _pack_waiting({k: pending.get(k, []) for k in self.waits_changed}),
            _pack_queue(self.queue_added),
            self.queue_popped,
        )
        self._reset_changes()
        return False, inc

    def small_state(self) -> dict[str, Any]:
        """What a snapshot keeps beside the increments: the counters and clocks."""
        return {k: v for k, v in self.__dict__.items() if k not in self._INCREMENTAL}

    @classmethod
    def from_increments(
        cls,
        settings: Settings,
        small: dict[str, Any],
        increments: list[Any],
        ids: IdTable | None = None,
    ) -> ReferenceIndex:
        """The index `small_state` and a base with the deltas after it describe; `ids`: the
        table the steps a process resumes share their ids through."""
        self = cls(settings)
        self.__dict__.update(small)
        ids = IdTable() if ids is None else ids
        (current, previous, waiting, queue), *deltas = increments
        self.current, self.previous = unpack_map(current, ids), unpack_map(previous, ids)
        self.pending = _unpack_waiting(waiting)
        self.pending_queue = deque(_unpack_queue(queue))
        for current, waiting, added, popped in deltas:
            self.current.update(unpack_map(current, ids))
            for k, evs in _unpack_waiting(waiting).items():
                if evs:
                    self.pending[k] = evs
                else:
                    self.pending.pop(k, None)
            q = self.pending_queue
            q.extend(_unpack_queue(added))  # appended right, popped left: order-free
            for _ in range(popped):
                q.popleft()
        self._recount()
        return self

    def _recount(self) -> None:
        """The waiting events' count and bytes, from the events themselves: a store written
        before events were frozen counted other sizes."""
        self.pending_count = sum(map(len, self.pending.values()))
        self.pending_bytes = sum(self._size(f) for fs in self.pending.values() for f in fs)

    def __getstate__(self) -> dict[str, Any]:
        """Every reference as two joined strings, waiting events as their frozen bytes.

        Pickling the dicts entry by entry cost most of an epoch close in a live run.
        """
        state = self.small_state()
        state["current"] = pack_map(self.current)
        state["previous"] = pack_map(self.previous)
        state["pending"] = _pack_waiting(self.pending)
        state["pending_queue"] = _pack_queue(self.pending_queue)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        ids = IdTable()
        state["current"] = unpack_map(state["current"], ids)
        state["previous"] = unpack_map(state["previous"], ids)
        state["pending"] = _unpack_waiting(state["pending"])
        state["pending_queue"] = deque(_unpack_queue(state["pending_queue"]))
        self.__dict__.update(state)
        self._recount()
        self._tracking = False
        self._reset_changes()

    def lookup(self, key: str) -> str | None:
        oid = self.current.get(key)
        if oid is None:
            oid = self.previous.get(key)
            if oid is not None:
                self.current[key] = oid
                if self._tracking:
                    self.changed.add(key)
        return oid

    def process(
        self, items: list[Event | Link], clock: int, owns: Callable[[str], bool] = _everything
    ) -> tuple[list[Released], list[DeadLetter]]:
        """Items in input order: registrations (a `Link`, or an event with an order id) and
        waiting events (without one).

        `owns(key)`: whether this shard holds `key`; a registration is sent to the shard
        of each of its references and registers only this shard's.
        """
        released: list[Released] = []
        dead: list[DeadLetter] = []
        for ev in items:
            if type(ev) is tuple:
                seq, received, oid, keys = ev
            else:
                seq, received, oid = ev.seq, ev.received_ms, ev.order_id
                keys = registered_keys(ev) if oid is not None else ()
            now = min(received, clock)  # never past the consumed ingestion clock
            self._expire(now, dead)
            self._maybe_rotate(now)
            if oid is not None:
                for key in keys:
                    if owns(key):
                        self._register(key, oid, released, seq)
                continue
            assert type(ev) is Event
            key = wait_key(ev)
            assert key is not None
            found = self.lookup(key)
            if found is not None:
                released.append(((ev.seq, 0, ev.seq), _resolved(ev, found)))
            else:
                self._hold(key, ev, dead)
        self._expire(clock, dead)
        return released, dead

    def _register(self, key: str, oid: str, released: list[Released], seq: int) -> None:
        held = self.lookup(key)
        if held != oid:
            if held is not None and not is_tracking(key):
                self.conflicts += 1  # FIRST LINK WINS
                return
            self.current[key] = oid
            if self._tracking:
                self.changed.add(key)
        waiting = self.pending.pop(key, None)
        if waiting:
            if self._tracking:
                self.waits_changed.add(key)
            self.pending_count -= len(waiting)
            for frozen in waiting:
                self.pending_bytes -= self._size(frozen)
                w = _resolved(_thaw(frozen), oid)
                released.append(((seq, 1, w.seq), w))

    def _hold(self, key: str, ev: Event, dead: list[DeadLetter]) -> None:
        frozen = _freeze(ev)
        self.pending.setdefault(key, []).append(frozen)
        self.pending_queue.append((ev.received_ms, key))
        if self._tracking:
            self.waits_changed.add(key)
            self.queue_added.append((ev.received_ms, key))
        self.pending_count += 1
        self.pending_bytes += self._size(frozen)
        while self.pending_count > self._pending_max or (
            self.pending_bytes > self._pending_max_bytes and self.pending_count
        ):
            self._drop_oldest(errors.PENDING_OVERFLOW, dead)

    def _size(self, frozen: bytes) -> int:
        return self.EVENT_BYTES + len(frozen)

    def waiting(self, key: str) -> list[Event]:
        """The events waiting for `key`, oldest first (copies: the index keeps them frozen)."""
        return [_thaw(f) for f in self.pending.get(key, ())]

    def _expire(self, now: int, dead: list[DeadLetter]) -> None:
        q = self.pending_queue
        while q and q[0][0] + self._pending_for <= now:
            self._drop_oldest(None, dead)

    def _drop_oldest(self, overflow: str | None, dead: list[DeadLetter]) -> None:
        received, key = self.pending_queue.popleft()
        if self._tracking:
            self.queue_popped += 1
        waiting = self.pending.get(key)
        if not waiting or _frozen_received(waiting[0]) != received:
            return  # already released
        frozen = waiting.pop(0)
        if self._tracking:
            self.waits_changed.add(key)
        if not waiting:
            del self.pending[key]
        self.pending_count -= 1
        self.pending_bytes -= self._size(frozen)
        ev = _thaw(frozen)
        scan = is_tracking(key)
        value = key.removeprefix(TRACKING) if scan else key
        if overflow is not None:
            reason, why = overflow, "too many events waiting for an order; the oldest was let go"
        elif scan:
            reason = errors.UNMATCHED_TRACKING
            why = "no order claimed this tracking number within the retention period"
        else:
            reason = errors.UNLINKED_REFERENCE
            why = "no order was linked to this reference within the retention period"
        dead.append(
            DeadLetter(
                reason=reason,
                error=f"{ev.source} {'scan' if scan else 'event'} for {value}: {why}",
                raw=ev.raw if ev.raw is not None else orjson.dumps({"event_id": ev.event_id}),
                origin=ev.origin or {},
                stream=ev.stream,
                source=ev.source,
                value=value,
                received_ms=ev.received_ms,
                seq=ev.seq,
                raw_size=ev.raw_size,
                raw_sha256=ev.raw_sha256,
            )
        )

    def _maybe_rotate(self, now: int) -> None:
        if not self.rotated_at:
            self.rotated_at = now
        elif now - self.rotated_at >= self._rotate_every:
            self.previous = self.current
            self.current = {}
            self.rotated_at = now
            self.rotated = True


def _pack_waiting(pending: dict[str, list[bytes]]) -> tuple[Any, bytes, list[bytes]]:
    """Waiting events by key: keys, counts, the frozen events; a key with none: it left."""
    waiting = pending.values()
    return (
        pack_strs(list(pending)),
        array("q", map(len, waiting)).tobytes(),
        [f for fs in waiting for f in fs],
    )


def _unpack_waiting(packed: tuple[Any, bytes, list[Any]]) -> dict[str, list[bytes]]:
    keys, counts, items = packed
    if items and isinstance(items[0], tuple):  # a store written before events were frozen
        items = [_freeze(e) for e in unpack_events(items)]
    frozen = iter(items)
    return {
        k: [next(frozen) for _ in range(n)]
        for k, n in zip(unpack_strs(keys), array("q", counts), strict=True)
    }


def _pack_queue(q: Iterable[tuple[int, str]]) -> tuple[bytes, Any]:
    entries = list(q)
    return array("q", [r for r, _ in entries]).tobytes(), pack_strs([k for _, k in entries])


def _unpack_queue(packed: tuple[bytes, Any]) -> list[tuple[int, str]]:
    received, keys = packed
    return list(zip(array("q", received), unpack_strs(keys), strict=True))
