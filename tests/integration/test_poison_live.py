"""Issue 11, finding 1: no single record stops `orderguard run` (real broker, no mocks).

Before `limits:`, a 900 kB record of 0xff bytes made a 1.2 MB dead letter the producer
refused: `run` exited 1 (SinkDeliveryError) and every restart read the record and died
again, so nothing behind it was ever processed. Each poison of the finding goes through
Tansu here: the run finishes its input, corrects the orders behind the poison,
dead-letters each poison `too_large` with a bounded record, and a restart carries on.

Tansu takes records of any size (5 MB here; it ignores a topic's max.message.bytes);
librdkafka's producer refuses records over its `message.max.bytes` (1,000,000 by
default) at produce(), so the 5 MB poison is produced with that raised.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import orjson
from confluent_kafka import Producer

from connectors.broker import ensure_topics
from schemas.config import load_settings
from tests.integration.test_run_live import (
    DAY_1,
    DAY_2,
    ORDERS,
    OUTPUTS,
    corrections_per_order,
    live_env,
    ok,
    orderguard,
    read_topic,
    simulated_order_ids,
)

CONTROL = orjson.dumps(
    {
        "source": "operator",
        "stream": "control",
        "received_at": "2026-03-02T12:00:00.000Z",
        "event_id": "9d1c4c1e-0000-4000-8000-000000000001",
        "payload": {"command": "hold_release", "customer_id": "C1", "operator": "o" * 600_000},
    }
)


def produce(bootstrap: str, records: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 10_000_000})
    failed: list[object] = []
    for topic, value in records:
        producer.produce(topic, value, on_delivery=lambda e, _m: e and failed.append(e))
    assert producer.flush(30) == 0 and not failed, failed


def test_poison_records_are_dead_lettered_and_the_run_goes_on(broker, tmp_path):
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    topic = {s: env[f"ORDERGUARD__KAFKA__INPUT_TOPICS__{s.upper()}"] for s in ("orders",)}
    topic["tracking"] = env["ORDERGUARD__KAFKA__INPUT_TOPICS__TRACKING"]
    topic["control"] = env["ORDERGUARD__KAFKA__CONTROL_TOPIC"]
    outputs = {o: env[f"ORDERGUARD__KAFKA__OUTPUT_TOPICS__{o.upper()}"] for o in OUTPUTS}
    ensure_topics(broker.bootstrap, {**dict.fromkeys(topic.values(), 3), topic["control"]: 1})

    poisons = [
        (topic["orders"], b"\xff" * 900_000),
        (topic["orders"], b'"' * 600_000),  # JSON escaping doubled it in the dead letter
        (topic["tracking"], b"x" * 5_000_000),
        (topic["control"], CONTROL),
    ]
    ok(orderguard(env, "simulate", "--orders", str(ORDERS), "--to-kafka"))
    produce(broker.bootstrap, poisons)
    ok(orderguard(env, "simulate", "--orders", str(ORDERS), "--start", DAY_2, "--to-kafka"))

    ok(orderguard(env, "run", "--exit-when-caught-up", timeout=300))

    limit = load_settings().limits.output_record
    corrected = corrections_per_order(broker.bootstrap, outputs["corrected"])
    for day in (DAY_1, DAY_2):  # the orders before and behind the poison
        ids = simulated_order_ids(day)
        assert ids <= set(corrected), sorted(ids - set(corrected))[:5]

    def too_large() -> list[dict[str, object]]:
        dead = [orjson.loads(v) for _, v in read_topic(broker.bootstrap, outputs["dead_letters"])]
        return [d for d in dead if d["reason"] == "too_large"]

    got = too_large()
    assert Counter((d["raw_size"], d["raw_sha256"]) for d in got) == Counter(
        (len(v), hashlib.sha256(v).hexdigest()) for _, v in poisons
    )
    for d in got:
        assert set(d["origin"]) == {"topic", "partition", "offset"}  # type: ignore[arg-type]
        assert d["raw_truncated"] is True
    for out in outputs.values():
        sizes = [len(v) for _, v in read_topic(broker.bootstrap, out)]
        assert max(sizes, default=0) <= limit, (out, max(sizes))

    # A restart resumes past the poison, and takes another one in its stride.
    produce(broker.bootstrap, [poisons[0]])
    again = ok(orderguard(env, "run", "--exit-when-caught-up", timeout=300))
    assert "recovery resumed from" in again
    assert len(too_large()) == len(poisons) + 1
