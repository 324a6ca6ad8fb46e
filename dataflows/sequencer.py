"""One canonical order of input, whatever the interleaving of partitions and workers.

Kafka orders records within a partition only, and how batches of different
partitions reach a step depends on timing: on worker count, on fetch sizes, on a
restart. Every stateful step downstream therefore reads one merged stream instead:
each line gets the key (its partition's running maximum `received_at`, partition,
offset) and lines leave in key order once no partition can still deliver a smaller
key. So a recording (a replay file, or Kafka read to its end) gives the same outputs
with 1 worker or 8, in one process or several, and after any number of restarts.

A partition cannot deliver a smaller key once its own running maximum has passed it,
or once it has ended. While it is caught up (live, at its end) it does not hold the
others back either: what it delivers later arrives later, and waiting for the wall
clock would add seconds of latency. Live input is merged in arrival order then, as
any real-time system must.

The merged stream's clock is the ingestion clock of `state.clock`: the slowest
partition's position, which deadlines must not pass.

A `received_at` too far ahead of the ingestion clock (`pipeline.max_clock_ahead`)
moves nothing here: one record stamped 2099 would otherwise carry every clock
downstream to 2099. Each released line carries the latest `received_at` it may have
(`RawBatch.limits`); the normalizer dead-letters one beyond it `implausible_time`.
The reference is the wall clock, live and in a recording alike: nothing was received
in the future. A recording's own lines cannot serve: "a quiet gap, then a record, then
a late retry of an older one" (every Kafka partition has them) reads exactly like "a
record stamped ahead", and a rule that took the one for the other dead-lettered valid
records. For a recording the verdict therefore depends only on which of its
`received_at` lie ahead of the moment it is replayed, never on batch cuts or workers.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from connectors.replay import RawBatch, received_at_text
from schemas.timeparse import TimeParseError, parse_rfc3339

PART = "seq"
"""The one partition name of the merged stream."""

_UNBOUNDED = 1 << 62


@dataclass(slots=True)
class _Part:
    clock: int = 0  # running max plausible received_at, or the source's clock (caught up)
    caught_up: bool = False
    ended: bool = False


def _received_ms(raw: bytes) -> int | None:
    text = received_at_text(raw)
    if not text:
        return None
    try:
        return parse_rfc3339(text.decode())
    except (TimeParseError, UnicodeDecodeError):
        return None


class Sequencer:
    """Merges `RawBatch`es of any partitions into numbered batches of partition `PART`.

    Lines of the output are `(seq, raw, origin)` with `seq` counting every line in
    merged order, and `streams` (on the batch) naming each line's partition.
    """

    def __init__(self, tolerance_ms: int) -> None:
        self.tolerance = tolerance_ms  # pipeline.max_clock_ahead
        self.parts: dict[str, _Part] = {}
        self.expected = 1
        # (key, partition, offset, raw, origin, limit): limit = latest plausible received_at
        self.heap: list[tuple[int, str, int, bytes, dict[str, object], int]] = []
        self.n = 0
        self.seq = 0
        self.clock = 0

    def add(self, batch: RawBatch, now_ms: int) -> list[RawBatch]:
        """Take one input batch; return the merged batch it allows (or none).

        `now_ms`: the wall clock; a `received_at` beyond it plus the tolerance moves nothing.
        """
        self.expected = max(self.expected, batch.parts)
        p = self.parts.get(batch.part)
        if p is None:
            p = self.parts[batch.part] = _Part()
        part = batch.part
        limit = now_ms + self.tolerance
        push = heapq.heappush
        for offset, raw, origin in batch.lines:
            received = _received_ms(raw)
            if received is not None and p.clock < received <= limit:
                p.clock = received
            push(self.heap, (p.clock, part, offset, raw, origin, limit))
        if batch.clock > p.clock:
            p.clock = batch.clock
        p.caught_up = batch.caught_up
        p.ended = batch.final  # a resumed partition that delivers again has not ended
        return self._release(final=False)

    def resume(self, tolerance_ms: int) -> Sequencer:
        """After a restart: no partition has ended or caught up until it says so again."""
        self.tolerance = tolerance_ms  # the configuration's, which may have changed
        for p in self.parts.values():
            p.ended = p.caught_up = False
        return self

    def flush(self) -> list[RawBatch]:
        """Every input has ended: release all that is held."""
        for p in self.parts.values():
            p.ended = True
        return self._release(final=True)

    def _release(self, *, final: bool) -> list[RawBatch]:
        parts = self.parts.values()
        if not final and len(self.parts) < self.expected:
            return []  # a partition not heard from yet may hold the smallest key
        blocking = [p.clock for p in parts if not (p.ended or p.caught_up)]
        bound = min(blocking) if blocking and not final else _UNBOUNDED
        open_clocks = [p.clock for p in parts if not p.ended]
        clock = min(open_clocks) if open_clocks else max((p.clock for p in parts), default=0)
        heap, pop = self.heap, heapq.heappop
        lines: list[tuple[int, bytes, dict[str, object]]] = []
        streams: list[str] = []
        limits: list[int] = []
        seq = self.seq
        while heap and heap[0][0] < bound:
            _, part, _, raw, origin, limit = pop(heap)
            lines.append((seq, raw, origin))
            streams.append(part)
            limits.append(limit)
            seq += 1
        self.seq = seq
        if not lines and clock <= self.clock:
            return []
        self.clock = max(self.clock, clock)
        out = RawBatch(
            PART, self.n, lines, clock=self.clock, parts=1, streams=streams, limits=limits
        )
        self.n += 1
        return [out]

    def held(self) -> int:
        return len(self.heap)
