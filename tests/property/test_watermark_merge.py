"""A step's merged order does not depend on how partitions were batched or interleaved.

Each partition's batches are stamped (`dataflows.stamp`) and reach one step in any
interleaving; the step handles what lies below its watermark (`state.watermark`).
What it handles, and in which order, must be the same for every cut and interleaving:
the order a global merge of all partitions by key would give.
"""

from __future__ import annotations

import pickle

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.replay import RawBatch
from dataflows.stamp import PartitionStamp
from state.watermark import Held, Inputs, below

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
TOLERANCE = 300_000  # pipeline.max_clock_ahead
SPIKE = -1  # a line stamped far ahead of its partition (2099), then one on time
GAP = 10 * 86_400_000  # ten quiet days: the next lines follow it
NOW = T0 + 30 * (5_000 + GAP)  # the wall clock: after every plausible line, before 2099


def line(part: str, offset: int, ms: int | None) -> tuple[int, bytes, dict[str, object]]:
    if ms is None:
        raw = b"{not json"
    else:
        s, milli = divmod(ms, 1000)
        from datetime import UTC, datetime

        at = datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        raw = b'{"received_at":"%s.%03dZ","part":"%s","offset":%d}' % (
            at.encode(),
            milli,
            part.encode(),
            offset,
        )
    return (offset, raw, {"part": part, "offset": offset})


# partitions: lists of received_at steps (None: a line without a readable received_at)
steps = st.one_of(st.none(), st.integers(0, 5_000), st.just(SPIKE), st.just(GAP))
partitions = st.lists(st.lists(steps, max_size=25), min_size=1, max_size=4)


def batches_of(parts: list[list[int | None]], cuts: st.DataObject) -> list[list[RawBatch]]:
    """Each partition's lines cut into batches at drawn places, the last one final."""
    out = []
    for i, steps in enumerate(parts):
        name = f"p{i}"
        ms, lines = T0, []
        for step in steps:
            if step == SPIKE:
                if all(b"received_at" not in raw for _, raw, _ in lines):
                    lines.append(line(name, len(lines), ms))  # the first starts its clock
                lines.append(line(name, len(lines), ms + 73 * 365 * 86_400_000))
                step = 0  # the recording's clock comes back: the spike was ahead
            if step is not None:
                ms += step
            lines.append(line(name, len(lines), None if step is None else ms))
        sizes = cuts.draw(st.lists(st.integers(1, 6), min_size=len(lines) + 1))
        chunks, k = [], 0
        for size in sizes:
            if k >= len(lines):
                break
            chunks.append(lines[k : k + size])
            k += size
        chunks.append([])  # the final marker may come alone or with the last lines
        out.append(
            [
                RawBatch(name, n, c, parts=len(parts), final=n == len(chunks) - 1)
                for n, c in enumerate(chunks)
            ]
        )
    return out


class Step:
    """A stateful step's merge, as the dataflow's steps do it."""

    def __init__(self) -> None:
        self.inputs = Inputs()
        self.held: Held[bytes] = Held()
        self.stamps: dict[str, PartitionStamp] = {}
        self.out: list[tuple[int, bytes]] = []
        self.limits: list[int] = []

    def add(self, batch: RawBatch) -> None:
        stamp = self.stamps.setdefault(batch.part, PartitionStamp())
        b = stamp.stamp(batch, int(batch.part[1:]), NOW, TOLERANCE)
        if b is None:
            return
        self.inputs.update(b.part, b.clock, b.parts, b.caught_up, b.final)
        for key, raw, _ in b.lines:
            self.held.push(key, raw)
        self.limits += b.limits or ()
        self.release()

    def release(self) -> None:
        self.out += self.held.release(below(self.inputs.watermark()))  # type: ignore[arg-type]


def run(per_part: list[list[RawBatch]], order: list[int]) -> tuple[list[bytes], int, list[int]]:
    step = Step()
    queues = [list(b) for b in per_part]
    for i in order:
        q = queues[i % len(queues)]
        if q:
            step.add(q.pop(0))
    for q in queues:  # whatever the drawn order left
        while q:
            step.add(q.pop(0))
    assert len(step.held) == 0  # every partition ended: nothing is held
    keys = [k for k, _ in step.out]
    assert keys == sorted(keys)  # released in key order, never one behind another
    clock = step.inputs.frontier()
    return [raw for _, raw in step.out], clock, sorted(step.limits)


@settings(max_examples=200, deadline=None)
@given(parts=partitions, data=st.data())
def test_any_batching_and_interleaving_gives_the_same_merged_order(parts, data):
    a = batches_of(parts, data)
    b = batches_of(parts, data)
    order_a = data.draw(st.lists(st.integers(0, 3), max_size=80))
    order_b = data.draw(st.lists(st.integers(0, 3), max_size=80))
    merged_a, clock_a, limits_a = run(a, order_a)
    merged_b, clock_b, limits_b = run(b, order_b)
    assert merged_a == merged_b
    assert clock_a == clock_b
    assert limits_a == limits_b  # the same lines judged implausible, whatever the cuts
    assert clock_a < T0 + 25 * (5_000 + GAP)  # no spike moved the clock
    assert len(merged_a) == sum(len(b.lines) for p in a for b in p)  # nothing lost


def _offsets(step: Step) -> list[tuple[str, int]]:
    docs = [orjson.loads(raw) for _, raw in step.out]
    return [(d["part"][1:], d["offset"]) for d in docs]


def test_a_partition_not_heard_from_holds_everything_back():
    step = Step()
    step.add(RawBatch("p0", 0, [line("p0", 0, T0)], parts=2))
    assert step.out == []
    step.add(RawBatch("p1", 0, [line("p1", 0, T0 + 5)], parts=2))
    assert step.out == [] and step.inputs.frontier() == T0  # p0 may still send a line at T0
    step.add(RawBatch("p0", 1, [line("p0", 1, T0 + 10)], parts=2))
    assert _offsets(step) == [("0", 0)]
    assert step.inputs.frontier() == T0 + 5  # p1 may send T0+5 again


def test_a_caught_up_partition_does_not_hold_the_others_back():
    step = Step()
    step.add(RawBatch("p0", 0, [], clock=T0 + 60_000, parts=2, caught_up=True))
    step.add(RawBatch("p1", 0, [line("p1", 0, T0), line("p1", 1, T0 + 1)], parts=2))
    assert _offsets(step) == [("1", 0)]  # p1's own last line may have a twin
    assert step.inputs.frontier() == T0 + 1  # deadlines still wait for the slowest position


def test_unreadable_lines_keep_their_place_in_their_partition():
    step = Step()
    step.add(RawBatch("p0", 0, [line("p0", 0, T0), line("p0", 1, None), line("p0", 2, T0 + 1)]))
    step.add(RawBatch("p0", 1, [], final=True))
    assert [k for k, _ in step.out] == sorted(k for k, _ in step.out)
    assert len(step.out) == 3


def test_a_partition_ended_in_an_earlier_run_blocks_again_when_it_delivers():
    step = Step()
    step.add(RawBatch("p0", 0, [line("p0", 0, T0)], parts=2, final=True))
    step.add(RawBatch("p1", 0, [line("p1", 0, T0 + 1)], parts=2, final=True))
    assert len(step.held) == 0
    step = pickle.loads(pickle.dumps(step))  # the next run: p1 delivers first
    step.inputs.resume()
    step.stamps = {p: s.resume() for p, s in step.stamps.items()}
    step.out = []
    step.add(RawBatch("p1", 1, [line("p1", 1, T0 + 100), line("p1", 2, T0 + 150)], parts=2))
    assert step.out == []  # p0 has not spoken in this run: it may be behind
    step.add(RawBatch("p0", 1, [line("p0", 1, T0 + 50), line("p0", 2, T0 + 200)], parts=2))
    assert _offsets(step) == [("0", 1), ("1", 1)]
    step.inputs.finish()
    step.release()
    assert _offsets(step)[2:] == [("1", 2), ("0", 2)]
