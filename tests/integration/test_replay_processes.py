"""`orderguard replay --processes N`: one recording split as Kafka would have split it.

The split must be Kafka's own (checked against a real broker fed by our producer),
and the outputs must not depend on the process count: the same records, ids included.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connectors.broker import ensure_topics
from connectors.kafka_envelopes import produce_envelopes
from connectors.replay import KafkaSplit
from schemas.config import load_settings
from sim import generate
from tests.helpers import run_cli, simulated_day
from tests.integration.test_determinism import outputs
from tests.integration.test_run_live import live_env

INCIDENTS = (
    "lost_payment_callback",
    "channel_error_storm",
    "carrier_api_outage",
    "reship_delivered",
    "duplicate_webhooks",
    "out_of_order_scans",
    "stalled_tracking",
)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """A day with incidents (alerts, breakers and dead letters all appear)."""
    return simulated_day(tmp_path_factory.mktemp("in") / "day.jsonl", 300, 5, INCIDENTS)


def _sorted(result: dict[str, list[dict]]) -> dict[str, list[bytes]]:
    """Each topic as a sorted list: outputs compared as sets (multisets), ids included."""
    return {
        t: sorted(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in docs)
        for t, docs in result.items()
    }


def test_two_processes_give_the_records_of_one(recording, tmp_path):
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        proc = run_cli(
            "replay", str(recording), "--out", str(out), "--processes", str(n), timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"processes {n:>17}" in proc.stdout, proc.stdout
        runs[n] = _sorted(outputs(out))
        assert not (out / ".split").exists() and not (out / ".parts").exists()
    one, two = runs[1], runs[2]
    assert all(one[t] for t in one), {t: len(v) for t, v in one.items()}
    for topic in one:
        assert two[topic] == one[topic], (
            f"{topic}: {len(one[topic])} records with 1 process, {len(two[topic])} with 2"
        )


def test_the_split_is_the_partition_our_producer_gets_from_kafka(broker, tmp_path, monkeypatch):
    for k, v in live_env(broker.bootstrap, tmp_path / "rec").items():
        if k.startswith("ORDERGUARD__"):
            monkeypatch.setenv(k, v)
    settings = load_settings()
    kafka = settings.kafka
    ensure_topics(kafka.bootstrap_servers, kafka.topic_partitions(), timeout=10)
    envelopes = list(generate(orders=60, seed=2, start=datetime(2026, 3, 2, tzinfo=UTC), hours=6))
    assert produce_envelopes(settings, envelopes) == len(envelopes)

    split = KafkaSplit(settings)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "split-check",
            "enable.partition.eof": True,
        }
    )
    streams = {t: s for s, t in kafka.input_topics.model_dump().items()}
    assigned = [
        TopicPartition(topic, p, OFFSET_BEGINNING)
        for topic in streams
        for p in range(kafka.partitions)
    ]
    consumer.assign(assigned)
    seen, keyed, at_end = 0, 0, set()
    deadline = time.monotonic() + 30
    try:
        while len(at_end) < len(assigned) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                at_end.add((msg.topic(), msg.partition()))
                continue
            seen += 1
            if msg.key() is None:  # Kafka put it anywhere (consistent_random: random)
                continue
            keyed += 1
            where = f"{streams[msg.topic()]}:{msg.partition()}"
            assert split.part_of(msg.value()) == where, (msg.key(), where)
    finally:
        consumer.close()
    assert seen == len(envelopes)
    assert keyed > 0.8 * seen  # carrier_api telemetry (about a tenth) names no order: no key
    partitions_used = {split.part_of(orjson.dumps(e)) for e in envelopes if "__raw__" not in e}
    assert len(partitions_used) == 3 * kafka.partitions  # the keys spread over them all


def test_a_partitioner_the_split_does_not_mirror_is_a_one_line_error(recording, tmp_path):
    import os

    env = dict(os.environ, ORDERGUARD__KAFKA__CLIENT__PARTITIONER="murmur2_random")
    out = tmp_path / "out"
    proc = run_cli("replay", str(recording), "--out", str(out), "--processes", "2", env=env)
    assert proc.returncode == 1, proc.stderr
    assert "partitioner='murmur2_random'" in proc.stderr and "Traceback" not in proc.stderr
