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
Live, the reference is the wall clock. In a recording (replay, or Kafka read to its
end) it is the recording's own clock: a line more than the tolerance ahead of its
partition's running maximum is held until the partition's next dated line says
whether the recording followed it (a quiet gap) or came back to where it was, within
the tolerance (the line was ahead: implausible). A next line far behind both is the
late one, and the held line is taken. A line still held when its partition ends is
taken, and a
partition's first dated line starts its clock. The verdict
depends on the partition's lines only, never on batch cuts or workers.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from connectors.replay import RawBatch, received_at_text
from schemas.timeparse import TimeParseError, parse_rfc3339

PART = "seq"
"""The one partition name of the merged stream."""

_UNBOUNDED = 1 << 62


_Line = tuple[int, bytes, dict[str, object]]


@dataclass(slots=True)
class _Part:
    clock: int = 0  # running max plausible received_at, or the source's clock (caught up)
    caught_up: bool = False
    ended: bool = False
    # a recording's line ahead of `clock`, then the undated lines after it, awaiting
    # the partition's next dated line: (line, received_ms)
    held: list[tuple[_Line, int | None]] = field(default_factory=list)


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

    def add(self, batch: RawBatch, now_ms: int | None = None) -> list[RawBatch]:
        """Take one input batch; return the merged batch it allows (or none).

        `now_ms`: the wall clock, live; None for a recording (its own clock bounds it).
        """
        self.expected = max(self.expected, batch.parts)
        p = self.parts.get(batch.part)
        if p is None:
            p = self.parts[batch.part] = _Part()
        part = batch.part
        if now_ms is None:
            for line in batch.lines:
                self._recorded(p, part, line)
            if batch.final:
                self._take_held(p, part)
        else:
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

    def _recorded(self, p: _Part, part: str, line: _Line) -> None:
        """One line of a recording, judged by the lines around it (see the module doc)."""
        received = _received_ms(line[1])
        if p.held:
            if received is None:
                p.held.append((line, None))
                return
            first = p.held[0][1]
            assert first is not None
            tol = self.tolerance
            if p.clock - tol <= received < first - tol:  # back where it was: the line was ahead
                self._push(part, p.held[0][0], p.clock, received + self.tolerance)
                del p.held[0]
            self._take_held(p, part)
        if received is not None and p.clock and received > p.clock + self.tolerance:
            p.held.append((line, received))
            return
        if received is not None and received > p.clock:
            p.clock = received
        self._push(part, line, p.clock, p.clock + self.tolerance)

    def _take_held(self, p: _Part, part: str) -> None:
        """The held lines are plausible: the first one's time becomes the clock."""
        for line, received in p.held:
            if received is not None and received > p.clock:
                p.clock = received
            self._push(part, line, p.clock, p.clock + self.tolerance)
        p.held.clear()

    def _push(self, part: str, line: _Line, key: int, limit: int) -> None:
        offset, raw, origin = line
        heapq.heappush(self.heap, (key, part, offset, raw, origin, limit))

    def resume(self, tolerance_ms: int) -> Sequencer:
        """After a restart: no partition has ended or caught up until it says so again."""
        self.tolerance = tolerance_ms  # the configuration's, which may have changed
        for p in self.parts.values():
            p.ended = p.caught_up = False
        return self

    def flush(self) -> list[RawBatch]:
        """Every input has ended: release all that is held."""
        for part, p in self.parts.items():
            self._take_held(p, part)
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
        return len(self.heap) + sum(len(p.held) for p in self.parts.values())
