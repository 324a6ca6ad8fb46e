"""Operator commands from the command line to the control topic (the CLI's side).

`orderguard hold release` and `orderguard breaker force` build a command envelope,
sign it with the operator's control key (`control.keys`, from the environment only:
ORDERGUARD__CONTROL__KEYS__<NAME>), parse it with the pipeline's own parser
(`schemas.commands`), so that what the pipeline would dead-letter is refused here and
nothing is sent, then produce it to `kafka.control_topic` and wait for the broker's
acknowledgement. The dataflow applies it in input order and records the decision,
naming the key, on the breakers topic.
"""

from __future__ import annotations

import getpass
import logging
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.commands import (
    BREAKER_FORCE,
    CONTROL,
    HOLD_RELEASE,
    OPERATOR,
    Command,
    CommandParser,
    sign,
)
from schemas.config import ENV_PREFIX, Settings
from schemas.event import DeadLetter

log = logging.getLogger("orderguard.operator")

OPERATOR_ENV = "ORDERGUARD_OPERATOR"
CONNECT_TIMEOUT = 5.0
"""Seconds to wait for the broker's first answer: a wrong address should fail fast."""


class CommandRefused(ValueError):
    """The command is not valid (the pipeline would dead-letter it); nothing was sent."""


class PublishError(RuntimeError):
    """The broker did not acknowledge the command."""


def default_operator() -> str:
    """Who gives the command: $ORDERGUARD_OPERATOR, else the login name ("" if unknown)."""
    name = os.environ.get(OPERATOR_ENV, "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return ""


def hold_release(customer_id: str, operator: str, reason: str | None) -> dict[str, Any]:
    """The payload of `orderguard hold release CUSTOMER_ID`."""
    return _payload(HOLD_RELEASE, operator, reason, customer_id=customer_id)


def breaker_force(
    kind: str, key: str, state: str, operator: str, reason: str | None
) -> dict[str, Any]:
    """The payload of `orderguard breaker force KIND KEY STATE`."""
    return _payload(BREAKER_FORCE, operator, reason, kind=kind, key=key, state=state)


def _payload(command: str, operator: str, reason: str | None, **fields: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"command": command, "operator": operator, **fields}
    if reason is not None:
        payload["reason"] = reason
    return payload


def envelope(payload: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The envelope around a payload: received now (UTC, ms), with a fresh command id."""
    at = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "stream": CONTROL,
        "source": OPERATOR,
        "received_at": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
        "event_id": str(uuid.uuid4()),
        "payload": payload,
    }


def signing_key(settings: Settings) -> tuple[str, bytes]:
    """The name and secret of the control key to sign with; raises CommandRefused."""
    keys = settings.control.keys
    name = settings.control.signing_key
    if name is None:
        if not keys:
            raise CommandRefused(
                f"no control key to sign the command with: set {ENV_PREFIX}CONTROL__KEYS__<NAME> "
                "to the key you were given"
            )
        if len(keys) > 1:
            raise CommandRefused(
                f"several control keys ({', '.join(sorted(keys))}): set "
                f"{ENV_PREFIX}CONTROL__SIGNING_KEY to the name of the one to sign with"
            )
        [name] = keys
    return name, keys[name].get_secret_value().encode()


def prepare(settings: Settings, payload: dict[str, Any]) -> tuple[Command, bytes]:
    """Build and sign the envelope, validate it as the pipeline will; raises CommandRefused."""
    value = orjson.dumps(sign(envelope(payload), *signing_key(settings)))
    parsed = CommandParser(settings).parse(value)
    if isinstance(parsed, DeadLetter):
        raise CommandRefused(f"{parsed.error} ({parsed.reason})")
    return parsed, value


def what_follows(command: Command, breakers_topic: str) -> str:
    """What the operator will see, as the pipeline decides (README, Operator commands).

    Only a change is a decision: the pipeline knows whether there is one, the CLI does not.
    """
    where = f"on {breakers_topic} (key {command.key!r}) once the pipeline has applied it"
    if command.breaker == "customer" and command.state == "RELEASED":
        return (
            f"if {command.key} is on hold, the release appears {where}; "
            "releasing a customer not on hold emits nothing"
        )
    if command.state == "AUTO":
        return (
            f"if the breaker was forced, the return to its rules appears {where}; "
            "AUTO on a breaker not forced emits nothing"
        )
    return f"the decision appears {where}; a command that changes nothing (a repeat) emits nothing"


def message_key(command: Command) -> bytes:
    """One subject's commands share a partition, so they keep their order."""
    if command.breaker == "customer":
        return command.key.encode()
    return f"{command.breaker}:{command.key}".encode()


def publish(settings: Settings, command: Command, value: bytes) -> None:
    """Produce to the control topic and wait for the acknowledgement (acks=all).

    The topic is created like `orderguard run` would (when missing), so a command
    given before the pipeline's first run waits there for it. Raises `BrokerError`
    when the broker does not answer, `PublishError` when it does not take the command.
    """
    from connectors.broker import ensure_topics

    kafka = settings.kafka
    client = kafka.client_config()
    topic = kafka.control_topic
    ensure_topics(
        kafka.bootstrap_servers,
        {topic: kafka.topic_partitions()[topic]},  # as `run` creates it
        timeout=CONNECT_TIMEOUT,
        config=client,
    )
    timeout = kafka.flush_timeout / 1000
    failures: list[str] = []
    acked: list[bool] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            acked.append(True)
        else:
            failures.append(err.str())

    producer = Producer(
        {
            "logger": logging.getLogger("orderguard.kafka.librdkafka"),
            "error_cb": lambda err: log.debug("kafka producer: %s", err.str()),
            "message.timeout.ms": max(1, int(timeout * 1000)),
            **client,
            "acks": "all",
            "enable.idempotence": True,
            "bootstrap.servers": kafka.bootstrap_servers,
        }
    )
    try:
        producer.produce(topic, value=value, key=message_key(command), on_delivery=on_delivery)
    except (BufferError, KafkaException) as e:
        raise PublishError(f"could not send the command to {topic}: {e}") from None
    producer.flush(timeout)
    if failures:
        raise PublishError(
            f"Kafka at {kafka.bootstrap_servers} did not take the command: {failures[0]}"
        )
    if not acked:
        raise PublishError(
            f"Kafka at {kafka.bootstrap_servers} did not acknowledge the command within "
            f"{timeout:g}s (kafka.flush_timeout); it may still arrive"
        )
