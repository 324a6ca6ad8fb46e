"""The Kafka input source against a real broker (Tansu on loopback), no mocks."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest
from bytewax.testing import run_main
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from connectors.broker import ensure_topics
from connectors.kafka_source import (
    KafkaInputPartition,
    KafkaInputSource,
    MissingTopicError,
    error_line,
    stream_of_part,
)
from connectors.replay import PartsSink, RawBatch, merge_parts
from dataflows.flow import build_flow
from dataflows.replay import run_replay
from schemas.config import load_settings
from schemas.event import DeadLetter, Event
from schemas.normalize import Normalizer

FIXTURE = Path(__file__).parent.parent / "fixtures" / "day-in-the-life.jsonl"
STREAMS = ("orders", "payments", "tracking")
PARTITIONS = 2
UNKNOWN_SOURCE = (
    b'{"stream": "orders", "source": "no_such_shop", '
    b'"received_at": "2026-02-10T00:00:00.000Z", "payload": {"order_id": "X1"}}'
)


def input_topics(bootstrap: str) -> dict[str, str]:
    """Fresh input topics for one test, created before anything looks them up."""
    suffix = uuid.uuid4().hex[:8]
    names = {s: f"og.in.{s}.{suffix}" for s in STREAMS}
    ensure_topics(bootstrap, {t: PARTITIONS for t in names.values()}, timeout=10)
    return names


def produce(bootstrap: str, messages: list[tuple[str, bytes | None, bytes, int | None]]) -> None:
    """(topic, key, value, partition or None) each; fails the test if any is not acked."""
    failed: list[str] = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for topic, key, value, partition in messages:
        extra = {} if partition is None else {"partition": partition}
        producer.produce(
            topic,
            value=value,
            key=key,
            on_delivery=lambda err, _m: err is not None and failed.append(err.str()),
            **extra,
        )
    assert producer.flush(15) == 0
    assert failed == []


def run_flow(bootstrap: str, topics: dict[str, str], out: Path, **source_kw: object) -> None:
    """The real dataflow over the Kafka source until every partition is caught up."""
    source = KafkaInputSource(bootstrap, topics, stop_at_eof=True, **source_kw)
    parts = out / ".parts"
    run_main(build_flow(load_settings(), source, PartsSink(parts), stream_of=stream_of_part))
    out.mkdir(parents=True, exist_ok=True)
    merge_parts(parts, out)
    assert all(source.caught_up.values()) and len(source.caught_up) == 3 * PARTITIONS


def read(out: Path, topic: str) -> list[dict]:
    return [orjson.loads(x) for x in (out / f"{topic}.jsonl").read_bytes().splitlines()]


def drain(part: KafkaInputPartition, timeout: float = 15.0) -> list[RawBatch]:
    """Batches until the partition ends (stop_at_eof), failing rather than hanging."""
    batches: list[RawBatch] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            batches.extend(part.next_batch())
        except StopIteration:
            return batches
        time.sleep(0.01)
    raise AssertionError(f"partition did not reach EOF within {timeout:g}s")


def test_dataflow_over_kafka_agrees_with_replay(broker, tmp_path):
    """The shared sample through Kafka gives the same records as its replay.

    Replay reads one ordered stream; Kafka delivers six partitions (three topics, two
    each) whose batches interleave arbitrarily, and one order's evidence spans topics.
    Every step merges them back into `received_at` order, so every correction,
    alert and breaker change is the same record (ids included); dead letters differ
    only in where they came from (file and line, or topic, partition and offset).
    """
    topics = input_topics(broker.bootstrap)
    normalizer = Normalizer(load_settings())
    lines = [x for x in FIXTURE.read_bytes().splitlines() if x.strip()]
    lines.append(UNKNOWN_SOURCE)  # so both runs have a dead letter to agree on
    day = tmp_path / "day.jsonl"
    day.write_bytes(b"\n".join(lines) + b"\n")
    messages: list[tuple[str, bytes | None, bytes, int | None]] = []
    for i, line in enumerate(lines):
        env = orjson.loads(line)
        ev = normalizer.normalize(line, origin={}, seq=i)
        key = ev.order_id or ev.tracking_no if isinstance(ev, Event) else None
        messages.append((topics[env["stream"]], key.encode() if key else None, line, None))
    produce(broker.bootstrap, messages)

    run_flow(broker.bootstrap, topics, tmp_path / "kafka", batch_size=5)
    run_replay(load_settings(), [day], tmp_path / "replay", show_progress=False)

    def records(out: Path, topic: str) -> list[dict]:
        wall = ("emitted_at", "at") if topic in ("corrected", "dead_letters") else ("emitted_at",)
        docs = [{k: v for k, v in r.items() if k not in wall} for r in read(out, topic)]
        return sorted(docs, key=lambda d: orjson.dumps(d, option=orjson.OPT_SORT_KEYS))

    kafka, replay = tmp_path / "kafka", tmp_path / "replay"
    assert len({r["order_id"] for r in records(replay, "corrected")}) >= 5  # a real comparison
    for topic in ("corrected", "alerts", "breakers"):
        assert records(kafka, topic) == records(replay, topic), topic
    where = ("id", "origin")
    [k_dead], [r_dead] = records(kafka, "dead_letters"), records(replay, "dead_letters")
    assert k_dead["reason"] == "unknown_source"
    assert {k: v for k, v in k_dead.items() if k not in where} == {
        k: v for k, v in r_dead.items() if k not in where
    }


def test_non_json_message_becomes_dead_letter_naming_its_origin(broker, tmp_path):
    topics = input_topics(broker.bootstrap)
    produce(broker.bootstrap, [(topics["payments"], b"k", b"\x00not json {", 1)])
    run_flow(broker.bootstrap, topics, tmp_path / "out")

    dead = read(tmp_path / "out", "dead_letters")
    assert [(d["reason"], d["stream"], d["origin"]) for d in dead] == [
        ("not_json", "payments", {"topic": topics["payments"], "partition": 1, "offset": 0})
    ]
    assert dead[0]["raw"] == "\x00not json {"


def test_message_error_is_logged_and_dead_lettered_with_its_origin(caplog):
    """Tansu gave no consume-level error to provoke here, so the line is built directly."""
    err = KafkaError(KafkaError.OFFSET_OUT_OF_RANGE)
    with caplog.at_level("ERROR", logger="orderguard.kafka"):
        seq, raw, origin = error_line("og.in.orders", 1, 41, err)
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "og.in.orders[1] at offset 41" in caplog.text
    dl = Normalizer(load_settings()).normalize(raw, origin=origin, stream="orders", seq=seq)
    assert isinstance(dl, DeadLetter)
    assert (dl.reason, dl.stream, dl.seq) == ("not_json", "orders", 41)
    assert dl.origin == {
        "topic": "og.in.orders",
        "partition": 1,
        "offset": 41,
        "error": f"OFFSET_OUT_OF_RANGE: {err.str()}",
    }


def test_resume_starts_at_offset_and_continues_numbering(broker):
    topics = input_topics(broker.bootstrap)
    values = [f"m{i}".encode() for i in range(12)]
    produce(broker.bootstrap, [(topics["tracking"], None, v, 1) for v in values])
    source = KafkaInputSource(broker.bootstrap, topics, batch_size=3, stop_at_eof=True)

    first = source.build_part("input", "tracking:1", (4, 7))
    assert not first.caught_up
    batches = drain(first)
    first.close()
    assert first.caught_up and source.caught_up["tracking:1"]
    assert [b.n for b in batches] == list(range(7, 7 + len(batches)))
    assert all(b.part == "tracking:1" and len(b.lines) <= 3 for b in batches)
    assert all(b.lines and not b.final for b in batches[:-1])
    assert batches[-1].final  # the steps learn that nothing more comes from here
    got = [(seq, raw) for b in batches for seq, raw, _o in b.lines]
    assert got == [(i, values[i]) for i in range(4, 12)]
    assert batches[0].lines[0][2] == {"topic": topics["tracking"], "partition": 1, "offset": 4}
    assert first.snapshot() == (12, 7 + len(batches))

    # A restart from that snapshot reads only what arrived since, numbering on.
    produce(broker.bootstrap, [(topics["tracking"], None, b"late", 1)])
    again = source.build_part("input", "tracking:1", first.snapshot())
    more = drain(again)
    again.close()
    assert [(b.n, [(s, r) for s, r, _o in b.lines]) for b in more if b.lines] == [
        (7 + len(batches), [(12, b"late")])
    ]
    assert more[-1].final


def test_idle_partition_sleeps_and_ticks_the_wall_clock_once_caught_up(broker):
    """Bytewax must not spin on an idle partition; a caught-up one reports the wall clock.

    Empty polls before the end use no batch number (a gap in n would stall the
    barriers); once caught up, one idle tick per `tick_interval` carries the wall
    clock, so deadlines elsewhere can fire while this partition is quiet.
    """
    topics = input_topics(broker.bootstrap)
    source = KafkaInputSource(broker.bootstrap, topics, poll_timeout=0.5)
    source.tick_interval = 60.0
    part = source.build_part("input", "orders:0", None)
    try:
        deadline = time.monotonic() + 10
        ticks: list[RawBatch] = []
        while not ticks and time.monotonic() < deadline:
            ticks = part.next_batch()
            time.sleep(0.01)
        assert part.caught_up  # an empty partition reaches EOF too
        [tick] = ticks
        assert (tick.n, tick.lines) == (0, [])
        now_ms = time.time() * 1000
        assert now_ms - 5000 < tick.clock <= now_ms - source.caught_up_margin_ms + 50
        assert part.next_batch() == []  # the next tick is a minute away
        awake = part.next_awake()
        assert awake is not None
        assert 0.3 < (awake.timestamp() - time.time()) <= 0.5
        assert part.snapshot()[1] == 1

        produce(broker.bootstrap, [(topics["orders"], None, b"x", 0)])
        got: list[RawBatch] = []
        while not got and time.monotonic() < deadline + 10:
            got = part.next_batch()
            time.sleep(0.01)
        assert [(b.n, b.lines[0][:2]) for b in got] == [(1, (0, b"x"))]
        assert part.next_awake() is None  # data came: call again at once
        assert part.snapshot() == (1, 2)
    finally:
        part.close()


def test_a_finite_run_keeps_the_recordings_clock(broker):
    """With stop_at_eof the input is a recording: no wall clock, no ticks, just the end."""
    topics = input_topics(broker.bootstrap)
    source = KafkaInputSource(broker.bootstrap, topics, stop_at_eof=True)
    part = source.build_part("input", "payments:0", None)
    try:
        deadline = time.monotonic() + 10
        with pytest.raises(StopIteration):
            while time.monotonic() < deadline:
                for batch in part.next_batch():
                    assert batch.clock == 0
                time.sleep(0.01)
    finally:
        part.close()


def test_missing_topic_is_named_and_not_created(broker):
    topics = input_topics(broker.bootstrap)
    missing = f"og.in.nope.{uuid.uuid4().hex[:8]}"
    source = KafkaInputSource(broker.bootstrap, {**topics, "payments": missing})
    with pytest.raises(MissingTopicError, match=rf"'{missing}' \(stream payments\)"):
        source.list_parts()
    listed = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    assert missing not in listed
    assert set(topics.values()) <= set(listed)
    # with the real topic, every partition of all three is listed
    assert KafkaInputSource(broker.bootstrap, topics).list_parts() == [
        f"{s}:{p}" for s in sorted(STREAMS) for p in range(PARTITIONS)
    ]
