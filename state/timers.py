"""A timer wheel for many per-order deadlines on the ingestion clock.

Bytewax's per-key `notify_at` scans every key with a timer on each activation,
which collapses with a million open orders; so each shard keeps its own wheel:
coarse buckets of keys (a list slot each, 8 bytes) plus a heap of bucket numbers.
A key holds its live deadline itself, so rescheduling is O(1) and stale entries
are skipped when their bucket comes up. The bucket coming due becomes an exact
min-heap (a sorted list already is one), so the hot path asks one integer comparison
per event and draining a bucket of n keys costs n log n, not the n² of popping a
sorted list's head.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

GRAIN = 900_000
"""ms per bucket: large enough that buckets are shared, small enough to sort. A bucket
costs ~150 bytes (its list, key, heap slot), and with a minute per bucket the 16 shards'
wheels held ~88 bytes an open order (one bucket per ~3 orders); 15 minutes: ~28."""


class TimerWheel:
    __slots__ = ("_buckets", "_front", "_front_b", "_heap", "entries")

    def __init__(self) -> None:
        self._buckets: dict[int, list[str]] = {}
        self._heap: list[int] = []
        self._front: list[tuple[int, str]] = []  # the bucket being drained: a heap of (due, key)
        self._front_b = -1
        self.entries = 0
        """Entries held, stale ones included: the owner rebuilds (`of`) when they pile up."""

    @classmethod
    def of(cls, deadlines: Iterable[tuple[str, int]]) -> TimerWheel:
        """A wheel holding each key's live deadline (key, due ms; 0: none) once.

        What a wheel yields depends only on those live deadlines (stale entries are
        skipped), so this is the same wheel without its stale entries.
        """
        wheel = cls()
        buckets = wheel._buckets
        for key, due in deadlines:
            if due:
                b = due // GRAIN
                bucket = buckets.get(b)
                if bucket is None:
                    buckets[b] = [key]
                else:
                    bucket.append(key)
                wheel.entries += 1
        wheel._heap = sorted(buckets)
        return wheel

    def schedule(self, key: str, due: int, old_due: int = 0) -> None:
        """Register `key` for `due` (ms); `old_due` avoids a second entry in the same bucket."""
        b = due // GRAIN
        if b <= self._front_b:  # this bucket, or one drained before it (a deadline set
            # by evaluating an earlier one, still before the drain's `now`): due at once
            heapq.heappush(self._front, (due, key))
            self.entries += 1
            return
        if old_due and old_due // GRAIN == b:
            return
        self.entries += 1
        bucket = self._buckets.get(b)
        if bucket is None:
            self._buckets[b] = [key]
            heapq.heappush(self._heap, b)
        else:
            bucket.append(key)

    def next_due(self) -> int | None:
        """A time at or before the earliest deadline; None when nothing is scheduled."""
        if self._front:
            return self._front[0][0]
        return self._heap[0] * GRAIN if self._heap else None

    def pop_next(self, now: int, due_of: Callable[[str], int]) -> tuple[int, str] | None:
        """The earliest live (due, key) with due < now, taken out; None when none is left.

        One at a time, so that a deadline the caller sets while handling one, still before
        `now`, comes out in its turn: deadlines leave in (due, key) order however they were
        registered. The caller moves or clears the key's deadline (`due_of`) before the
        next call; an entry whose key no longer holds its due is stale and skipped.
        """
        while True:
            front = self._front
            while front and front[0][0] < now:
                entry = heapq.heappop(front)
                self.entries -= 1
                if due_of(entry[1]) == entry[0]:
                    return entry  # a second entry of it is stale once the caller moves it
            if front:
                return None
            self._front_b = -1
            if not self._heap or self._heap[0] * GRAIN >= now:
                return None
            b = heapq.heappop(self._heap)
            keys = self._buckets.pop(b, ())
            entries = {(d, k) for k in keys if (d := due_of(k)) and d // GRAIN == b}
            self._front = sorted(entries)
            self.entries += len(self._front) - len(keys)
            self._front_b = b
