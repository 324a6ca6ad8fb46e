"""Merge keys, the watermark and the ingestion clock across partitions (`state.watermark`)."""

from __future__ import annotations

from state.watermark import UNBOUNDED, Held, Inputs, Queues, below, key_clock, merge_key


def test_merge_keys_sort_by_clock_then_partition_then_offset():
    keys = [merge_key(5, 0, 9), merge_key(5, 1, 0), merge_key(4, 3, 100), merge_key(5, 0, 2)]
    assert sorted(keys) == [keys[2], keys[3], keys[0], keys[1]]
    assert key_clock(merge_key(1_772_409_600_000, 65_535, (1 << 40) - 1)) == 1_772_409_600_000


def test_the_frontier_is_the_slowest_partition_once_all_have_reported():
    f = Inputs()
    f.update("orders:0", 100, 3, False, False)
    f.update("payments:0", 300, 3, False, False)
    assert (f.watermark(), f.frontier()) == (0, 0)  # one partition unheard
    f.update("tracking:0", 200, 3, False, False)
    assert (f.watermark(), f.frontier()) == (100, 100)
    f.update("orders:0", 500, 3, False, False)
    assert f.frontier() == 200


def test_a_position_never_moves_back():
    f = Inputs()
    f.update("p", 500, 1, False, False)
    f.update("p", 400, 1, False, False)
    assert f.frontier() == 500


def test_caught_up_and_ended_partitions_hold_nothing_back():
    f = Inputs()
    f.update("a", 900, 2, True, False)  # caught up: its clock is the wall clock's
    f.update("b", 100, 2, False, False)
    assert (f.watermark(), f.frontier()) == (100, 100)
    f.update("b", 150, 2, False, True)  # ended
    assert (f.watermark(), f.frontier()) == (UNBOUNDED, 900)
    f.update("a", 950, 2, False, True)
    assert f.ended() and f.frontier() == 950


def test_eof_ends_every_partition_and_resume_reopens_them():
    f = Inputs()
    f.update("a", 10, 1, False, False)
    f.finish()
    assert f.watermark() == UNBOUNDED
    f.resume()
    assert f.watermark() == 10


def test_held_items_leave_in_key_order_below_the_watermark_only():
    h: Held[str] = Held()
    for clock, part, name in [(7, 1, "late"), (3, 0, "a"), (5, 0, "b"), (3, 1, "c")]:
        h.push(merge_key(clock, part, 0), name)
    assert [x for _, x in h.release(below(5))] == ["a", "c"]  # 5 may still have a twin
    assert [x for _, x in h.release(below(UNBOUNDED))] == ["b", "late"]
    assert len(h) == 0


def test_queues_release_in_key_order_across_senders_and_ties_in_sender_order():
    q: Queues[str] = Queues()
    q.extend((1, "0"), [(merge_key(3, 0, 1), "released"), (merge_key(9, 0, 0), "later")])
    q.extend((0, "b"), [(merge_key(2, 2, 0), "b2"), (merge_key(4, 2, 1), "b4")])
    q.extend((0, "a"), [(merge_key(3, 0, 1), "direct"), (merge_key(5, 1, 0), "a5")])
    assert [x for _, x in q.release(below(5))] == ["b2", "direct", "released", "b4"]
    assert len(q) == 2
    assert [x for _, x in q.release(below(UNBOUNDED))] == ["a5", "later"]


def test_alignment_holds_back_only_a_partition_ahead_of_the_slowest_open_one():
    from state.watermark import Alignment

    board = Alignment(max_skew=10_000)
    assert not board.ahead("payments:0")  # nothing reported yet: read
    board.report("orders:0", 1_000, True)
    board.report("payments:0", 11_000, True)
    assert not board.ahead("payments:0")  # exactly the skew: still read
    board.report("payments:0", 11_001, True)
    assert board.ahead("payments:0") and not board.ahead("orders:0")  # the slowest reads on
    board.report("orders:0", 5_000, True)
    assert not board.ahead("payments:0")
    board.report("orders:0", 5_000, False)  # caught up (or ended): no longer counts
    assert not board.ahead("payments:0")
    board.report("tracking:0", 0, True)
    assert board.ahead("payments:0") and not board.ahead("tracking:0")


def test_an_aligned_split_source_reads_every_line_within_the_skew(tmp_path):
    """Payments alone run three times as fast in received_at; aligned, they wait for orders."""
    from connectors.replay import SplitReplaySource
    from dataflows.stamp import PartitionStamp
    from state.watermark import Alignment

    parts = ["orders:0", "payments:0"]
    split = tmp_path / "split"
    split.mkdir()
    base = 1_772_409_600_000  # 2026-03-02T00:00:00Z
    for part, step in (("orders:0", 1_000), ("payments:0", 3_000)):
        with (split / f"{part}.split").open("wb") as f:
            for i in range(300):
                line = b'{"stream":"x","received_at":"%s"}' % _iso(base + i * step).encode()
                f.write(b"0\t%d\t%b\n" % (i, line))

    def run(board: Alignment | None) -> tuple[dict[str, int], int]:
        source = SplitReplaySource(split, parts, [tmp_path / "in.jsonl"], 10, board)
        readers = {p: source.build_part("input", p, None) for p in parts}
        stamps = {p: PartitionStamp() for p in parts}
        read, spread, ended = dict.fromkeys(parts, 0), 0, set()
        while readers:
            for p, r in list(readers.items()):
                try:
                    batches = r.next_batch()
                except StopIteration:
                    del readers[p]
                    continue
                for batch in batches:
                    read[p] += len(batch.lines)
                    stamps[p].stamp(batch, 0, base + 10**10, 0)
                    if batch.final:
                        ended.add(p)
                    if board is not None:
                        board.report(p, stamps[p].clock, not batch.final)
            if all(read.values()) and not ended:
                spread = max(spread, stamps["payments:0"].clock - stamps["orders:0"].clock)
        return read, spread

    everything = {"orders:0": 300, "payments:0": 300}
    read, spread = run(Alignment(max_skew=20_000))
    assert read == everything
    assert spread <= 20_000 + 10 * 3_000  # the skew, plus one batch of the faster partition
    read, spread = run(None)
    assert read == everything and spread > 200_000  # unaligned, payments run far ahead


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
