"""Chaos: the live pipeline fed valid traffic mixed with every class of poison.

Two topic sets on one real broker get the same simulated day; one of them also gets
poison records interleaved before, between and after it (oversize, deep nesting,
wrong types, implausible times, forged and malformed commands, unknown sources,
over-long ids, times far off). `orderguard run --exit-when-caught-up` must finish both,
every valid order must end in the same status in both, every bad record must be
dead-lettered with its reason at its own offset (times far off are kept, as the
semantics say, and only noticed), and no output record may exceed the configured bound.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Producer

from schemas.config import Settings
from tests.helpers import settings_of
from tests.integration.test_run_live import (
    OUTPUTS,
    live_env,
    ok,
    orderguard,
    read_topic,
)

ORDERS = 40
NOW = "2026-03-02T12:00:00Z"  # inside the simulated day: plausible, in the past
SEED = 11


@dataclass(frozen=True, slots=True)
class Poison:
    """One bad record, where it goes and the dead-letter reason it must get."""

    name: str
    stream: str  # orders, payments, tracking or control
    value: bytes
    reason: str | None  # None: not bad input; kept, and it must change no valid order


def _envelope(stream: str, source: str, payload: Any, **over: Any) -> bytes:
    env = {"stream": stream, "source": source, "received_at": NOW, "payload": payload}
    env.update(over)
    return orjson.dumps(env)


def _deep(depth: int) -> bytes:
    inner = b"[" * depth + b"]" * depth
    return b'{"stream":"payments","source":"stripe","received_at":"%s","payload":{"x":%s}}' % (
        NOW.encode(),
        inner,
    )


_OMS = {"order_id": "TB2026030299999", "status": "已支付", "updated_at": NOW}
"""An OMS report of an order the simulated day does not have: a poison touches no valid order."""
_ANCIENT, _FUTURE = "TB2026030299998", "TB2026030299997"
"""Orders of the day's date the simulator does not make, reported with times far off."""


def _command(**payload: Any) -> bytes:
    body = {"command": "hold_release", "operator": "mallory", "customer_id": "C10036"}
    body.update(payload)
    return _envelope("control", "operator", body, event_id=f"cmd-{random.random()}")


POISONS: list[Callable[[random.Random], Poison]] = [
    lambda r: Poison("ff-900k", "orders", b"\xff" * r.randint(900_000, 990_000), "too_large"),
    lambda r: Poison(
        "quotes-600k",
        "orders",
        _envelope("orders", "taobao", {"tid": 1, "x": '"' * r.randint(600_000, 700_000)}),
        "too_large",
    ),
    lambda r: Poison(
        "operator-600k",
        "control",
        _command(operator="m" * r.randint(600_000, 700_000)),
        "too_large",
    ),
    lambda r: Poison("deep-nesting", "payments", _deep(r.randint(1_100, 5_000)), "not_json"),
    lambda r: Poison("not-json", "tracking", b"{" + bytes(r.randbytes(40)), "not_json"),
    lambda r: Poison("array", "orders", b"[1,2,3]", "not_object"),
    lambda r: Poison(
        "source-wrong-type", "orders", _envelope("orders", 42, {"tid": 1}), "bad_envelope"
    ),
    lambda r: Poison(
        "payload-wrong-type", "payments", _envelope("payments", "alipay", [1]), "bad_envelope"
    ),
    lambda r: Poison(
        "status-wrong-type",
        "orders",
        _envelope("orders", "oms", {**_OMS, "status": ["x"]}),
        "unmapped_status",
    ),
    lambda r: Poison(
        "time-wrong-type",
        "orders",
        _envelope("orders", "oms", {**_OMS, "updated_at": r.random() * 1e300}),
        "unparseable_time",
    ),
    lambda r: Poison(
        "tracking-wrong-type",
        "orders",
        _envelope("orders", "oms", {**_OMS, "tracking_no": {"no": 1}}),
        "invalid_field",
    ),
    lambda r: Poison(
        "unknown-source", "orders", _envelope("orders", "ebay", {"id": 1}), "unknown_source"
    ),
    lambda r: Poison(
        "future-received-at",
        "tracking",
        _envelope(
            "tracking",
            "sf",
            {"mailno": "SF123456789012", "opCode": "80", "acceptTime": "2026-03-02 20:00:00"},
            received_at=f"{r.randint(2030, 2099)}-01-01T00:00:00Z",
        ),
        "implausible_time",
    ),
    lambda r: Poison(
        "unparseable-received-at",
        "orders",
        _envelope("orders", "taobao", {"tid": 1}, received_at="yesterday"),
        "unparseable_time",
    ),
    lambda r: Poison(
        "order-id-10k",
        "orders",
        _envelope(
            "orders",
            "oms",
            {
                "order_id": "TB20260302" + "1" * r.randint(10_000, 12_000),
                "status": "已支付",
                "updated_at": NOW,
            },
        ),
        "invalid_order_id",
    ),
    # Times far off are not input errors (semantics: normalized, skew noticed): kept.
    lambda r: Poison(
        "ancient-received-at",
        "orders",
        _envelope(
            "orders",
            "oms",
            {**_OMS, "order_id": _ANCIENT, "updated_at": "1999-12-31T00:00:00Z"},
            received_at=f"{r.randint(1990, 1999)}-12-31T23:00:00Z",
        ),
        None,
    ),
    lambda r: Poison(
        "future-event-time",
        "orders",
        _envelope(
            "orders",
            "oms",
            {**_OMS, "order_id": _FUTURE, "updated_at": f"{r.randint(2030, 2099)}-01-01T00:00:00Z"},
        ),
        None,
    ),
    lambda r: Poison("unsigned-command", "control", _command(), "unauthenticated_command"),
    lambda r: Poison(
        "forged-command",
        "control",
        _command(signature={"key_id": "ops", "hmac": "00" * 32}),
        "unauthenticated_command",
    ),
    lambda r: Poison("command-not-json", "control", b"hold release *", "not_json"),
]


def _topic(env: dict[str, str], stream: str) -> str:
    if stream == "control":
        return env["ORDERGUARD__KAFKA__CONTROL_TOPIC"]
    return env[f"ORDERGUARD__KAFKA__INPUT_TOPICS__{stream.upper()}"]


def _produce(bootstrap: str, env: dict[str, str], poisons: list[Poison]) -> dict[tuple, Poison]:
    """Produce the poisons; their (topic, partition, offset) as the broker acknowledged them."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 10_000_000})
    landed: dict[tuple, Poison] = {}
    errors: list[str] = []

    def report(poison: Poison) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{poison.name}: {err}")
            else:
                landed[(msg.topic(), msg.partition(), msg.offset())] = poison

        return done

    for p in poisons:
        producer.produce(_topic(env, p.stream), p.value, on_delivery=report(p))
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors
    return landed


def _final_status(bootstrap: str, topic: str) -> dict[str, str]:
    last: dict[str, tuple[int, str]] = {}
    for _, value in read_topic(bootstrap, topic):
        doc = orjson.loads(value)
        seen = last.get(doc["order_id"])
        if seen is None or doc["version"] > seen[0]:
            last[doc["order_id"]] = (doc["version"], doc["status"])
    return {order: status for order, (_, status) in last.items()}


def _simulate(env: dict[str, str]) -> None:
    ok(orderguard(env, "simulate", "--orders", str(ORDERS), "--seed", str(SEED), "--to-kafka"))


def test_poison_mixed_into_live_traffic_is_dead_lettered_and_changes_no_valid_order(
    broker, tmp_path
):
    clean = live_env(broker.bootstrap, tmp_path / "clean")
    dirty = live_env(broker.bootstrap, tmp_path / "dirty")
    settings: Settings = settings_of(dirty)
    rng = random.Random(SEED)
    poisons = [make(rng) for make in POISONS for _ in range(2)]
    rng.shuffle(poisons)
    third = len(poisons) // 3

    _simulate(clean)
    landed = _produce(broker.bootstrap, dirty, poisons[:third])  # poison first...
    _simulate(dirty)  # ...then the valid day...
    landed |= _produce(broker.bootstrap, dirty, poisons[third:])  # ...then more poison

    ok(orderguard(clean, "run", "--exit-when-caught-up", timeout=300))
    # The poisoned run goes through once, then again after a restart: nothing stops it.
    ok(orderguard(dirty, "run", "--exit-when-caught-up", timeout=300))
    landed |= _produce(broker.bootstrap, dirty, [make(rng) for make in POISONS])
    ok(orderguard(dirty, "run", "--exit-when-caught-up", timeout=300))

    def out(env: dict[str, str], name: str) -> str:
        return env[f"ORDERGUARD__KAFKA__OUTPUT_TOPICS__{name.upper()}"]

    # Every valid order ends where it ends without the poison.
    want = _final_status(broker.bootstrap, out(clean, "corrected"))
    got = _final_status(broker.bootstrap, out(dirty, "corrected"))
    assert len(want) >= ORDERS and not {_ANCIENT, _FUTURE} & set(want)
    assert {o: s for o, s in got.items() if o in want} == want
    # The two kept poisons made their own orders (times far off are evidence too).
    assert set(got) - set(want) == {_ANCIENT, _FUTURE}

    # Every poison is dead-lettered, at its own offset, with its reason.
    reasons: dict[tuple, str] = {}
    for _, value in read_topic(broker.bootstrap, out(dirty, "dead_letters")):
        doc = orjson.loads(value)
        o = doc["origin"]
        reasons[(o["topic"], o["partition"], o["offset"])] = doc["reason"]
    wrong = {
        p.name: reasons.get(at, "missing")
        for at, p in landed.items()
        if reasons.get(at) != p.reason
    }
    assert not wrong, wrong

    # An event time far ahead of its ingestion is noticed: CLOCK_SKEW for the OMS.
    def oms_skew(env: dict[str, str]) -> bool:
        alerts = (orjson.loads(v) for _, v in read_topic(broker.bootstrap, out(env, "alerts")))
        return any(a["type"] == "CLOCK_SKEW" and a.get("source") == "oms" for a in alerts)

    assert oms_skew(dirty) and not oms_skew(clean)

    # No output record is larger than the configured bound.
    bound = settings.limits.output_record
    for name in OUTPUTS:
        sizes = [len(v) for _, v in read_topic(broker.bootstrap, out(dirty, name))]
        assert max(sizes, default=0) <= bound, (name, max(sizes))
