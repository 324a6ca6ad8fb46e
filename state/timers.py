"""A timer wheel for many per-order deadlines on the ingestion clock.

Bytewax's per-key `notify_at` scans every key with a timer on each activation,
which collapses with a million open orders; so each shard keeps its own wheel:
one-second buckets of order ids plus a heap of bucket numbers. An order holds its
current deadline itself (`due`), so rescheduling is O(1) and stale bucket entries
are skipped when their bucket comes due.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable


class TimerWheel:
    __slots__ = ("_buckets", "_heap")

    def __init__(self) -> None:
        self._buckets: dict[int, list[str]] = {}
        self._heap: list[int] = []

    def schedule(self, key: str, due: int, old_due: int = 0) -> None:
        """Register `key` for `due` (ms); `old_due` avoids a second entry in the same bucket."""
        b = due // 1000
        if old_due and old_due // 1000 == b:
            return
        bucket = self._buckets.get(b)
        if bucket is None:
            self._buckets[b] = [key]
            heapq.heappush(self._heap, b)
        else:
            bucket.append(key)

    def next_bucket_ms(self) -> int | None:
        return self._heap[0] * 1000 if self._heap else None

    def pop_due(self, now: int, due_of: Callable[[str], int]) -> list[tuple[int, str]]:
        """All (due, key) with due < now, in (due, key) order; `due_of` reads the live deadline."""
        ready: list[tuple[int, str]] = []
        heap, buckets = self._heap, self._buckets
        while heap and heap[0] * 1000 < now:
            b = heapq.heappop(heap)
            keep: list[str] = []
            for key in buckets.pop(b, ()):
                due = due_of(key)
                if due == 0 or due // 1000 != b:
                    continue  # rescheduled elsewhere, or gone
                if due < now:
                    ready.append((due, key))
                else:
                    keep.append(key)
            if keep:
                buckets[b] = keep
                heapq.heappush(heap, b)
                break
        ready.sort()
        # the same key may have sat in a bucket twice; keep its first (only live) entry
        out: list[tuple[int, str]] = []
        last = None
        for item in ready:
            if item != last:
                out.append(item)
            last = item
        return out

    def __len__(self) -> int:
        return sum(len(v) for v in self._buckets.values())
