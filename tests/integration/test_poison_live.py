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
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Producer

from connectors.broker import ensure_topics
from connectors.kafka_envelopes import produce_envelopes
from connectors.redis_server import LocalRedis
from schemas.config import load_settings
from tests.helpers import settings_of
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


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with LocalRedis() as local:
        yield local.url


def taobao(tid: str, uid: str, modified: str) -> dict[str, Any]:
    payload = {
        "tid": tid,
        "status": "WAIT_SELLER_SEND_GOODS",
        "created": "2026-03-02 10:00:00",
        "pay_time": "2026-03-02 10:05:09",
        "modified": modified,
        "buyer_open_uid": uid,
        "payment": "199.00",
    }
    received = "2026-03-02T05:31:22.000Z"
    return {"stream": "orders", "source": "taobao", "received_at": received, "payload": payload}


def test_over_long_ids_never_reach_redis(broker, tmp_path, redis_url):
    """Finding 10: a 10 kB order id and a 100 kB buyer_open_uid became a 10 kB Redis key
    and a 100 kB document. They are dead-lettered; the order beside them is in the view."""
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    prefix = f"ogtest:{uuid.uuid4().hex[:8]}:"
    env["ORDERGUARD__REDIS__URL"] = redis_url
    env["ORDERGUARD__REDIS__KEY_PREFIX"] = prefix
    settings = settings_of(env)
    ensure_topics(broker.bootstrap, settings.kafka.topic_partitions())
    long_id = "TB20260302" + "1" * 10_000
    produce_envelopes(
        settings,
        [
            taobao(long_id, "AAH3kQ7x1", "2026-03-02 13:31:20"),
            taobao("TB2026030200077", "u" * 100_000, "2026-03-02 13:31:21"),
            taobao("TB2026030200078", "AAH3kQ7x2", "2026-03-02 13:31:22"),
        ],
    )
    client = redis.Redis.from_url(redis_url)
    try:
        ok(orderguard(env, "run", "--exit-when-caught-up"))
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        assert f"{prefix}order:TB2026030200078".encode() in keys
        limit = settings.limits.id
        assert max(len(k) for k in keys) <= len(prefix) + len("order::timeline") + limit
        for key in keys:
            if client.type(key) == b"string":
                assert len(client.get(key) or b"") < 10 * limit, key
        assert f"{prefix}order:TB2026030200077".encode() not in keys
    finally:
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
        client.close()
    topic = env["ORDERGUARD__KAFKA__OUTPUT_TOPICS__DEAD_LETTERS"]
    dead = [orjson.loads(v) for _, v in read_topic(broker.bootstrap, topic)]
    assert sorted(d["reason"] for d in dead) == ["invalid_field", "invalid_order_id"]
