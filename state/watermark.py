"""Merge keys and watermarks: one canonical order per step, without a step that sees it all.

Kafka orders records within a partition only, and how batches of different
partitions reach a step depends on timing: on worker count, fetch sizes, restarts.
So every input line gets a **merge key** when it is read: its partition's running
maximum `received_at`, its partition, its offset, packed into one int (`merge_key`).
A partition's keys only grow. Each stateful step hears from every partition (one
`Mark` per input batch, even an empty one) how far that partition has come, and
handles the items it holds in key order up to the **watermark**: the smallest
position of the partitions that may still deliver an earlier key. Below it nothing
can arrive any more, so every step sees exactly the sequence a global merge of all
partitions would have given it, restricted to what it holds.

A partition caught up (live, at its end) or ended holds nobody back: what it
delivers later arrives later, as in any real-time system. The **frontier** (the
ingestion clock deadlines run on) is the slowest open partition's position.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Generic, TypeVar

CLOCK_SHIFT = 56
"""Bits below the clock in a merge key: 16 for the partition, 40 for the offset."""
_PART_SHIFT = 40
_OFFSET_MASK = (1 << _PART_SHIFT) - 1
UNBOUNDED = 1 << 62
"""A watermark nothing is held behind: every input caught up or ended."""


def merge_key(clock: int, part: int, offset: int) -> int:
    """(clock, partition index, offset) as one int that sorts the same way."""
    return (clock << CLOCK_SHIFT) | (part << _PART_SHIFT) | (offset & _OFFSET_MASK)


def key_clock(key: int) -> int:
    return key >> CLOCK_SHIFT


def below(bound: int) -> int:
    """The merge keys released by watermark `bound` are those smaller than this."""
    return UNBOUNDED << CLOCK_SHIFT if bound >= UNBOUNDED else bound << CLOCK_SHIFT


@dataclass(slots=True)
class _Input:
    clock: int = 0
    caught_up: bool = False
    ended: bool = False


@dataclass(slots=True)
class Inputs:
    """What one step knows of the input partitions: each one's position and state."""

    expected: int = 1
    parts: dict[str, _Input] = field(default_factory=dict)

    def update(self, part: str, clock: int, parts: int, caught_up: bool, final: bool) -> None:
        self.expected = max(self.expected, parts)
        p = self.parts.get(part)
        if p is None:
            p = self.parts[part] = _Input()
        if clock > p.clock:
            p.clock = clock
        p.caught_up = caught_up
        p.ended = final  # a resumed partition that delivers again has not ended

    def resume(self) -> Inputs:
        """After a restart no partition has ended or caught up until it says so again."""
        for p in self.parts.values():
            p.caught_up = p.ended = False
        return self

    def finish(self) -> None:
        """The input has ended (Bytewax's EOF), whether or not each partition said so."""
        self.expected = len(self.parts)
        for p in self.parts.values():
            p.ended = True

    def watermark(self) -> int:
        """Items with a smaller key clock can no longer arrive (0: a partition is unheard)."""
        if len(self.parts) < self.expected:
            return 0
        blocking = [p.clock for p in self.parts.values() if not (p.ended or p.caught_up)]
        return min(blocking) if blocking else UNBOUNDED

    def frontier(self) -> int:
        """The ingestion clock: the slowest open partition's position."""
        if len(self.parts) < self.expected:
            return 0
        clocks = [p.clock for p in self.parts.values() if not p.ended]
        if clocks:
            return min(clocks)
        return max((p.clock for p in self.parts.values()), default=0)

    def ended(self) -> bool:
        return len(self.parts) >= self.expected and all(p.ended for p in self.parts.values())


T = TypeVar("T")


class Held(Generic[T]):
    """Items waiting for the watermark, released in key order (ties: arrival order)."""

    __slots__ = ("_heap", "_n")

    def __init__(self) -> None:
        self._heap: list[tuple[object, int, T]] = []
        self._n = 0

    def push(self, key: object, item: T) -> None:
        heapq.heappush(self._heap, (key, self._n, item))
        self._n += 1

    def release(self, bound: object) -> list[tuple[object, T]]:
        """Every item whose key is below `bound`, in key order."""
        heap, pop = self._heap, heapq.heappop
        out: list[tuple[object, T]] = []
        while heap and heap[0][0] < bound:  # type: ignore[operator]
            key, _, item = pop(heap)
            out.append((key, item))
        return out

    def __len__(self) -> int:
        return len(self._heap)


class Queues(Generic[T]):
    """Items waiting for the watermark, from senders that each send in key order.

    Cheaper than a heap: a sender's items only need their queue, and what one release
    takes is sorted once (ties, e.g. the elements of one split notification that went
    two ways, by sender: `senders` order, deterministic).
    """

    __slots__ = ("_queues",)

    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[tuple[object, T]]] = {}

    def extend(self, sender: Hashable, keyed: Iterable[tuple[object, T]]) -> None:
        q = self._queues.get(sender)
        if q is None:
            q = self._queues[sender] = deque()
        q.extend(keyed)

    def release(self, bound: object) -> list[tuple[object, T]]:
        """Every item whose key is below `bound`, in key order."""
        out: list[tuple[object, T]] = []
        runs = 0
        for sender in sorted(self._queues):
            q = self._queues[sender]
            if not q or not q[0][0] < bound:  # type: ignore[operator]
                continue
            runs += 1
            pop = q.popleft
            while q and q[0][0] < bound:  # type: ignore[operator]
                out.append(pop())
        if runs > 1:
            out.sort(key=itemgetter(0))  # stable: equal keys stay in sender order
        return out

    def __len__(self) -> int:
        return sum(map(len, self._queues.values()))


class Alignment:
    """Watermark alignment (as Flink's, FLIP-182) among the partitions one process reads.

    Every step downstream holds what a partition delivers until the slowest partition's
    clock passes it. Catching up on a backlog, a partition whose topic has fewer events
    per second of `received_at` runs ahead in batches of the same size, and what it read
    waits: at a million orders, half the payments sat in the order shards, in memory and
    in every snapshot. So a partition whose clock is more than `max_skew` ahead of the
    slowest open one is not read until that one catches up. The slowest is never held
    back, so reading always goes on; a caught-up or ended partition does not count.
    Batch cuts do not change the outputs, so neither does this. Bytewax runs a process's
    workers as threads: each report and test is one dict operation under the GIL.
    """

    __slots__ = ("_clocks", "max_skew")

    def __init__(self, max_skew: int) -> None:
        self.max_skew = max_skew
        self._clocks: dict[str, int] = {}  # the open partitions' clocks

    def report(self, part: str, clock: int, open_: bool) -> None:
        """A partition's stamped clock, and whether it still has a backlog to read."""
        if open_:
            self._clocks[part] = clock
        else:
            self._clocks.pop(part, None)

    def ahead(self, part: str) -> bool:
        """Whether `part` should wait: it runs more than `max_skew` ahead of the slowest."""
        clock = self._clocks.get(part)
        return clock is not None and clock > min(self._clocks.values()) + self.max_skew
