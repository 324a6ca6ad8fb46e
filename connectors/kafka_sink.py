"""Output records to Kafka, failing loudly when the broker does not take them.

Bytewax 0.21.1's own KafkaSink registers no delivery callback (a failed delivery is
lost silently) and crashes on BufferError. Here every record gets a delivery
callback, and the end of every epoch settles what was produced: a sink partition's
`snapshot`, which Bytewax takes after the epoch's last `write_batch` and before it
commits the epoch, waits until the broker has acknowledged every record the worker
produced (acks=all, idempotent producer) or raises `SinkDeliveryError`. So Bytewax
never commits an epoch whose records were not written, and a restart reads and
writes them again. Delivery is at least once; records carry stable ids for consumers
to de-duplicate. Waiting once an epoch rather than once a batch keeps the worker busy
while the broker acknowledges (a flush per batch cost about a tenth of the throughput).

The sink's partitions are the input partitions' names. Bytewax places both alike
(round robin over the sorted names: `dataflows.placement`), and the dataflow keys
each record batch by the input partition beside which it was made, so a record is
written by the worker that made it, without crossing. One producer per worker serves
every partition placed there.

One exception: a record Kafka refuses for what it is (too large, invalid: `PER_RECORD`)
could never be written, and failing the run on it would fail every restart too. Such a
record is sent again alone (a refused producer batch fails all its records, not only
the culprit); refused again, it is replaced by a bounded dead letter `output_too_large`
(counted in `orderguard_output_replaced_total{stage="broker"}`). A broker that refuses
even that, or takes nothing, still fails the run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.metrics import OUTPUT_REPLACED, SINK_FAILURES
from schemas.config import Limits
from state.encode import DEAD_LETTERS, DEFAULT_LIMITS, TOPICS, Encoded, oversize

log = logging.getLogger("orderguard.kafka")

_ENFORCED: dict[str, object] = {"acks": "all", "enable.idempotence": True}

PER_RECORD = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # also librdkafka's own, at produce(): message.max.bytes
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
    }
)
"""Errors about a record itself, not the broker: it can never be written, others can."""

Refused = tuple[str, bytes, bytes, str]
"""(Kafka topic, key, value, error) of a record refused with a `PER_RECORD` error."""


class SinkDeliveryError(RuntimeError):
    """Records of a batch were not acknowledged by Kafka within the timeout."""


class _Batch:
    """Outcome of what was produced since the last settle (or of one record sent alone):
    callbacks of an earlier one never count here."""

    def __init__(self, part: _WorkerProducer) -> None:
        self.part = part
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.first_error: tuple[str, str] | None = None
        self.refused: list[Refused] = []

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            self.part.delivered += 1
        elif err.code() in PER_RECORD:
            self.refused.append(
                (msg.topic() or "?", msg.key() or b"", msg.value() or b"", err.str())
            )
        else:
            self.fail(msg.topic() or "?", err.str())

    def fail(self, topic: str, error: str) -> None:
        SINK_FAILURES.labels(topic).inc()
        self.failed += 1
        self.part.failed += 1
        if self.first_error is None:
            self.first_error = (topic, error)


class _WorkerProducer:
    """One worker's producer: every sink partition placed on the worker writes through it."""

    def __init__(
        self,
        config: dict[str, object],
        topics: Mapping[str, str],
        flush_timeout: float,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._producer = Producer(config)
        self._topics = dict(topics)
        self._logical = {real: name for name, real in topics.items()}
        self._timeout = flush_timeout
        self._limits = limits
        self._pending = _Batch(self)
        self.replaced = 0
        """Records refused by Kafka for what they are, replaced by a dead letter."""
        self.delivered = 0
        """Records the broker acknowledged, since this producer was built."""
        self.failed = 0
        """Records whose delivery failed (reported by librdkafka or refused locally)."""

    def send(self, items: list[list[Encoded]]) -> None:
        """Produce without waiting; a failure already reported fails the batch at once."""
        batch = self._pending
        deadline = time.monotonic() + self._timeout
        for records in items:
            for topic, key, _sort_key, value in records:
                self._produce(batch, self._topics[topic], key.encode(), value, deadline)
        self._producer.poll(0)  # serve the delivery reports that are in
        if batch.failed:
            raise _delivery_error(batch, len(self._producer), self._timeout)

    def settle(self) -> None:
        """Wait until the broker acknowledged everything produced; raise if it did not."""
        batch, self._pending = self._pending, _Batch(self)
        remaining = self._producer.flush(self._timeout)
        if batch.failed or remaining:
            raise _delivery_error(batch, remaining, self._timeout)
        for refused in batch.refused:
            self._replace(refused)

    def _replace(self, refused: Refused) -> None:
        """A refused record alone again; refused again, its bounded dead letter instead."""
        topic, key, value, error = refused
        error = self._alone(topic, key, value) or ""
        if not error:
            return  # another record of its producer batch was the cause
        name = self._logical.get(topic, topic)
        log.warning(
            "Kafka refused a %s record of %d bytes (%s): dead-lettered", name, len(value), error
        )
        record = (name, key.decode("utf-8", "replace"), "", value)
        dead = oversize(record, self._limits, f"Kafka refused the record: {error}")
        dl_topic = self._topics[DEAD_LETTERS]
        again = self._alone(dl_topic, dead[1].encode(), dead[3])
        if again:
            raise SinkDeliveryError(
                f"Kafka refused a {name} record ({error}) and its dead letter ({again})"
            )
        self.replaced += 1
        OUTPUT_REPLACED.labels("broker").inc()

    def _alone(self, topic: str, key: bytes, value: bytes) -> str | None:
        """Produce one record and wait for it: None once delivered, the error if refused
        for what it is; any other failure raises `SinkDeliveryError`."""
        deadline = time.monotonic() + self._timeout
        batch = _Batch(self)
        self._produce(batch, topic, key, value, deadline)
        remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        if batch.failed or remaining:
            raise _delivery_error(batch, remaining, self._timeout)
        return batch.refused[0][3] if batch.refused else None

    def _produce(
        self, batch: _Batch, topic: str, key: bytes, value: bytes, deadline: float
    ) -> None:
        batch.sent += 1
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=batch.on_delivery)
                return
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then retry.
                if time.monotonic() >= deadline:
                    batch.fail(topic, "local producer queue full")
                    raise _delivery_error(batch, len(self._producer), self._timeout) from None
                self._producer.poll(0.1)
            except KafkaException as e:
                err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
                if err is not None and err.code() in PER_RECORD:
                    batch.refused.append((topic, key, value, err.str()))
                    return
                batch.fail(topic, str(err.str() if err is not None else e))
                raise _delivery_error(batch, len(self._producer), self._timeout) from None

    def close(self) -> None:
        left = self._producer.flush(self._timeout)
        if left:
            log.error("Kafka sink closed with %d records undelivered", left)


class _KafkaOutputPartition(StatefulSinkPartition[list[Encoded], None]):
    """A sink partition: its state is nothing, its snapshot the epoch's settling."""

    def __init__(self, producer: _WorkerProducer) -> None:
        self._producer = producer

    def write_batch(self, values: list[list[Encoded]]) -> None:
        self._producer.send(values)

    def snapshot(self) -> None:
        self._producer.settle()

    def close(self) -> None:
        self._producer.close()


def _on_error(err: KafkaError) -> None:
    # librdkafka retries transient errors itself; what it cannot deliver reaches the
    # delivery callbacks and so SinkDeliveryError. Only fatal errors are news here.
    log.log(logging.ERROR if err.fatal() else logging.DEBUG, "kafka producer: %s", err.str())


def _delivery_error(batch: _Batch, undelivered: int, timeout: float) -> SinkDeliveryError:
    topic, error = batch.first_error or ("?", f"not acknowledged within {timeout:g}s")
    return SinkDeliveryError(
        f"Kafka did not take {batch.failed + undelivered} of {batch.sent} records "
        f"({batch.failed} failed, {undelivered} undelivered after {timeout:g}s); "
        f"first error on topic {topic}: {error}"
    )


class KafkaOutputSink(FixedPartitionedSink[list[Encoded], None]):
    """Record batches, keyed by their sink partition's index (`part_fn`), to Kafka.

    `topics` maps each of corrected/alerts/breakers/dead_letters to its Kafka topic.
    `parts`: the input partitions' names, whose sorted order the keys index (a key
    beyond them wraps around, as Bytewax does).
    `config` is passed through to librdkafka (security, linger, message.timeout.ms,
    ...) except acks and idempotence, which this sink's guarantee depends on.
    `message.timeout.ms` defaults to the flush timeout, so a record that cannot be
    delivered is reported failed rather than left in flight.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Mapping[str, str],
        parts: Sequence[str],
        config: Mapping[str, object] | None = None,
        flush_timeout: float = 30.0,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        missing = [t for t in TOPICS if t not in topics]
        if missing:
            raise ValueError(f"no Kafka topic given for output(s): {', '.join(missing)}")
        if not parts:
            raise ValueError("the Kafka sink needs the input partitions' names")
        extra = dict(config or {})
        if str(extra.get("acks", "all")).lower() not in ("all", "-1"):
            raise ValueError(f"Kafka sink requires acks=all, got {extra['acks']!r}")
        if str(extra.get("enable.idempotence", True)).lower() != "true":
            raise ValueError("Kafka sink requires enable.idempotence=true")
        if "delivery.timeout.ms" not in extra:
            extra.setdefault("message.timeout.ms", int(flush_timeout * 1000))
        self._config: dict[str, object] = {
            "logger": logging.getLogger("orderguard.kafka.librdkafka"),
            "error_cb": _on_error,
            **extra,
            **_ENFORCED,
            "bootstrap.servers": bootstrap,
        }
        self._topics = dict(topics)
        self._timeout = flush_timeout
        self._limits = limits
        self._parts = sorted(parts)
        self._by_worker: dict[int, _WorkerProducer] = {}
        self.producers: list[_WorkerProducer] = []
        """The producers built so far (one per worker), for their counters."""

    def list_parts(self) -> list[str]:
        return list(self._parts)

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _KafkaOutputPartition:
        # Bytewax builds and drives a worker's partitions on that worker's thread
        worker = threading.get_ident()
        producer = self._by_worker.get(worker)
        if producer is None:
            producer = _WorkerProducer(self._config, self._topics, self._timeout, self._limits)
            self._by_worker[worker] = producer
            self.producers.append(producer)
        return _KafkaOutputPartition(producer)
