"""Tracking number -> order, for scans that carry only the tracking number.

One index shard per slice of tracking numbers. Order-side events register the
numbers they carry; a scan whose number no order holds yet waits here (bounded
by `retention.pending_tracking`, and per shard by `pending_tracking_max` scans and
`pending_tracking_max_bytes` of them; a scan keeps only the prefix of its raw bytes
that its dead letter would embed) and is released right
behind the event that registers the number. Expired or overflowing scans become
dead letters: kept until an order claims them, never silently dropped.

Registrations live in two generations (`current`, `previous`) rotated every half
retention period, so entries no one used for a whole period fall away without a
timestamp per entry.
"""

from __future__ import annotations

from collections import deque

import orjson

from schemas.config import Settings
from schemas.event import DeadLetter, Event

Released = tuple[tuple[int, int, int], Event]
"""(ordering key, event): the key places a released scan right behind its registration."""


class TrackingIndex:
    EVENT_BYTES = 512
    """What a waiting scan costs besides its raw bytes (the Event, its strings, the queue)."""

    def __init__(self, settings: Settings) -> None:
        r = settings.retention
        self._rotate_every = max(1, r.idle_order // 2)
        self._pending_for = r.pending_tracking
        self._pending_max = r.pending_tracking_max
        self._pending_max_bytes = r.pending_tracking_max_bytes
        self.current: dict[str, str] = {}
        self.previous: dict[str, str] = {}
        self.rotated_at = 0
        self.pending: dict[str, list[Event]] = {}
        self.pending_queue: deque[tuple[int, str]] = deque()
        self.pending_count = 0
        self.pending_bytes = 0

    def __setstate__(self, state: dict[str, object]) -> None:
        """A snapshot from before the byte bound resumes with it at its default."""
        self.__dict__.update(state)
        if "pending_bytes" not in state:
            self._pending_max_bytes = Settings().retention.pending_tracking_max_bytes
            waiting = [e for w in self.pending.values() for e in w]
            for e in waiting:  # Events pickled before they had these slots
                if not hasattr(e, "raw_size"):
                    e.raw_size = e.raw_sha256 = None
            self.pending_bytes = sum(map(self._size, waiting))

    def lookup(self, tracking_no: str) -> str | None:
        oid = self.current.get(tracking_no)
        if oid is None:
            oid = self.previous.get(tracking_no)
            if oid is not None:
                self.current[tracking_no] = oid
        return oid

    def process(self, items: list[Event], clock: int) -> tuple[list[Released], list[DeadLetter]]:
        """Items in input order: registrations (with order id) and orphan scans (without)."""
        released: list[Released] = []
        dead: list[DeadLetter] = []
        for ev in items:
            now = min(ev.received_ms, clock)  # never past the consumed ingestion clock
            self._expire(now, dead)
            self._maybe_rotate(now)
            t = ev.tracking_no
            assert t is not None
            if ev.order_id is not None:
                if self.lookup(t) != ev.order_id:
                    self.current[t] = ev.order_id
                waiting = self.pending.pop(t, None)
                if waiting:
                    self.pending_count -= len(waiting)
                    for w in waiting:
                        self.pending_bytes -= self._size(w)
                        w.order_id = ev.order_id
                        w.raw = w.origin = None
                        released.append(((ev.seq, 1, w.seq), w))
                continue
            oid = self.lookup(t)
            if oid is not None:
                ev.order_id = oid
                released.append(((ev.seq, 0, ev.seq), ev))
            else:
                self._hold(ev, dead)
        self._expire(clock, dead)
        return released, dead

    def _hold(self, ev: Event, dead: list[DeadLetter]) -> None:
        t = ev.tracking_no or ""
        self.pending.setdefault(t, []).append(ev)
        self.pending_queue.append((ev.received_ms, t))
        self.pending_count += 1
        self.pending_bytes += self._size(ev)
        while self.pending_count > self._pending_max or (
            self.pending_bytes > self._pending_max_bytes and self.pending_count
        ):
            self._drop_oldest("pending_overflow", dead)

    def _size(self, ev: Event) -> int:
        return self.EVENT_BYTES + (len(ev.raw) if ev.raw is not None else 0)

    def _expire(self, now: int, dead: list[DeadLetter]) -> None:
        q = self.pending_queue
        while q and q[0][0] + self._pending_for <= now:
            self._drop_oldest("unmatched_tracking", dead)

    def _drop_oldest(self, reason: str, dead: list[DeadLetter]) -> None:
        received, t = self.pending_queue.popleft()
        waiting = self.pending.get(t)
        if not waiting or waiting[0].received_ms != received:
            return  # already released
        ev = waiting.pop(0)
        if not waiting:
            del self.pending[t]
        self.pending_count -= 1
        self.pending_bytes -= self._size(ev)
        why = (
            "no order claimed this tracking number within the retention period"
            if reason == "unmatched_tracking"
            else "too many scans waiting for an order; the oldest was let go"
        )
        dead.append(
            DeadLetter(
                reason=reason,
                error=f"{ev.source} scan for {t}: {why}",
                raw=ev.raw if ev.raw is not None else orjson.dumps({"event_id": ev.event_id}),
                origin=ev.origin or {},
                stream=ev.stream,
                source=ev.source,
                value=t,
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
