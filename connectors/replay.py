"""Replay files in, replay files out.

In: one or more JSONL files of envelopes, merged by `received_at` into one
ordered stream (one partition: replay order is the input order, which is what
makes replay deterministic). Or, to scale out over processes (`replay --processes`),
that stream split into the partitions Kafka would have put each envelope in
(`KafkaSplit`, `split_recording`, `SplitReplaySource`). Out: one JSONL file per
output topic; workers write parts that `merge_parts` sorts into place once the run ends.

A partition's snapshot is `Position` (next line, next batch number), as the Kafka
source's is, so a replay with a recovery store (`replay --recovery-dir`) resumes where
its last completed epoch left off; its part files are then flushed at every batch and
kept across the restart (`trim_partial_lines` mends a line a kill cut short).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from schemas.config import Settings
from schemas.keys import CRC32_PARTITIONERS, DEFAULT_PARTITIONER, MessageKeys, kafka_partition
from state.encode import TOPICS, Encoded
from state.watermark import Alignment

ALIGNMENT_WAIT = timedelta(milliseconds=1)
"""How long a partition read ahead of the slowest one rests before it asks again."""

_RECEIVED = b'"received_at"'

Position = tuple[int, int]
"""A replay partition's snapshot: (the next line to read, the next batch number)."""


@dataclass(slots=True)
class RawBatch:
    """A slice of input lines: (seq, raw bytes, origin) each, numbered per partition.

    `clock`: the partition's ingestion position when the source knows better than the
    lines' own `received_at` (the wall clock while a live partition is caught up; an
    idle tick has no lines). `parts`: how many partitions the source has, so the
    steps downstream know how many positions make the ingestion clock.
    `caught_up`: a live partition at its end; `final`: the partition ends here.
    `limits`: each line's latest plausible `received_at`, once stamped
    (`dataflows.stamp`; a later one is dead-lettered `implausible_time`).
    """

    part: str
    n: int
    lines: list[tuple[int, bytes, dict[str, object]]]
    clock: int = 0
    parts: int = 1
    caught_up: bool = False
    final: bool = False
    limits: list[int] | None = None


def received_at_text(line: bytes) -> bytes:
    """The received_at string, found without parsing: enough to merge files in order."""
    i = line.find(_RECEIVED)
    if i == -1:
        return b""
    j = line.find(b'"', i + len(_RECEIVED))
    k = line.find(b'"', j + 1)
    return line[j + 1 : k] if j != -1 and k != -1 else b""


def _lines(path: Path, index: int) -> Iterator[tuple[bytes, int, int, bytes]]:
    last = b""
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            key = received_at_text(line) or last  # a bad line keeps its place
            last = key
            yield key, index, lineno, line


class Progress:
    """Counts lines read; on a terminal, prints events/s and position once a second."""

    def __init__(self, show: bool | None = None) -> None:
        self.read = 0
        self.started = time.monotonic()
        self._last_print = 0.0
        self._show = os.isatty(2) if show is None else show

    def advance(self, n: int) -> None:
        self.read += n
        now = time.monotonic()
        if self._show and now - self._last_print >= 1.0:
            self._last_print = now
            rate = self.read / max(now - self.started, 1e-9)
            print(f"\r  {self.read:,} events  {rate:,.0f} events/s ", end="", file=_stderr())

    def done(self) -> None:
        if self._show and self._last_print:
            print(file=_stderr())


def _stderr():
    import sys

    return sys.stderr


def _merged(paths: list[Path]) -> Iterator[tuple[bytes, int, int, bytes]]:
    """Every line of every file, merged by `received_at` (a file's own order kept)."""
    return heapq.merge(*(_lines(p, i) for i, p in enumerate(paths)))


class _ReplayPartition(StatefulSourcePartition[RawBatch, Position]):
    def __init__(
        self,
        paths: list[Path],
        batch_size: int,
        resume: Position | None,
        progress: Progress | None,
    ) -> None:
        self._paths = [str(p) for p in paths]
        merged = _merged(paths)
        self._it = enumerate(merged)
        self._batch_size = batch_size
        self._progress = progress
        self._seq, self._n = resume if resume is not None else (0, 0)
        self._ended = False
        if self._seq:
            for _ in islice(self._it, self._seq):
                pass

    def next_batch(self) -> list[RawBatch]:
        chunk = list(islice(self._it, self._batch_size))
        if not chunk:
            if self._ended:
                raise StopIteration()
            self._ended = True  # tell the steps first: nothing more comes from here
            return [RawBatch("replay", self._n, [], final=True)]
        paths = self._paths
        lines = [
            (seq, line, {"file": paths[fi], "line": lineno})
            for seq, (_key, fi, lineno, line) in chunk
        ]
        self._seq = chunk[-1][0] + 1
        batch = RawBatch("replay", self._n, lines)
        self._n += 1
        if self._progress is not None:
            self._progress.advance(len(lines))
        return [batch]

    def snapshot(self) -> Position:
        return (self._seq, self._n)


class ReplaySource(FixedPartitionedSource[RawBatch, Position]):
    def __init__(
        self, paths: list[Path], batch_size: int, progress: Progress | None = None
    ) -> None:
        self._paths = paths
        self._batch_size = batch_size
        self._progress = progress

    def list_parts(self) -> list[str]:
        return ["replay"]

    def build_part(self, step_id: str, for_part: str, resume_state: Position | None):
        return _ReplayPartition(self._paths, self._batch_size, resume_state, self._progress)


class UnmirroredPartitioner(ValueError):
    """`kafka.client` names a partitioner the split does not reproduce."""


class KafkaSplit:
    """The Kafka partition each recorded envelope would be in, had it been produced.

    Topic: the envelope's `stream` (an unknown stream or a line that is no envelope: the
    orders topic, where `connectors.kafka_envelopes` puts unparseable lines). Partition:
    as our producers choose it (the simulator's and the webhook gateway's confluent-kafka
    producers key by `schemas.keys.MessageKeys` and set no `partitioner`, so librdkafka's
    default `consistent_random` applies: CRC-32 of the key modulo the topic's partitions,
    `kafka.topic_partitions()`). A keyless record goes to a random partition in Kafka;
    here to the one the CRC-32 of its line picks, so that a split is reproducible (with
    `partitioner: consistent`, to partition 0, as librdkafka's CRC-32 of no bytes).
    """

    def __init__(self, settings: Settings) -> None:
        kafka = settings.kafka
        partitioner = str(kafka.client.get("partitioner", DEFAULT_PARTITIONER))
        if partitioner not in CRC32_PARTITIONERS:
            raise UnmirroredPartitioner(
                f"kafka.client partitioner={partitioner!r}: a replay split mirrors only "
                f"librdkafka's {' and '.join(CRC32_PARTITIONERS)} (CRC-32) partitioners"
            )
        counts = kafka.topic_partitions()
        self._counts = {s: counts[t] for s, t in kafka.source_topics().items()}
        self._keys = MessageKeys(settings)
        self._random_keyless = partitioner == "consistent_random"  # `consistent`: CRC-32 of b""

    def parts(self) -> list[str]:
        """Every partition, named as `connectors.kafka_source` names Kafka's."""
        return [f"{s}:{i}" for s, n in sorted(self._counts.items()) for i in range(n)]

    def part_of(self, line: bytes) -> str:
        try:
            env = orjson.loads(line)
        except orjson.JSONDecodeError:
            env = None
        stream = env.get("stream") if type(env) is dict else None
        key = None
        if type(stream) is str and stream in self._counts:
            key = self._keys.key(env)  # type: ignore[arg-type]
        else:
            stream = "orders"
        if key is None:
            key = line if self._random_keyless else b""
        return f"{stream}:{kafka_partition(key, self._counts[stream])}"


def split_recording(paths: list[Path], directory: Path, split: KafkaSplit) -> int:
    """Write the merged lines of `paths` into one file per partition; return the count.

    A partition file's line is `file index TAB line number TAB input line`, in the
    merged order (so the order within a partition is the order Kafka would keep).
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = {part: (directory / f"{part}.split").open("wb") for part in split.parts()}
    n = 0
    try:
        for _key, fi, lineno, line in _merged(paths):
            files[split.part_of(line)].write(b"%d\t%d\t%b\n" % (fi, lineno, line))
            n += 1
    finally:
        for f in files.values():
            f.close()
    return n


class _SplitPartition(StatefulSourcePartition[RawBatch, Position]):
    """One partition file of a split recording, read as a Kafka partition would be."""

    def __init__(
        self,
        path: Path,
        part: str,
        parts: int,
        names: list[str],
        batch_size: int,
        resume: Position | None,
        alignment: Alignment | None = None,
    ) -> None:
        self._f = path.open("rb")
        self._alignment = alignment
        self._waiting = False
        self._part, self._parts, self._names = part, parts, names
        self._batch_size = batch_size
        skip, self._n = resume if resume is not None else (0, 0)
        self._offset = 0
        self._ended = False
        for _ in islice(self._f, skip):
            self._offset += 1

    def next_batch(self) -> list[RawBatch]:
        self._waiting = self._alignment is not None and self._alignment.ahead(self._part)
        if self._waiting:
            return []
        rows = list(islice(self._f, self._batch_size))
        if not rows:
            if self._ended:
                raise StopIteration()
            self._ended = True
            return [RawBatch(self._part, self._n, [], parts=self._parts, final=True)]
        names, offset = self._names, self._offset
        lines: list[tuple[int, bytes, dict[str, object]]] = []
        for i, row in enumerate(rows):
            fi, lineno, line = row.rstrip(b"\n").split(b"\t", 2)
            lines.append((offset + i, line, {"file": names[int(fi)], "line": int(lineno)}))
        self._offset += len(rows)
        batch = RawBatch(self._part, self._n, lines, parts=self._parts)
        self._n += 1
        return [batch]

    def next_awake(self) -> datetime | None:
        """Ahead of the slowest partition: give the others the worker for a moment."""
        return datetime.now(UTC) + ALIGNMENT_WAIT if self._waiting else None

    def snapshot(self) -> Position:
        return (self._offset, self._n)

    def close(self) -> None:
        self._f.close()


class SplitReplaySource(FixedPartitionedSource[RawBatch, Position]):
    """A recording split by `split_recording`: one Bytewax partition per Kafka partition,
    spread over every worker of every process like the live Kafka source's."""

    def __init__(
        self,
        directory: Path,
        parts: list[str],
        inputs: list[Path],
        batch_size: int,
        alignment: Alignment | None = None,
    ) -> None:
        self._dir = directory
        self._parts = parts
        self._names = [str(p) for p in inputs]
        self._batch_size = batch_size
        self.alignment = alignment
        """A partition it says runs ahead of the slowest is not read (`state.watermark`)."""

    def list_parts(self) -> list[str]:
        return list(self._parts)

    def build_part(self, step_id: str, for_part: str, resume_state: Position | None):
        path = self._dir / f"{for_part}.split"
        return _SplitPartition(
            path,
            for_part,
            len(self._parts),
            self._names,
            self._batch_size,
            resume_state,
            self.alignment,
        )


class _PartsWriter(StatelessSinkPartition[list[Encoded]]):
    def __init__(self, directory: Path, worker: int, flush: bool) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._files = {t: (directory / f"{t}.{worker}.part").open("ab") for t in TOPICS}
        self._flush = flush

    def write_batch(self, items: list[list[Encoded]]) -> None:
        files = self._files
        for records in items:
            for topic, _key, sort_key, value in records:
                key = sort_key.replace("\t", " ").replace("\n", " ").encode()
                files[topic].write(key + b"\t" + value + b"\n")
        if self._flush:  # in the kernel before the epoch can complete: a kill -9 keeps it
            for f in files.values():
                f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()


class PartsSink(DynamicSink[list[Encoded]]):
    """Each worker appends to its own part files; nothing is shared between threads.

    `flush`: write every batch through to the files (with a recovery store, an epoch's
    records must survive a kill -9 of the process once Bytewax completes the epoch).
    """

    def __init__(self, directory: Path, *, flush: bool = False) -> None:
        self._dir = directory
        self._flush = flush

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PartsWriter:
        return _PartsWriter(self._dir, worker_index, self._flush)


def trim_partial_lines(parts_dir: Path) -> int:
    """Cut a part file's last line if a killed writer left it without its newline;
    return how many files were cut. Run it only while nothing writes there."""
    cut = 0
    for part in sorted(parts_dir.glob("*.part")):
        with part.open("r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                continue
            f.seek(size - 1)
            if f.read(1) == b"\n":
                continue
            keep = size - 1
            while keep > 0:  # back to the last newline (lines are short: a few KB)
                step = min(keep, 1 << 16)
                f.seek(keep - step)
                i = f.read(step).rfind(b"\n")
                if i != -1:
                    keep = keep - step + i + 1
                    break
                keep -= step
            f.truncate(keep)
            cut += 1
    return cut


def merge_parts(
    parts_dir: Path,
    out_dir: Path,
    on_line: Callable[[str, bytes], None] | None = None,
    *,
    keep: bool = False,
) -> dict[str, int]:
    """Sort every topic's parts by their sort key into `out_dir/<topic>.jsonl`.

    `keep`: leave the parts in place (a recovery store's, removed once the run is
    recorded as complete, so that a kill during the merge loses nothing)."""
    counts: dict[str, int] = {}
    for topic in TOPICS:
        rows: list[bytes] = []
        for part in sorted(parts_dir.glob(f"{topic}.*.part")):
            rows.extend(part.read_bytes().splitlines())
            if not keep:
                part.unlink()
        rows.sort(key=lambda row: row.split(b"\t", 1)[0])
        with (out_dir / f"{topic}.jsonl").open("wb") as f:
            for row in rows:
                value = row.split(b"\t", 1)[1]
                f.write(value + b"\n")
                if on_line is not None:
                    on_line(topic, value)
        counts[topic] = len(rows)
    if keep:
        return counts
    with contextlib.suppress(OSError):  # left in place if something else wrote there
        parts_dir.rmdir()
    return counts
