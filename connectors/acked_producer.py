"""A Kafka producer for asyncio whose `send` returns only once the broker acknowledged.

The webhook gateway answers 2xx only for what Kafka stored, so each request waits
for its own delivery report. librdkafka batches the writes (`linger.ms`); the event
loop itself serves the delivery reports (`poll(0)`, every `BUSY_POLL` while records
are in flight, every `IDLE_POLL` otherwise), so a report resolves its request's future
directly: no thread hands-off, no lock contention with a poller thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.config import Kafka

log = logging.getLogger("orderguard.gateway.kafka")

_ENFORCED: dict[str, object] = {"acks": "all", "enable.idempotence": True}
BUSY_POLL = 0.001
"""Seconds between polls while records await their reports (added latency at most)."""
IDLE_POLL = 0.1
"""Seconds between polls otherwise (errors, statistics)."""
_RENEW = frozenset({KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})
"""Errors after which this producer id is refused for good: a new producer is needed."""


class ProduceFailed(RuntimeError):
    """Kafka did not acknowledge a record within the deadline (or refused it)."""


class AckedProducer:
    """One idempotent producer (acks=all) per process, shared by all requests."""

    def __init__(self, kafka: Kafka, timeout_ms: int, linger_ms: int = 2) -> None:
        self._timeout = timeout_ms / 1000
        conf: dict[str, object] = {
            "logger": logging.getLogger("orderguard.gateway.librdkafka"),
            "error_cb": self._on_error,
            "linger.ms": linger_ms,
            **kafka.client_config(),
            **_ENFORCED,
            "bootstrap.servers": kafka.bootstrap_servers,
        }
        if "delivery.timeout.ms" not in conf:
            # librdkafka gives up at the same deadline as the HTTP answer, so a record
            # reported failed (503) is not also delivered much later.
            conf.setdefault("message.timeout.ms", timeout_ms)
        self._conf = conf
        self._producer = Producer(conf)
        self._renew = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight = 0
        self._tick: asyncio.TimerHandle | None = None
        self._busy = False
        self._ready_at = 0.0
        self._ready = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._tick = loop.call_later(IDLE_POLL, self._poll)

    def _poll(self) -> None:
        assert self._loop is not None
        self._producer.poll(0)  # delivery reports run here and resolve their futures
        if self._renew:
            self._renew_producer()
        self._busy = self._in_flight > 0
        self._tick = self._loop.call_later(BUSY_POLL if self._busy else IDLE_POLL, self._poll)

    def _renew_producer(self) -> None:
        # After a timed-out record librdkafka bumps the idempotent producer's epoch; a
        # broker may answer PRODUCER_FENCED to every later record (Tansu does, after a
        # broker outage), which librdkafka does not treat as fatal: without a new
        # producer (a new producer id) the gateway would answer 503 for good.
        self._renew = False
        old, self._producer = self._producer, Producer(self._conf)
        log.warning("kafka producer fenced: replaced by a new one")
        old.purge()  # what it still holds fails now (503: the provider retries)
        old.poll(0)

    def _on_error(self, err: KafkaError) -> None:
        # Transient errors are retried by librdkafka; what it cannot deliver reaches
        # the delivery reports (and so a 503). Only fatal errors are news here.
        log.log(logging.ERROR if err.fatal() else logging.DEBUG, "kafka producer: %s", err.str())
        if err.fatal():  # this producer refuses every later record
            self._renew = True

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Produce one record and wait for the broker's acknowledgement; `ProduceFailed` if not."""
        assert self._loop is not None, "start() first"
        fut: asyncio.Future[str | None] = self._loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message, fut: Any = fut) -> None:
            self._in_flight -= 1
            if err is not None and (err.fatal() or err.code() in _RENEW):
                self._renew = True
            if not fut.done():
                fut.set_result(None if err is None else err.str())

        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        except BufferError:
            raise ProduceFailed("the local Kafka queue is full") from None
        except KafkaException as e:
            err = e.args[0] if e.args else None
            raise ProduceFailed(err.str() if isinstance(err, KafkaError) else str(e)) from None
        self._in_flight += 1
        if not self._busy:  # the first record in flight: poll soon, not at the idle pace
            self._busy = True
            if self._tick is not None:
                self._tick.cancel()
            self._tick = self._loop.call_later(BUSY_POLL, self._poll)
        # A little beyond librdkafka's own deadline: its report normally comes first.
        # One timer per record (wait_for + shield made three more futures per request).
        expiry = self._loop.call_later(self._timeout + 1.0, _expire, fut)
        try:
            error = await fut
        except TimeoutError:
            raise ProduceFailed(f"not acknowledged within {self._timeout:g}s") from None
        finally:
            expiry.cancel()
        if error is not None:
            raise ProduceFailed(error)

    async def ready(self, timeout: float = 1.0, cache_for: float = 1.0) -> bool:
        """Whether a broker answers a metadata request (cached for `cache_for` seconds)."""
        now = time.monotonic()
        if now - self._ready_at < cache_for:
            return self._ready
        loop = asyncio.get_running_loop()
        try:
            # All topics, never one by name: a named lookup makes Tansu create it.
            await loop.run_in_executor(None, lambda: self._producer.list_topics(timeout=timeout))
            self._ready = True
        except KafkaException:
            self._ready = False
        self._ready_at = time.monotonic()
        return self._ready

    def close(self) -> int:
        """Deliver what is in flight (up to the deadline); the number left undelivered."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        return self._producer.flush(self._timeout)  # serves the last reports here


def _expire(fut: asyncio.Future[str | None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())
