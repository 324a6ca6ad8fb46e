"""Give every input line its merge key, on the worker that read it.

One `PartitionStamp` per input partition (a stateful step keyed by the partition,
placed on its reader's worker: `dataflows.placement`), so its running maximum
`received_at` survives restarts in the same snapshot as the partition's offset.
The key is what the old global sequencer sorted by — (running maximum
`received_at`, partition, offset), `state.watermark.merge_key` — but nothing is
merged here: each step downstream merges its own share (`state.watermark`).

A `received_at` too far ahead of the wall clock (`pipeline.max_clock_ahead`)
moves nothing: one record stamped 2099 would otherwise carry every clock
downstream to 2099. Each line carries the latest `received_at` it may have
(`RawBatch.limits`); the normalizer dead-letters one beyond it `implausible_time`.
The reference is the wall clock, live and in a recording alike: nothing was
received in the future. A recording's own lines cannot serve: "a quiet gap, then a
record, then a late retry of an older one" (every Kafka partition has them) reads
exactly like "a record stamped ahead", and a rule that took the one for the other
dead-lettered valid records. For a recording the verdict therefore depends only on
which of its `received_at` lie ahead of the moment it is replayed, never on batch
cuts or workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.replay import RawBatch, received_at_text
from schemas.timeparse import TimeParseError, parse_rfc3339
from state.watermark import merge_key


def _received_ms(raw: bytes) -> int | None:
    text = received_at_text(raw)
    if not text:
        return None
    try:
        return parse_rfc3339(text.decode())
    except (TimeParseError, UnicodeDecodeError):
        return None


def part_indexes(parts: list[str]) -> dict[str, int]:
    """Each partition's place among all of them (sorted names), the middle of its keys."""
    return {p: i for i, p in enumerate(sorted(parts))}


@dataclass(slots=True)
class PartitionStamp:
    """One partition's running maximum `received_at` and what it last told downstream."""

    clock: int = 0
    told: tuple[int, bool, bool] = (0, False, False)  # clock, caught_up, final

    def stamp(self, batch: RawBatch, index: int, now_ms: int, tolerance_ms: int) -> RawBatch | None:
        """The batch with merge keys for offsets, or None when it tells nothing new.

        `index`: the partition's place (`part_indexes`); `now_ms`: the wall clock.
        """
        limit = now_ms + tolerance_ms
        clock = self.clock
        lines: list[tuple[int, bytes, dict[str, object]]] = []
        for offset, raw, origin in batch.lines:
            received = _received_ms(raw)
            if received is not None and clock < received <= limit:
                clock = received
            lines.append((merge_key(clock, index, offset), raw, origin))
        if batch.clock > clock:
            clock = batch.clock
        self.clock = clock
        told = (clock, batch.caught_up, batch.final)
        if not lines and told == self.told:
            return None
        self.told = told
        return RawBatch(
            batch.part,
            batch.n,
            lines,
            clock=clock,
            parts=batch.parts,
            caught_up=batch.caught_up,
            final=batch.final,
            limits=[limit] * len(lines) if lines else None,
        )

    def resume(self) -> PartitionStamp:
        """After a restart, tell downstream again whatever the first batch says."""
        self.told = (0, False, False)
        return self
