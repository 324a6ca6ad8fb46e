"""The Kafka connectors against a real broker: Tansu on loopback, no mocks."""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid

import orjson
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.broker import (
    BrokerError,
    BrokerUnreachable,
    EmbeddedBroker,
    ensure_topics,
    free_port,
)
from connectors.kafka_sink import KafkaOutputSink, SinkDeliveryError
from state.encode import TOPICS, Encoded

PARTITIONS = {"corrected": 3, "alerts": 2, "breakers": 1, "dead_letters": 1}


def fresh_topics(bootstrap: str) -> dict[str, str]:
    """Real topic names unique to one test, created before anything looks them up."""
    suffix = uuid.uuid4().hex[:8]
    names = {logical: f"og.{logical}.{suffix}" for logical in TOPICS}
    ensure_topics(bootstrap, {names[t]: PARTITIONS[t] for t in TOPICS}, timeout=10)
    return names


def partition_counts(bootstrap: str) -> dict[str, int]:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in meta.topics.items()}


def consume(
    bootstrap: str, topics: list[str], expected: int
) -> list[tuple[str, int, bytes, bytes]]:
    """Read every partition from the beginning (assigned: no consumer group join)."""
    counts = partition_counts(bootstrap)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(counts[t])]
    )
    got: list[tuple[str, int, bytes, bytes]] = []
    deadline = time.monotonic() + 15
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            got.append((msg.topic(), msg.partition(), msg.key(), msg.value()))
        # Anything beyond the expected records (duplicates) shows up here.
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                got.append((msg.topic(), msg.partition(), msg.key(), msg.value()))
    finally:
        consumer.close()
    return got


def records(n: int) -> list[Encoded]:
    out: list[Encoded] = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        key = f"order-{i % 7}"
        out.append((topic, key, f"{i:06d}", f'{{"i": {i}}}'.encode()))
    return out


def test_broker_starts_answers_and_is_gone_after_exit():
    with EmbeddedBroker() as b:
        pid = b.pid
        assert pid is not None and b.running()
        assert b.bootstrap.startswith("127.0.0.1:")
        AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=5)
        port = b.port
    assert not b.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_broker_that_cannot_start_says_why():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match="AddrInUse") as info:
            EmbeddedBroker(port=port, startup_timeout=10).start()
    assert f"127.0.0.1:{port}" in str(info.value)


def test_ensure_topics_creates_requested_partitions_and_is_idempotent(broker):
    suffix = uuid.uuid4().hex[:8]
    wanted = {f"a.{suffix}": 3, f"b.{suffix}": 1, f"c.{suffix}": 6}
    assert sorted(ensure_topics(broker.bootstrap, wanted, timeout=10)) == sorted(wanted)
    counts = partition_counts(broker.bootstrap)
    assert {name: counts.get(name) for name in wanted} == wanted
    # Again, even asking for other counts: nothing is created or changed.
    assert ensure_topics(broker.bootstrap, {n: 9 for n in wanted}, timeout=10) == []
    counts = partition_counts(broker.bootstrap)
    assert {name: counts.get(name) for name in wanted} == wanted


def test_unreachable_broker_raises_quickly_naming_the_address():
    bootstrap = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as info:
        ensure_topics(bootstrap, {"never": 1}, timeout=1.5)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert bootstrap in message and "\n" not in message


PARTS = ["orders:0", "orders:1", "payments:0"]


def sink_part(bootstrap: str, names: dict[str, str], **kw):
    """One partition of a Kafka sink, as Bytewax builds it; (sink, partition)."""
    sink = KafkaOutputSink(bootstrap, names, PARTS, **kw)
    return sink, sink.build_part("output", PARTS[0], None)


def test_sink_delivers_every_record_to_its_topic_with_its_key(broker):
    names = fresh_topics(broker.bootstrap)
    sink, part = sink_part(broker.bootstrap, names, flush_timeout=10)
    batch = records(40)
    part.write_batch([batch[:25], batch[25:]])
    part.snapshot()
    part.close()
    (producer,) = sink.producers
    assert (producer.delivered, producer.failed) == (40, 0)

    got = consume(broker.bootstrap, list(names.values()), expected=40)
    assert sorted((t, k, v) for t, _p, k, v in got) == sorted(
        (names[t], k.encode(), v) for t, k, _s, v in batch
    )
    # The key decides the partition: one key, one partition.
    placed: dict[tuple[str, bytes], set[int]] = {}
    for topic, partition, key, _value in got:
        placed.setdefault((topic, key), set()).add(partition)
    assert all(len(p) == 1 for p in placed.values())
    assert len({p for (t, _k), ps in placed.items() if t == names["corrected"] for p in ps}) > 1


def test_the_epochs_snapshot_waits_for_every_acknowledgement(broker):
    """A batch is produced without waiting; the snapshot Bytewax takes before it commits
    the epoch returns only once the broker has acknowledged all of it. With a 30 s
    linger, nothing would have left the producer yet without the snapshot's flush."""
    names = fresh_topics(broker.bootstrap)
    sink, part = sink_part(broker.bootstrap, names, config={"linger.ms": 30_000}, flush_timeout=60)
    other = sink.build_part("output", PARTS[2], None)  # same worker: same producer
    part.write_batch([records(30)])
    other.write_batch([records(12)])
    (producer,) = sink.producers
    assert producer.delivered == 0  # produced, not yet acknowledged
    started = time.monotonic()
    assert part.snapshot() is None  # no state: the snapshot is the settling
    assert time.monotonic() - started < 10
    assert (producer.delivered, producer.failed) == (42, 0)
    other.snapshot()  # nothing left to wait for
    assert len(consume(broker.bootstrap, list(names.values()), expected=42)) == 42


def test_sink_waits_for_room_when_the_local_queue_is_full(broker):
    names = fresh_topics(broker.bootstrap)
    config = {"queue.buffering.max.messages": 5, "linger.ms": 50}
    sink, part = sink_part(broker.bootstrap, names, config=config, flush_timeout=10)
    batch = records(60)
    part.write_batch([batch])  # BufferError many times over, never lost
    part.snapshot()
    assert (sink.producers[0].delivered, sink.producers[0].failed) == (60, 0)
    assert len(consume(broker.bootstrap, list(names.values()), expected=60)) == 60


def test_sink_works_as_a_bytewax_output(broker):
    """Keyed by the index of the partition (here of 3) each batch is written in."""
    names = fresh_topics(broker.bootstrap)
    batch = records(12)
    sink = KafkaOutputSink(broker.bootstrap, names, PARTS, flush_timeout=10)
    flow = Dataflow("kafka_sink_test")
    items = [("0", batch[:5]), ("2", batch[5:9]), ("4", batch[9:])]  # 4 wraps around to 1
    stream = op.input("input", flow, TestingSource(items))
    op.output("output", stream, sink)
    run_main(flow)

    assert sum(p.delivered for p in sink.producers) == 12
    got = consume(broker.bootstrap, list(names.values()), expected=12)
    assert sorted(v for *_, v in got) == sorted(v for *_, v in batch)


def test_sink_raises_instead_of_losing_records_when_broker_is_gone():
    with EmbeddedBroker() as b:
        names = fresh_topics(b.bootstrap)
        sink, part = sink_part(
            b.bootstrap, names, config={"message.timeout.ms": 1500}, flush_timeout=4
        )
        part.write_batch([records(4)])  # connected and delivering
        part.snapshot()
        (producer,) = sink.producers
        assert producer.delivered == 4
        b.stop()
        started = time.monotonic()
        with pytest.raises(SinkDeliveryError) as info:
            part.write_batch([records(8)])
            part.snapshot()  # the epoch is not committed: its records go again on restart
        # message.timeout.ms fails the records before the 4 s flush timeout runs out.
        assert time.monotonic() - started < 4
    message = str(info.value)
    assert "8 of 8 records" in message and "first error on topic og." in message
    assert (producer.delivered, producer.failed) == (4, 8)


def test_sink_refuses_incomplete_topic_map_and_weaker_guarantees():
    names = {t: t for t in TOPICS}
    with pytest.raises(ValueError, match="alerts"):
        KafkaOutputSink("127.0.0.1:1", {t: t for t in TOPICS if t != "alerts"}, PARTS)
    with pytest.raises(ValueError, match="acks"):
        KafkaOutputSink("127.0.0.1:1", names, PARTS, config={"acks": 1})
    with pytest.raises(ValueError, match="idempotence"):
        KafkaOutputSink("127.0.0.1:1", names, PARTS, config={"enable.idempotence": False})
    with pytest.raises(ValueError, match="partitions"):
        KafkaOutputSink("127.0.0.1:1", names, [])


def test_sink_replaces_a_record_kafka_refuses_as_too_large_and_goes_on(broker):
    """Issue 11 finding 1: one record the producer refuses (message.max.bytes) failed the
    run at every restart. It becomes a bounded dead letter; its batch is delivered."""
    names = fresh_topics(broker.bootstrap)
    config = {"message.max.bytes": 100_000}
    sink, part = sink_part(broker.bootstrap, names, config=config, flush_timeout=10)
    batch = records(20)
    huge = ("corrected", "order-x", "huge", b'{"x": "' + b"y" * 200_000 + b'"}')
    part.write_batch([[*batch[:10], huge, *batch[10:]]])
    part.snapshot()
    part.write_batch([records(4)])  # and the next epoch too
    part.snapshot()
    part.close()
    (producer,) = sink.producers
    assert (producer.delivered, producer.failed, producer.replaced) == (25, 0, 1)
    got = consume(broker.bootstrap, list(names.values()), expected=25)
    dead = [orjson.loads(v) for t, _p, _k, v in got if t == names["dead_letters"]]
    replaced = [d for d in dead if d.get("reason") == "output_too_large"]
    assert len(replaced) == 1
    r = replaced[0]
    assert (r["record_topic"], r["record_key"], r["raw_size"]) == ("corrected", "order-x", 200_009)
    assert r["raw_sha256"] == hashlib.sha256(huge[3]).hexdigest()
    assert "too large" in r["error"].lower()
    assert max(len(v) for *_, v in got) < 100_000
