"""Produce simulated envelopes to the input topics, as the integrations would.

Each envelope goes to the topic of its `stream`, keyed by its order id (or tracking
number) so one order's events stay in one partition and keep their order. A
malformed line (`__raw__`) is produced as its broken bytes to the orders topic, as a
misbehaving integration would. Every record must be acknowledged (acks=all,
idempotent producer) or `ProduceError` is raised: a test or demo fed half its
input would report nonsense.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.config import Settings
from schemas.keys import MessageKeys
from schemas.timeparse import TimeParseError, parse_rfc3339, wall_clock_ms

log = logging.getLogger("orderguard.kafka")


class ProduceError(RuntimeError):
    """Records were not acknowledged by Kafka."""


@dataclass
class ProduceProgress:
    """Counts a running producer updates, for a progress display in another thread (one
    progress may follow several runs: they add up)."""

    sent: int = 0
    delivered: int = 0
    waiting_until_ms: int = 0
    """In real time: the `received_at` of the next envelope while waiting for it."""


def produce_envelopes(
    settings: Settings,
    envelopes: Iterable[dict[str, Any]],
    *,
    rate: float | None = None,
    real_time: bool = False,
    stop: threading.Event | None = None,
    progress: ProduceProgress | None = None,
    flush_timeout: float | None = None,
    live_route: Callable[[dict[str, Any]], bool] | None = None,
    live_from_ms: int | None = None,
) -> int:
    """Produce every envelope; return how many were acknowledged.

    `rate`: events per second (None: as fast as the broker takes them).
    `real_time`: produce each envelope once the wall clock reaches its `received_at`
    (those in the past at once), as the integrations would have. `stop` ends the run
    early (what was sent is still flushed and checked). Raises `ProduceError` naming
    the first failure if any record was not acknowledged.
    `live_route` (with `real_time`): offered each envelope whose `received_at` is at or
    after `live_from_ms` (default: now), once due; True means it took the envelope
    (e.g. to post it to the webhook gateway) and it is not produced here. The backlog
    before `live_from_ms` always goes to Kafka with its historical `received_at`.
    """
    if rate and real_time:
        raise ValueError("give rate or real_time, not both")
    if live_route is not None and not real_time:
        raise ValueError("a live_route needs real_time")
    live_from = wall_clock_ms() if live_from_ms is None else live_from_ms
    kafka = settings.kafka
    timeout = flush_timeout if flush_timeout is not None else kafka.flush_timeout / 1000
    topics = kafka.input_topics.model_dump()
    failures: list[str] = []
    delivered = 0

    shown = progress if progress is not None else ProduceProgress()

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1
            shown.delivered += 1
        else:
            failures.append(f"{msg.topic()}: {err.str()}")

    producer = Producer(
        {
            "logger": logging.getLogger("orderguard.kafka.librdkafka"),
            "error_cb": lambda err: log.debug("kafka producer: %s", err.str()),
            "linger.ms": 20,
            "message.timeout.ms": max(1, int(timeout * 1000)),
            **kafka.client_config(),
            "acks": "all",
            "enable.idempotence": True,
            "bootstrap.servers": kafka.bootstrap_servers,
        }
    )
    keys = MessageKeys(settings)
    started = time.monotonic()
    sent = 0
    for env in envelopes:
        if stop is not None and stop.is_set():
            break
        due = _due(env) if real_time else None
        if real_time and not _wait_for(producer, due, stop, shown):
            break
        if live_route is not None and due is not None and due >= live_from and live_route(env):
            continue  # taken (not counted in `sent`): the route reports on it itself
        raw = env.get("__raw__")
        if raw is not None:
            topic, key, value = topics["orders"], None, str(raw).encode()
        else:
            stream = env.get("stream")
            if stream not in topics:
                raise ProduceError(f"envelope {sent} has no known stream: {stream!r}")
            topic, key, value = topics[stream], keys.key(env), orjson.dumps(env)
        if rate:
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0:
                producer.flush(ahead)  # serve delivery reports while pacing
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        _produce(producer, topic, key, value, on_delivery, failures)
        sent += 1
        shown.sent += 1
        if failures:
            break
    left = producer.flush(timeout)
    if failures or left or delivered != sent:
        first = failures[0] if failures else f"not acknowledged within {timeout:g}s"
        raise ProduceError(
            f"Kafka at {kafka.bootstrap_servers} did not take {sent - delivered} of {sent} "
            f"records; first error: {first}"
        )
    return delivered


def split_backlog(
    envelopes: Iterable[dict[str, Any]], live_from_ms: int
) -> tuple[Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
    """Envelopes sorted by `received_at`: those before `live_from_ms` (a malformed one
    among them), then the rest, in one pass (use up the first before the second)."""
    rest = iter(envelopes)
    first_live: list[dict[str, Any]] = []

    def backlog() -> Iterator[dict[str, Any]]:
        for env in rest:
            due = _due(env)
            if due is not None and due >= live_from_ms:
                first_live.append(env)
                return
            yield env

    return backlog(), chain(first_live, rest)


def _due(env: dict[str, Any]) -> int | None:
    """The envelope's `received_at` in epoch ms; None for a malformed one."""
    try:
        return parse_rfc3339(str(env.get("received_at", "")))
    except TimeParseError:
        return None


def _wait_for(
    producer: Producer,
    due: int | None,
    stop: threading.Event | None,
    shown: ProduceProgress,
) -> bool:
    """Sleep until `due` (serving delivery reports); False if stopped."""
    if due is None:
        return True  # a malformed line goes out at once, as it would have
    shown.waiting_until_ms = due
    while (ahead := due / 1000 - time.time()) > 0:
        if stop is not None and stop.is_set():
            return False
        producer.poll(min(ahead, 0.2))
    shown.waiting_until_ms = 0
    return True


def _produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes,
    on_delivery: Any,
    failures: list[str],
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.1)  # local queue full: make room by serving delivery reports
            if failures:
                return
        except KafkaException as e:
            err = e.args[0] if e.args else None
            failures.append(f"{topic}: {err.str() if isinstance(err, KafkaError) else e}")
            return
