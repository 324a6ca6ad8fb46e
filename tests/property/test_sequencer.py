"""The sequencer's merged order does not depend on how partitions were batched or interleaved."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.replay import RawBatch
from dataflows.sequencer import Sequencer

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


def run(per_part: list[list[RawBatch]], order: list[int]) -> tuple[list[bytes], int, list[int]]:
    seq = Sequencer(TOLERANCE)
    queues = [list(b) for b in per_part]
    out: list[RawBatch] = []
    for i in order:
        q = queues[i % len(queues)]
        if q:
            out += seq.add(q.pop(0), NOW)
    for q in queues:  # whatever the drawn order left
        while q:
            out += seq.add(q.pop(0), NOW)
    out += seq.flush()
    assert [b.n for b in out] == list(range(len(out)))
    lines = [ln for b in out for ln in b.lines]
    assert [s for s, _, _ in lines] == list(range(len(lines)))
    limits = [x for b in out for x in b.limits or ()]
    assert len(limits) == len(lines)
    return [raw for _, raw, _ in lines], max((b.clock for b in out), default=0), limits


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


def test_a_partition_not_heard_from_holds_everything_back():
    seq = Sequencer(TOLERANCE)
    assert seq.add(RawBatch("a", 0, [line("a", 0, T0)], parts=2), NOW) == []
    [out] = seq.add(RawBatch("b", 0, [line("b", 0, T0 + 5)], parts=2), NOW)
    assert out.lines == [] and out.clock == T0  # a may still send another line at T0
    [out] = seq.add(RawBatch("a", 1, [line("a", 1, T0 + 10)], parts=2), NOW)
    assert [(o["part"], o["offset"]) for _, _, o in out.lines] == [("a", 0)]
    assert out.clock == T0 + 5  # the slowest partition's position; b may send T0+5 again


def test_a_caught_up_partition_does_not_hold_the_others_back():
    seq = Sequencer(TOLERANCE)
    seq.add(RawBatch("a", 0, [], clock=T0 + 60_000, parts=2, caught_up=True), NOW)
    [out] = seq.add(RawBatch("b", 0, [line("b", 0, T0), line("b", 1, T0 + 1)], parts=2), NOW)
    assert [o["offset"] for _, _, o in out.lines] == [0]  # b's own last line may have a twin
    assert out.clock == T0 + 1  # deadlines still wait for the slowest position


def test_unreadable_lines_keep_their_place_in_their_partition():
    seq = Sequencer(TOLERANCE)
    batch = RawBatch("a", 0, [line("a", 0, T0), line("a", 1, None), line("a", 2, T0 + 1)])
    out = seq.add(batch, NOW) + seq.flush()
    assert [o["offset"] for b in out for _, _, o in b.lines] == [0, 1, 2]


def test_a_partition_ended_in_an_earlier_run_blocks_again_when_it_delivers():
    seq = Sequencer(TOLERANCE)
    seq.add(RawBatch("a", 0, [line("a", 0, T0)], parts=2, final=True), NOW)
    seq.add(RawBatch("b", 0, [line("b", 0, T0 + 1)], parts=2, final=True), NOW)
    assert seq.held() == 0
    seq = pickle.loads(pickle.dumps(seq)).resume(TOLERANCE)  # the next run: b delivers first
    b = RawBatch("b", 1, [line("b", 1, T0 + 100), line("b", 2, T0 + 150)], parts=2)
    assert seq.add(b, NOW) == []  # a has not spoken in this run: it may be behind
    [out] = seq.add(RawBatch("a", 1, [line("a", 1, T0 + 50), line("a", 2, T0 + 200)], parts=2), NOW)
    assert [(o["part"], o["offset"]) for _, _, o in out.lines] == [("a", 1), ("b", 1)]
    [out] = seq.flush()
    assert [(o["part"], o["offset"]) for _, _, o in out.lines] == [("b", 2), ("a", 2)]
