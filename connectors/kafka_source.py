"""Input batches from the orders, payments and tracking topics, and the control topic.

Every partition of every input topic is one Bytewax partition named
`"<stream>:<partition>"` (`stream_of_part` gives the stream back for the
normalizer). Operator commands are a fourth stream, `control`: read, sequenced and
snapshotted like the others, so a restart neither loses nor skips them. Each
partition has its own consumer with an explicit `assign` and no consumer group:
group joins are slow on Tansu, and Bytewax recovery stores the position (next
offset, next batch number) anyway, so nothing is committed to Kafka.

"Caught up" comes from what the consumer sees (`enable.partition.eof`), never
from watermarks: Tansu reports a wrong high watermark.

Message errors are never dropped: each is logged at ERROR and travels on as a line
with empty raw bytes and an origin naming topic, partition, offset and the error.
The normalizer dead-letters empty raw bytes as `not_json` (tombstones too), so
the error reaches the dead-letter topic saying where it happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import get_args

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.metrics import CAUGHT_UP, CONSUMER_LAG, INPUT_RECORDS
from connectors.replay import RawBatch
from schemas.commands import CONTROL
from schemas.config import Stream
from schemas.timeparse import wall_clock_ms
from state.watermark import Alignment

log = logging.getLogger("orderguard.kafka")

_STREAMS = frozenset(get_args(Stream)) | {CONTROL}

Position = tuple[int, int]
"""(next offset to read, next batch number); the offset may be OFFSET_BEGINNING."""


class MissingTopicError(RuntimeError):
    """An input topic does not exist on the broker (it is never auto-created here)."""


def stream_of_part(part: str) -> str:
    """The stream a partition name `"<stream>:<partition>"` belongs to."""
    return part.split(":", 1)[0]


def error_line(
    topic: str, partition: int, offset: int, err: KafkaError
) -> tuple[int, bytes, dict[str, object]]:
    """A message error as an input line: logged, then dead-lettered (`not_json`) with origin.

    Raw bytes are empty on purpose: the normalizer turns them into a `not_json` dead
    letter whose origin says where the error happened and what it was.
    """
    text = f"{err.name()}: {err.str()}"
    log.error("kafka error on %s[%d] at offset %d: %s", topic, partition, offset, text)
    origin: dict[str, object] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "error": text,
    }
    return (offset, b"", origin)


def _on_client_error(err: KafkaError) -> None:
    # Client-level errors (broker down, transport) are retried by librdkafka; with an
    # error_cb they stay out of consume(), which then only carries partition errors.
    log.log(logging.ERROR if err.fatal() else logging.WARNING, "kafka consumer: %s", err.str())


class KafkaInputPartition(StatefulSourcePartition[RawBatch, Position]):
    """One topic partition read by its own assigned consumer."""

    def __init__(
        self,
        source: KafkaInputSource,
        part: str,
        topic: str,
        partition: int,
        config: dict[str, object],
        resume: Position | None,
    ) -> None:
        self._source = source
        self._part = part
        self._topic = topic
        self._partition = partition
        self._offset, self._n = resume if resume is not None else (OFFSET_BEGINNING, 0)
        self._batch_size = source.batch_size
        self._poll_timeout = source.poll_timeout
        self._stop_at_eof = source.stop_at_eof
        self._parts = source.parts_count
        self._last_tick = 0.0
        self._last_lag = 0.0
        self._told_caught_up = False
        self._idle = False
        self._eof_stop = False
        labels = (topic, str(partition))
        self._read = INPUT_RECORDS.labels(*labels)
        self._lag = CONSUMER_LAG.labels(*labels)
        self._caught_up_gauge = CAUGHT_UP.labels(*labels)
        self._set_caught_up(False)
        self._consumer: Consumer | None = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, self._offset)])

    @property
    def caught_up(self) -> bool:
        """Whether the consumer last saw the end of the partition (and nothing since)."""
        return self._source.caught_up[self._part]

    def _set_caught_up(self, value: bool) -> None:
        self._source.caught_up[self._part] = value
        self._caught_up_gauge.set(value)

    def _update_lag(self) -> None:
        """Lag from the high watermark of the last fetch (no broker round trip)."""
        assert self._consumer is not None
        tp = TopicPartition(self._topic, self._partition)
        _, high = self._consumer.get_watermark_offsets(tp, cached=True)
        if high >= 0 and self._offset >= 0:
            self._lag.set(max(0, high - self._offset))

    def next_batch(self) -> list[RawBatch]:
        if self._eof_stop:
            raise StopIteration()
        assert self._consumer is not None, "partition used after close()"
        alignment = self._source.alignment
        if alignment is not None and alignment.ahead(self._part):
            self._idle = True  # ahead of the slowest partition: asked again after a poll wait
            return []
        # Non-blocking: one worker serves many partitions, so none may hold it up;
        # next_awake makes Bytewax wait instead when nothing was there.
        msgs = self._consumer.consume(self._batch_size, 0)
        lines: list[tuple[int, bytes, dict[str, object]]] = []
        at_end: bool | None = None  # after the last record or end-of-partition in `msgs`
        for msg in msgs:
            err = msg.error()
            if err is None:
                offset = msg.offset()
                value = msg.value()
                lines.append(
                    (
                        offset,
                        value if value is not None else b"",
                        {"topic": self._topic, "partition": self._partition, "offset": offset},
                    )
                )
                self._offset = offset + 1
                at_end = False
            elif err.code() == KafkaError._PARTITION_EOF:
                at_end = True
                if self._stop_at_eof:
                    self._eof_stop = True
            else:
                at = msg.offset()
                at = at if at is not None and at >= 0 else max(self._offset, 0)
                lines.append(error_line(self._topic, self._partition, at, err))
        self._idle = not msgs
        if at_end is not None:  # once a batch: a gauge set per record was 1% of a run
            self._set_caught_up(at_end)
        if msgs:
            self._read.inc(len(lines))
        now = time.monotonic()
        if now - self._last_lag >= self._source.tick_interval:
            self._last_lag = now
            self._update_lag()
        clock = self._clock()
        # No lines: an idle tick tells every shard this partition is caught up to
        # `clock`, once a tick interval, and at once when it has just caught up (the
        # steps downstream hold its last lines until then); the last batch says it ended.
        just_caught_up = bool(clock) and not self._told_caught_up
        quiet = not clock or (
            not just_caught_up and now - self._last_tick < self._source.tick_interval
        )
        if not lines and not self._eof_stop and quiet:
            return []
        self._told_caught_up = bool(clock)
        self._last_tick = time.monotonic()
        batch = RawBatch(
            self._part,
            self._n,
            lines,
            clock=clock,
            parts=self._parts,
            caught_up=bool(clock),
            final=self._eof_stop,
        )
        self._n += 1
        return [batch]

    def _clock(self) -> int:
        """The wall clock while caught up (less a margin for records in flight), else 0.

        A finite run (`stop_at_eof`) is a recording: like replay, its clock is the
        records' own `received_at` and stops at the last one.
        """
        if self._stop_at_eof or not self.caught_up:
            return 0
        return wall_clock_ms() - self._source.caught_up_margin_ms

    def next_awake(self) -> datetime | None:
        if self._idle:
            return datetime.now(UTC) + timedelta(seconds=self._poll_timeout)
        return None

    def snapshot(self) -> Position:
        return (self._offset, self._n)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class KafkaInputSource(FixedPartitionedSource[RawBatch, Position]):
    """Every partition of the input topics; `topics` maps stream name to topic name.

    `config` passes through to librdkafka (SASL/TLS, ...); it is never logged.
    `stop_at_eof` ends a partition once it is caught up (tests and batch jobs).
    `caught_up[part]` says, per partition built in this process, whether its
    consumer last saw the end of the partition.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Mapping[str, str],
        config: Mapping[str, object] | None = None,
        batch_size: int = 2000,
        # An idle partition is asked again after this long: at 0.1 s the wait was most of
        # the median latency (p50 170 -> 105 ms at 5k ev/s, docs/scale-out.md "Latency").
        poll_timeout: float = 0.01,
        *,
        stop_at_eof: bool = False,
        metadata_timeout: float = 10.0,
        alignment: Alignment | None = None,
    ) -> None:
        unknown = sorted(set(topics) - _STREAMS)
        if unknown:
            raise ValueError(
                f"unknown input stream(s) {', '.join(unknown)}: "
                f"expected {', '.join(sorted(_STREAMS))}"
            )
        if not topics:
            raise ValueError("no input topics given")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.bootstrap = bootstrap
        self.topics = dict(topics)
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.stop_at_eof = stop_at_eof
        self.metadata_timeout = metadata_timeout
        self.alignment = alignment
        """A partition it says runs ahead of the slowest is not read (`state.watermark`)."""
        self.caught_up: dict[str, bool] = {}
        self.parts_count = 1
        """All partitions of the input topics (from `list_parts`): the clock needs them all."""
        self.tick_interval = 1.0
        """Seconds between idle ticks of a caught-up partition."""
        self.caught_up_margin_ms = 2000
        """A caught-up partition's clock trails the wall clock by this much (records in flight)."""
        self._extra = dict(config or {})

    def _client_config(self) -> dict[str, object]:
        return {
            "logger": logging.getLogger("orderguard.kafka.librdkafka"),
            "error_cb": _on_client_error,
            **self._extra,
            "bootstrap.servers": self.bootstrap,
        }

    def list_parts(self) -> list[str]:
        """Lists all topics (a lookup by name would make Tansu create a missing one)."""
        admin = AdminClient(self._client_config())
        try:
            meta = admin.list_topics(timeout=self.metadata_timeout)
        except KafkaException as e:
            err = e.args[0] if e.args else None
            reason = err.str() if isinstance(err, KafkaError) else str(e)
            raise MissingTopicError(
                f"could not list topics at {self.bootstrap}: {reason}"
            ) from None
        parts: list[str] = []
        for stream, topic in sorted(self.topics.items()):
            found = meta.topics.get(topic)
            if found is None or found.error is not None:
                why = "does not exist" if found is None else found.error.str()
                raise MissingTopicError(
                    f"input topic {topic!r} (stream {stream}) {why} at {self.bootstrap}; "
                    "create it first (it is not auto-created)"
                )
            parts.extend(f"{stream}:{p}" for p in sorted(found.partitions))
        self.parts_count = len(parts)
        return parts

    def build_part(
        self, step_id: str, for_part: str, resume_state: Position | None
    ) -> KafkaInputPartition:
        stream, _, index = for_part.partition(":")
        config = {
            "group.id": "orderguard-input",  # required by librdkafka; never joined
            "auto.offset.reset": "earliest",  # offsets lost to retention: oldest kept, not newest
            # A fetch waits at most this long for data: Tansu holds an empty fetch for the
            # whole wait even when records arrive, which became latency here.
            "fetch.wait.max.ms": 50,
            **self._client_config(),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
        }
        return KafkaInputPartition(
            self, for_part, self.topics[stream], int(index), config, resume_state
        )
