"""Replay part files kept across a kill: a half-written last line is cut, nothing else."""

from __future__ import annotations

from pathlib import Path

from connectors.replay import PartsSink, _SplitPartition, merge_parts, trim_partial_lines


def test_a_line_cut_short_by_a_kill_is_removed_and_whole_lines_are_kept(tmp_path: Path):
    whole = tmp_path / "corrected.0.part"
    whole.write_bytes(b"a\t{}\nb\t{}\n")
    cut = tmp_path / "corrected.1.part"
    cut.write_bytes(b"a\t{}\n" + b"b\t{" + b"x" * 200_000)  # longer than one read back
    only = tmp_path / "alerts.0.part"
    only.write_bytes(b"c\t{")
    empty = tmp_path / "breakers.0.part"
    empty.write_bytes(b"")
    assert trim_partial_lines(tmp_path) == 2
    assert whole.read_bytes() == b"a\t{}\nb\t{}\n"
    assert cut.read_bytes() == b"a\t{}\n"
    assert only.read_bytes() == b""
    assert empty.read_bytes() == b""


def test_flushed_parts_reach_the_file_at_every_batch_and_append_across_runs(tmp_path: Path):
    parts = tmp_path / "parts"
    first = PartsSink(parts, flush=True).build("out", 0, 1)
    first.write_batch([[("corrected", "k", "s1", b"{}")]])
    assert (parts / "corrected.0.part").read_bytes() == b"s1\t{}\n"  # before close
    first.close()
    again = PartsSink(parts, flush=True).build("out", 0, 1)
    again.write_batch([[("corrected", "k", "s0", b"[]")]])
    again.close()
    counts = merge_parts(parts, tmp_path, keep=True)
    assert counts["corrected"] == 2
    assert (tmp_path / "corrected.jsonl").read_bytes() == b"[]\n{}\n"
    assert (parts / "corrected.0.part").exists()  # kept until the store is marked complete


def test_a_split_partition_resumes_at_its_line_and_batch_number(tmp_path: Path):
    path = tmp_path / "orders:0.split"
    path.write_bytes(b"".join(b"0\t%d\t{}\n" % i for i in range(1, 6)))
    part = _SplitPartition(path, "orders:0", 1, ["in.jsonl"], 2, None)
    part.next_batch()
    assert part.snapshot() == (2, 1)
    part.close()
    resumed = _SplitPartition(path, "orders:0", 1, ["in.jsonl"], 2, (2, 1))
    [batch] = resumed.next_batch()
    assert batch.n == 1
    assert [seq for seq, _, _ in batch.lines] == [2, 3]
    assert batch.lines[0][2] == {"file": "in.jsonl", "line": 3}
    resumed.close()
