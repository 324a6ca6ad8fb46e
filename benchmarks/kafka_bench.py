"""Kafka benchmark: the live pipeline end to end on the embedded broker, beside its peers.

    python -m benchmarks.kafka_bench [--quick] [--orders N] [--skip STAGE ...]

Generates (once, cached under benchmarks/.data/) order-created, OMS-synced and paid
events for N orders (the OMS event links the channel's own id to the order: without it
nothing would be an open order, only references waiting in the index; default 1M;
channel payloads from ops/sources.yaml's channels and gateways,
built by the simulator's payload builders), produces them to input topics on the
embedded Tansu broker, then measures side by side in one run:

- pipeline     `orderguard run --exit-when-caught-up`, 1 process: input events / wall
               time, and excluding start-up (the wall time of the same command on empty
               topics); every order ends PAID and stays open; those whose OMS copy
               said pending (all but Pinduoduo's, about 78%) also raise
               PAYMENT_NOT_REFLECTED
- restart      the same command again on its recovery dir with no new input: the time
               to restore the N-order snapshot and exit; the recovery dir's size
- plain loop   one process, a confluent-kafka consumer over all input partitions
               feeding the pipeline's own steps (`benchmarks.step_loop`: stamps, router,
               reference index, order shards, customer desk, health, each merging up
               to its watermark) and a producer: the ceiling without Bytewax. Its
               records must equal the pipeline's (compared as multisets, wall-clock
               fields apart); both runs' CPU per event is reported beside the ratio
- quix         Quix Streams running the same per-order rules keyed by order id in its
               RocksDB State (benchmarks/quix_peer.py says what it leaves out)
- processes    `orderguard run --processes 2 --exit-when-caught-up` vs 1 process
- latency      a continuously running pipeline fed at a fixed rate: half the rate the
               one-process run sustained, for 30 s; produce call -> corrected record
               consumed, p50/p99, p99 by third of the phase and each second's worst;
               split at the record's `emitted_at` (produce -> emitted: the input's
               broker hop and the pipeline) and its Kafka timestamp (the sink's
               produce call -> consumed: one broker hop); the broker's CPU each
               second. Twice, each on fresh topics and a fresh pipeline: the probe
               producing with linger.ms 5 (librdkafka's default), then 20 (as
               `orderguard produce` does). Tansu's memory store lists every batch a
               partition holds on each fetch, so it slows through a phase, and more
               so with more, smaller batches (docs/scale-out.md "Latency")

Targets (issue 14): pipeline >= 0.8x the plain loop; >= 2x Quix Streams (issue 12);
p99 <= 250 ms at half the rate one process sustains; restart <= 15 s from a 1M-order
snapshot. 2 processes >= 1.7x one is replay's target; here, with the broker on the same
cores, it is reported, not judged.
Figures are merged into benchmarks/results/latest.json (flat numeric keys; keys of
other benchmarks are kept) and printed as a table. `--quick` (100k orders, shorter
latency phases) checks the harness in a few minutes and writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / ".data"
RESULTS = HERE / "results"
LATEST = RESULTS / "latest.json"
QUIX_VENV = DATA / "quix-venv"
STREAMS = ("orders", "payments", "tracking")
OUTPUTS = ("corrected", "alerts", "breakers", "dead_letters")
PARTITIONS = 6
SPAN_MS = 2 * 3_600_000
"""Orders are created over 2 h of ingestion time: under SHIPMENT_DELAYED's 4 h, so
every order holds its deadline and none fires while the benchmark runs."""
START_MS = 1_772_409_600_000  # 2026-03-02T00:00:00Z
RECV_PLACEHOLDER = b"2000-01-01T00:00:00.000Z"

WALL_CLOCK_FIELDS = ("emitted_at", "at")
"""When a record was written (dead letters' `at` too): the only fields two runs differ in."""

TARGETS = {
    "pipeline_to_plain_ratio": 0.8,
    "pipeline_to_quix_ratio": 2.0,
    "latency_half_p99_ms": 250,
    "latency_half_linger20_p99_ms": 250,
    "restart_seconds": 15,
}


# ---------------------------------------------------------------- input
def _orders(
    orders: int,
    seed: int,
    start_ms: int,
    span_ms: int,
    t0_fixed: int | None = None,
    id_base: int = 0,
    oms: bool = True,
):
    """(order, entries) for `orders` simulated orders, own-site orders left out.

    Each order: its channel's order-created event, the OMS's copy of it (which links the
    channel's id to the order), then the gateway's payment success (Pinduoduo, which only
    shows paid orders: the payment, then its channel's paid and the OMS's). `oms=False`:
    no OMS event.
    Entries are (received_ms, event_ms, kind, arg).
    """
    from random import Random

    from sim.catalog import CODES, DELAY
    from sim.clock import MINUTE, SECOND, cn_date, utc_date
    from sim.model import Order

    rng = Random(seed)
    customers = max(20, int(orders * 0.7))
    idx = made = 0
    while made < orders:
        o = Order(idx, seed, rng, customers)
        idx += 1
        if o.channel == "web":  # no channel feed: the OMS would speak for it
            continue
        made += 1
        o.t0 = t0 = t0_fixed if t0_fixed is not None else start_ms + int(rng.random() * span_ms)
        o.tp = tp = 20 * SECOND + int(rng.random() * 9 * MINUTE)
        date = cn_date(t0) if o.cn else utc_date(t0)
        o.oid = f"{CODES[o.channel]}{date}{id_base + idx:07d}"
        lo, hi = DELAY[o.gateway]
        pay = (t0 + tp + lo + int(rng.random() * (hi - lo)), t0 + tp, "pay", "success")
        lo, hi = DELAY[o.channel]
        olo, ohi = DELAY["oms"]
        if o.channel == "pinduoduo":
            t = t0 + tp + 3 * SECOND
            ch = (t + lo + int(rng.random() * (hi - lo)), t, "ch", "paid")
            # the OMS links the channel's own id to the order (README "Identity")
            sync = (ch[0] + olo + int(rng.random() * (ohi - olo)), t, "oms", ("paid", False))
            yield o, (pay, ch, sync) if oms else (pay, ch)
        else:
            ch = (t0 + lo + int(rng.random() * (hi - lo)), t0, "ch", "created")
            sync = (ch[0] + olo + int(rng.random() * (ohi - olo)), t0, "oms", ("pending", False))
            yield o, (ch, sync, pay) if oms else (ch, pay)


def _envelope(ctx, o, entry, received: str | None = None) -> tuple[str, bytes]:
    import orjson

    from sim.catalog import STREAM
    from sim.clock import utc_ms
    from sim.payloads import BUILD

    recv, t, kind, arg = entry
    src, payload, eid = BUILD[kind](ctx, o, t, arg)
    env = {"stream": STREAM[src], "source": src, "received_at": received or utc_ms(recv)}
    if eid is not None:
        env["event_id"] = eid
    env["payload"] = payload
    return STREAM[src], orjson.dumps(env)


def dataset(orders: int, seed: int = 7) -> Path:
    """Lines `stream TAB key TAB envelope`, in received_at order (cached)."""
    from sim.payloads import Ctx

    DATA.mkdir(exist_ok=True)
    path = DATA / f"kafka-{orders}-{seed}-oms.tsv"  # -oms: with the OMS event that links
    if path.exists():
        return path
    t = time.perf_counter()
    ctx = Ctx(seed=seed)
    entries = []
    for o, evs in _orders(orders, seed, START_MS, SPAN_MS):
        entries.extend((e, o) for e in evs)
    entries.sort(key=lambda eo: eo[0][0])
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        buf: list[bytes] = []
        for e, o in entries:
            stream, value = _envelope(ctx, o, e)
            buf.append(b"%s\t%s\t%s\n" % (stream.encode(), o.oid.encode(), value))
            if len(buf) >= 10_000:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
    tmp.rename(path)
    print(f"generated {len(entries):,} events in {time.perf_counter() - t:.1f} s -> {path.name}")
    return path


# ---------------------------------------------------------------- broker helpers
def _producer(bootstrap: str, linger_ms: int = 20):
    import logging

    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "logger": logging.getLogger("bench.kafka"),
            "linger.ms": linger_ms,
            "acks": "all",
            "enable.idempotence": True,
            "queue.buffering.max.messages": 200_000,
        }
    )


def produce_file(bootstrap: str, topics: dict[str, str], path: Path) -> tuple[int, float]:
    """Produce every line of a dataset, keyed by order id; every record must be acked."""
    producer = _producer(bootstrap)
    failed: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            failed.append(err.str())

    names = {s.encode(): t for s, t in topics.items()}
    n = 0
    t = time.perf_counter()
    with path.open("rb") as f:
        for line in f:
            stream, key, value = line.rstrip(b"\n").split(b"\t", 2)
            while True:
                try:
                    producer.produce(names[stream], value, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            n += 1
            if n % 10_000 == 0:
                producer.poll(0)
    left = producer.flush(120)
    if failed or left:
        raise RuntimeError(f"{len(failed) + left} of {n} records not acknowledged: {failed[:1]}")
    return n, time.perf_counter() - t


def create_topics(bootstrap: str, names: list[str], partitions: int = PARTITIONS) -> None:
    """Create the topics (before anything looks them up: Tansu auto-creates on lookup)
    with `retention.ms` set explicitly (Quix Streams refuses a topic without it)."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    from connectors.broker import ensure_topics

    ensure_topics(bootstrap, dict.fromkeys(names, partitions), timeout=30)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(
                    "retention.ms", "604800000", incremental_operation=AlterConfigOpType.SET
                )
            ],
        )
        for name in names
    ]
    for fut in admin.incremental_alter_configs(resources).values():
        fut.result(30)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Tansu keeps every record in memory: drop what a stage no longer needs."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=30).topics
    names = [n for n in names if n in existing]
    if not names:
        return
    for fut in admin.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(Exception):
            fut.result(30)


def list_topics(bootstrap: str) -> list[str]:
    from confluent_kafka.admin import AdminClient

    return sorted(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics)


def topic_digest(bootstrap: str, topic: str, timeout: float = 120) -> tuple[int, int]:
    """(records, a digest of their keys and values that ignores their order), read to the
    end of every partition (not from watermarks): equal digests, equal multisets. The
    fields that record when a record was written (`WALL_CLOCK_FIELDS`) are left out.
    """
    import orjson
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics.get(topic)
    if meta is None:
        return 0, 0
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-count",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    left = set(meta.partitions)
    n = digest = 0
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        for m in c.consume(10_000, 0.5):
            err = m.error()
            if err is None:
                n += 1
                doc = orjson.loads(m.value() or b"{}")
                for field in WALL_CLOCK_FIELDS:
                    doc.pop(field, None)
                h = hashlib.blake2b(m.key() or b"", digest_size=8)
                h.update(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
                digest = (digest + int.from_bytes(h.digest())) & 0xFFFF_FFFF_FFFF_FFFF
            elif err.code() == KafkaError._PARTITION_EOF:
                left.discard(m.partition())
    c.close()
    return n, digest


def outputs_digest(bootstrap: str, outputs: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Each output's (records, digest), by output name."""
    return {name: topic_digest(bootstrap, topic) for name, topic in outputs.items()}


def count_topic(bootstrap: str, topic: str, timeout: float = 120) -> int:
    return topic_digest(bootstrap, topic, timeout)[0]


# ---------------------------------------------------------------- the pipeline
def topic_names(prefix: str) -> tuple[dict[str, str], dict[str, str]]:
    return (
        {s: f"{prefix}.{s}" for s in STREAMS},
        {o: f"{prefix}.{o}" for o in OUTPUTS},
    )


def pipeline_env(bootstrap: str, inputs: dict, outputs: dict, recovery: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ORDERGUARD__KAFKA__BOOTSTRAP_SERVERS"] = bootstrap
    env["ORDERGUARD__KAFKA__PARTITIONS"] = str(PARTITIONS)
    env["ORDERGUARD__RECOVERY__DIR"] = str(recovery)
    for s, t in inputs.items():
        env[f"ORDERGUARD__KAFKA__INPUT_TOPICS__{s.upper()}"] = t
    for o, t in outputs.items():
        env[f"ORDERGUARD__KAFKA__OUTPUT_TOPICS__{o.upper()}"] = t
    return env


def orderguard_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dataflows.cli", "run", *args]


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user and system) a running process has used so far; NaN if unknown."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds (user and system) of every child process reaped so far."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def run_pipeline(env: dict[str, str], *args: str, timeout: float = 1800) -> float:
    """Wall seconds of `orderguard run --exit-when-caught-up ARGS` (raises on failure)."""
    t = time.perf_counter()
    out = subprocess.run(
        orderguard_cmd("--exit-when-caught-up", *args),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    secs = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(
            f"orderguard run {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}"
        )
    return secs


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def supports_processes() -> bool:
    out = subprocess.run(
        orderguard_cmd("--help"), cwd=ROOT, capture_output=True, text=True, check=False
    )
    return "--processes" in out.stdout


# ---------------------------------------------------------------- the plain loop
def plain_child(spec: str) -> None:
    """In a fresh process: consume every input partition to its end through the steps.

    The pipeline's own steps (`benchmarks.step_loop`), so the work and the records are
    the pipeline's; the same partitions (the control topic too: its partition counts in
    every merge key and watermark) and the same alignment, by pausing a partition that
    runs ahead instead of not polling it.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
    from confluent_kafka.admin import AdminClient

    from benchmarks.step_loop import StepLoop
    from connectors.kafka_source import stream_of_part
    from connectors.replay import RawBatch
    from dataflows.gc_tuning import tune_gc
    from schemas.config import load_settings
    from state.encode import encode
    from state.watermark import Alignment

    args = json.loads(spec)
    bootstrap, outputs = args["bootstrap"], args["outputs"]
    settings = load_settings()
    producer = _producer(bootstrap)
    failed: list[str] = []
    written = 0

    def on_delivery(err, msg) -> None:
        if err is not None:
            failed.append(err.str())

    def emit(records: list) -> None:
        nonlocal written
        for r in records:
            topic, key, _sort, value = encode(r, settings.limits)
            while True:
                try:
                    producer.produce(outputs[topic], value, key.encode(), on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
        written += len(records)

    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics
    inputs = dict(args["inputs"])
    if settings.kafka.control_topic in topics:  # the pipeline created it and reads it
        inputs["control"] = settings.kafka.control_topic
    part_of = {(t, p): f"{s}:{p}" for s, t in inputs.items() for p in sorted(topics[t].partitions)}
    tps = {part: TopicPartition(t, p) for (t, p), part in part_of.items()}
    alignment = Alignment(settings.pipeline.max_partition_skew)
    loop = StepLoop(settings, list(part_of.values()), emit, stream_of_part, alignment)
    tune_gc(settings.pipeline.gc_tuning)  # as `orderguard run` does
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-plain",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in part_of])
    n_parts = len(part_of)
    numbers = dict.fromkeys(part_of.values(), 0)
    # What a partition ahead of the slowest (`Alignment`) read waits here, as it waits in
    # its own consumer's queue in the pipeline; past a few batches the partition pauses.
    waiting: dict[str, list] = {part: [] for part in part_of.values()}
    at_end: set[str] = set()
    left = set(part_of.values())
    paused: set[str] = set()
    most = 4 * settings.pipeline.batch_size
    wall0 = time.perf_counter()
    started = None
    n_in = rounds = 0
    while left:
        for m in consumer.consume(settings.pipeline.batch_size * PARTITIONS, 0.1):
            err = m.error()
            part = part_of[(m.topic(), m.partition())]
            if err is None:
                off = m.offset()
                origin = {"topic": m.topic(), "partition": m.partition(), "offset": off}
                waiting[part].append((off, m.value() or b"", origin))
            elif err.code() == KafkaError._PARTITION_EOF:
                at_end.add(part)
            else:
                raise RuntimeError(f"consume error: {err.str()}")
        batches = []
        for part in sorted(left):
            lines = waiting[part]
            if alignment.ahead(part) or not (lines or part in at_end):
                continue
            final = part in at_end
            batches.append(RawBatch(part, numbers[part], lines, parts=n_parts, final=final))
            numbers[part] += 1
            n_in += len(lines)
            waiting[part] = []
            if final:
                left.discard(part)
        if batches:
            started = started or time.perf_counter()
            loop.feed(batches)
            rounds += 1
        full = {p for p in left if len(waiting[p]) > most}
        if full != paused:
            if full - paused:
                consumer.pause([tps[p] for p in full - paused])
            if paused - full:
                consumer.resume([tps[p] for p in paused - full])
            paused = full
        producer.poll(0)
    loop.finish()
    left_out = producer.flush(120)
    done = time.perf_counter()
    consumer.close()
    if failed or left_out:
        raise RuntimeError(f"{len(failed) + left_out} outputs not acknowledged: {failed[:1]}")
    print(
        json.dumps(
            {
                "events": n_in,
                "records_out": written,
                "seconds": done - (started or done),
                "wall": done - wall0,
                "open_orders": loop.open_orders(),
                "rounds": rounds,
            }
        )
    )


def run_plain(bootstrap: str, inputs: dict, outputs: dict) -> dict:
    spec = json.dumps({"bootstrap": bootstrap, "inputs": inputs, "outputs": outputs})
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.kafka_bench", "--plain-child", spec],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"plain loop failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- Quix Streams
def quix_python() -> str | None:
    """A Python that imports quixstreams: this one (the `bench` extra installed), or
    benchmarks/.data/quix-venv (quixstreams pins confluent-kafka < 2.13, so it may be
    kept out of the project's venv), or $ORDERGUARD_BENCH_QUIX_PYTHON."""
    candidates = [os.environ.get("ORDERGUARD_BENCH_QUIX_PYTHON"), sys.executable]
    candidates.append(str(QUIX_VENV / "bin" / "python"))
    for py in candidates:
        if not py or not Path(py).exists():
            continue
        ok = subprocess.run(
            [py, "-W", "ignore", "-c", "import quixstreams"], capture_output=True, check=False
        )
        if ok.returncode == 0:
            return py
    return None


def run_quix(
    py: str, bootstrap: str, inputs: dict, output: str, expect: int, max_seconds: float
) -> dict:
    state = DATA / "quix-state"
    shutil.rmtree(state, ignore_errors=True)
    # orders and payments carry the events; tracking is empty in this dataset
    ins = ",".join(f"{s}={inputs[s]}" for s in ("orders", "payments"))
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT))
    cmd = [py, "-m", "benchmarks.quix_peer", "--bootstrap", bootstrap, "--inputs", ins]
    cmd += ["--output", output, "--expect", str(expect), "--state-dir", str(state)]
    cmd += ["--max-seconds", str(max_seconds), "--group", f"quix-{int(time.time())}"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    shutil.rmtree(state, ignore_errors=True)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"quix peer exited {out.returncode}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- latency
PROBE_LINGER_MS = 5
"""The probe's `linger.ms` unless a phase says otherwise: librdkafka's default."""


@dataclass(frozen=True, slots=True)
class Phase:
    """One latency phase: `rate` events/s for `seconds`, the probe producing as an upstream
    with `linger_ms` would (librdkafka's default is 5; `orderguard produce` sends at 20)."""

    name: str
    rate: float
    seconds: float
    linger_ms: int = PROBE_LINGER_MS


class LatencyProbe:
    """Produce orders at a fixed rate, consume corrections, match (order id, status)."""

    def __init__(
        self, bootstrap: str, inputs: dict, corrected: str, broker_pid: int | None = None
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.bootstrap = bootstrap
        self.broker_pid = broker_pid
        self.inputs = inputs
        self._producers: dict[int, Any] = {}  # by linger.ms
        self.expected: dict[tuple[str, str], int] = {}
        self.sent_at: list[float] = []
        self.arrived: dict[int, float] = {}
        self.emitted: dict[int, float] = {}  # the record's own `emitted_at`: the pipeline's share
        self.written: dict[int, float] = {}  # its Kafka timestamp: when the sink produced it
        self._stop = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-latency",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        self.consumer.assign([TopicPartition(corrected, p, OFFSET_BEGINNING) for p in range(6)])
        self._thread = threading.Thread(target=self._consume, daemon=True)
        self._thread.start()
        self._seed = 100
        self._ids = 10_000_000

    def _consume(self) -> None:
        from datetime import datetime

        import orjson

        expected, arrived = self.expected, self.arrived
        emitted, written = self.emitted, self.written
        while not self._stop.is_set():
            msgs = self.consumer.consume(5000, 0.05)
            now = time.time()
            for m in msgs:
                if m.error() is not None:
                    continue
                rec = orjson.loads(m.value())
                i = expected.get((rec["order_id"], rec["status"]))
                if i is not None and i not in arrived:
                    arrived[i] = now
                    emitted[i] = datetime.fromisoformat(rec["emitted_at"]).timestamp()
                    written[i] = m.timestamp()[1] / 1000

    def _producer(self, linger_ms: int) -> Any:
        if linger_ms not in self._producers:
            self._producers[linger_ms] = _producer(self.bootstrap, linger_ms=linger_ms)
        return self._producers[linger_ms]

    def phase(
        self, rate: float, seconds: float, drain: float, linger_ms: int = PROBE_LINGER_MS
    ) -> dict:
        """Produce rate*seconds events at `rate`; wait up to `drain` s for their corrections."""
        from sim.payloads import Ctx

        self._seed += 1
        n_orders = int(rate * seconds / 2)
        now_ms = int(time.time() * 1000)
        ctx = Ctx(seed=self._seed)
        # created now, paid LAG orders later: both events of an order are ~LAG/rate apart
        built: list[list] = []
        lag = max(1, int(rate / 10))
        first: list[tuple] = []
        second: list[tuple] = []
        # event times 15 min before arrival at most: never ahead of it (CLOCK_SKEW)
        made = _orders(  # no OMS event: the timed PAID is the payment's, by the order id
            n_orders, self._seed, now_ms, 1, t0_fixed=now_ms - 900_000, id_base=self._ids, oms=False
        )
        self._ids += 10 * n_orders + 10
        for o, (e1, e2) in made:
            # Timed: the PAID correction, from the event that first says PAID (the
            # payment; Pinduoduo's first event). Every order has exactly one, whatever
            # order its two topics are read in (PENDING_PAYMENT is skipped when the
            # payment is read first), so a missing one is a lost record.
            if o.channel == "pinduoduo":
                s1, s2 = "PAID", None
            else:
                s1, s2 = None, "PAID"
            first.append((o, e1, s1))
            second.append((o, e2, s2))
        order: list[tuple] = []
        for i, item in enumerate(first):
            order.append(item)
            if i >= lag:
                order.append(second[i - lag])
        order.extend(second[len(first) - lag :] if len(first) > lag else second)
        base = len(self.sent_at)
        for o, e, status in order:
            stream, value = _envelope(ctx, o, e, received=RECV_PLACEHOLDER.decode())
            idx = -1
            if status is not None:
                idx = base + len(built)
                self.expected[(o.oid, status)] = idx
            built.append([self.inputs[stream], o.oid.encode(), value, idx])
        self.sent_at.extend([0.0] * len(built))
        producer = self._producer(linger_ms)
        produce, poll, sent_at = producer.produce, producer.poll, self.sent_at
        t0 = time.time()
        broker_cpu = [process_cpu(self.broker_pid)]  # at each second's start
        for k, (topic, key, value, idx) in enumerate(built):
            if k % int(rate) == 0 and k:
                broker_cpu.append(process_cpu(self.broker_pid))
            ahead = t0 + k / rate - time.time()
            if ahead > 0.001:
                time.sleep(ahead)
            t = time.time()
            stamp = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
            )
            value = value.replace(RECV_PLACEHOLDER, stamp.encode(), 1)
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    poll(0.01)
            if idx >= 0:
                sent_at[idx] = t
            if k % 500 == 0:
                poll(0)
        produced_s = time.time() - t0
        producer.flush(30)
        want = [i for _, _, _, i in built if i >= 0]
        deadline = time.time() + drain
        while time.time() < deadline and not all(i in self.arrived for i in want):
            time.sleep(0.2)
        lat: list[float] = []
        inside: list[float] = []  # produce -> emitted_at: the pipeline's share of `lat`
        to_sink: list[float] = []  # produce -> the sink's produce call
        hop: list[float] = []  # the sink's produce call -> consumed here: one broker hop
        worst: dict[int, float] = {}  # each second sent: spikes at the epoch interval are snapshots
        worst_in: dict[int, float] = {}  # the same, produce -> emitted_at
        worst_hop: dict[int, float] = {}  # the same, the output's broker hop
        thirds: list[list[float]] = [[], [], []]  # by when sent: the broker slows as it fills
        for i in want:
            if i in self.arrived:
                ms = (self.arrived[i] - sent_at[i]) * 1000
                lat.append(ms)
                inside.append((self.emitted[i] - sent_at[i]) * 1000)
                to_sink.append((self.written[i] - sent_at[i]) * 1000)
                hop.append((self.arrived[i] - self.written[i]) * 1000)
                s = int(sent_at[i] - t0)
                worst[s] = max(worst.get(s, 0.0), ms)
                worst_in[s] = max(worst_in.get(s, 0.0), inside[-1])
                worst_hop[s] = max(worst_hop.get(s, 0.0), hop[-1])
                thirds[min(2, int(3 * (sent_at[i] - t0) / seconds))].append(ms)
        lat.sort()
        inside.sort()
        to_sink.sort()
        hop.sort()
        return {
            "started_at": t0,
            "timeline_worst_ms": [round(worst.get(s, float("nan"))) for s in range(int(seconds))],
            "timeline_emitted_worst_ms": [
                round(worst_in.get(s, float("nan"))) for s in range(int(seconds))
            ],
            "timeline_broker_out_worst_ms": [
                round(worst_hop.get(s, float("nan"))) for s in range(int(seconds))
            ],
            "p99_by_third_ms": [_pct(sorted(t), 0.99) for t in thirds],
            # Tansu's memory store lists every batch a partition holds on each fetch, so
            # its CPU grows with what the phase has produced (docs/scale-out.md "Latency")
            "timeline_broker_cpu": [round(b - a, 2) for a, b in itertools.pairwise(broker_cpu)],
            "events": len(built),
            "achieved_rate": len(built) / produced_s,
            "matched": len(lat),
            "expected": len(want),
            "p50_ms": _pct(lat, 0.50),
            "p99_ms": _pct(lat, 0.99),
            "max_ms": lat[-1] if lat else float("nan"),
            "emitted_p50_ms": _pct(inside, 0.50),
            "emitted_p99_ms": _pct(inside, 0.99),
            "written_p50_ms": _pct(to_sink, 0.50),
            "written_p99_ms": _pct(to_sink, 0.99),
            "broker_out_p50_ms": _pct(hop, 0.50),
            "broker_out_p99_ms": _pct(hop, 0.99),
        }

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.consumer.close()


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_latency(
    bootstrap: str,
    phases: list[Phase],
    drain: float,
    broker_pid: int | None = None,
) -> dict[str, dict]:
    """Each phase on its own topics and its own freshly started pipeline.

    Tansu's memory store slows with every batch a partition holds (docs/scale-out.md
    "Latency"), so a phase that ran after another on the same topics would pay for it.
    """
    results: dict[str, dict] = {}
    for i, phase in enumerate(phases):
        results[phase.name] = _latency_phase(bootstrap, f"lat{i}", phase, drain, broker_pid)
    return results


def _latency_phase(
    bootstrap: str, prefix: str, phase: Phase, drain: float, broker_pid: int | None
) -> dict:
    inputs, outputs = topic_names(prefix)
    rdir = DATA / f"recovery-{prefix}"
    shutil.rmtree(rdir, ignore_errors=True)
    create_topics(bootstrap, [*inputs.values(), *outputs.values()])
    env = pipeline_env(bootstrap, inputs, outputs, rdir)
    proc = subprocess.Popen(
        orderguard_cmd(),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = LatencyProbe(bootstrap, inputs, outputs["corrected"], broker_pid)
    try:
        warm = probe.phase(200, 1, 60, phase.linger_ms)  # wait until the pipeline answers
        if warm["matched"] == 0:
            raise RuntimeError("the pipeline did not answer within 60 s")
        result = probe.phase(phase.rate, phase.seconds, drain, phase.linger_ms)
    finally:
        probe.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        delete_topics(bootstrap, [*inputs.values(), *outputs.values()])
        shutil.rmtree(rdir, ignore_errors=True)
    return result


# ---------------------------------------------------------------- main
def _merge_results(figures: dict[str, float]) -> None:
    RESULTS.mkdir(exist_ok=True)
    have: dict = {}
    if LATEST.exists():
        with contextlib.suppress(ValueError):
            have = json.loads(LATEST.read_text())
    have.update(figures)
    tmp = LATEST.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(have, indent=2, sort_keys=True) + "\n")
    tmp.replace(LATEST)


Row = tuple[str, str, str, str, str]
"""A table row: figure, value, target, ratio to it, and the verdict."""


def _rows(f: dict[str, float]) -> Iterator[Row]:
    def num(key: str, unit: str = "", fmt: str = ",.0f") -> str:
        v = f.get(key)
        return "missing" if v is None else f"{v:{fmt}}{unit}"

    def shown(label: str, key: str, unit: str = "", fmt: str = ",.0f") -> Row:
        """A figure reported beside the targets, not judged."""
        return (label, num(key, unit, fmt), "", "", "")

    def judged(label: str, key: str, unit: str, fmt: str, target: str, *, lower: bool) -> Row:
        v, t = f.get(key), TARGETS.get(key)
        if v is None or t is None or v != v:
            return (label, num(key, unit, fmt), target, "", "missing")
        ok = v <= t if lower else v >= t
        ratio = f"{t / v:.2f}" if lower else f"{v / t:.2f}"
        return (label, num(key, unit, fmt), target, ratio, "met" if ok else "MISSED")

    yield shown("pipeline, 1 process", "kafka_pipeline_events_per_s", " ev/s")
    yield shown("  excluding start-up", "kafka_pipeline_events_per_s_excl_startup", " ev/s")
    yield shown("plain confluent-kafka loop", "kafka_plain_events_per_s", " ev/s")
    yield shown("Quix Streams peer", "kafka_quix_events_per_s", " ev/s")
    yield shown("pipeline CPU per event", "kafka_pipeline_cpu_us_per_event", " us", ".1f")
    yield shown("plain loop CPU per event", "kafka_plain_cpu_us_per_event", " us", ".1f")
    yield shown("  plain / pipeline CPU", "plain_to_pipeline_cpu_ratio", "x", ".2f")
    yield judged(
        "pipeline / plain loop", "pipeline_to_plain_ratio", "x", ".2f", ">= 0.8x", lower=False
    )
    yield judged(
        "pipeline / Quix Streams", "pipeline_to_quix_ratio", "x", ".2f", ">= 2x", lower=False
    )
    # Issue 14 sets 1.7x on replay, where nothing competes; here it is reported only
    yield shown("2 processes / 1 (shared cores)", "processes_2_to_1_ratio", "x", ".2f")
    yield shown("2 processes", "kafka_pipeline_2proc_events_per_s", " ev/s")
    for key, label in (
        ("kafka_plain_outputs_identical", "plain loop's records = pipeline's"),
        ("kafka_pipeline_2proc_outputs_identical", "2 processes' records = 1's"),
    ):
        v = f.get(key)
        yield (label, "missing" if v is None else ("yes" if v else "NO"), "", "", "")
    lat = "latency_half"
    yield judged(
        "p99 latency, half the rate", f"{lat}_p99_ms", " ms", ",.0f", "<= 250 ms", lower=True
    )
    yield shown("  achieved produce rate", f"{lat}_achieved_rate", " ev/s")
    yield shown("  p50", f"{lat}_p50_ms", " ms")
    yield shown("  p99 produce -> emitted_at", f"{lat}_emitted_p99_ms", " ms")
    yield shown("  p99 output's broker hop", f"{lat}_broker_out_p99_ms", " ms")
    for third in ("first", "middle", "last"):
        yield shown(f"  p99, the phase's {third} third", f"{lat}_p99_{third}_third_ms", " ms")
    yield shown("  broker CPU, first second", f"{lat}_broker_cpu_first_s", " cores", ".2f")
    yield shown("  broker CPU, last second", f"{lat}_broker_cpu_last_s", " cores", ".2f")
    lat20 = "latency_half_linger20"
    yield judged(
        "  the same, upstream linger 20", f"{lat20}_p99_ms", " ms", ",.0f", "<= 250 ms", lower=True
    )
    yield shown("    p50", f"{lat20}_p50_ms", " ms")
    yield shown("    broker CPU, last second", f"{lat20}_broker_cpu_last_s", " cores", ".2f")
    yield judged("restart from snapshot", "restart_seconds", " s", ".1f", "<= 15 s", lower=True)
    yield shown("  open orders in it", "kafka_open_orders")
    yield shown("  recovery dir", "recovery_dir_bytes", " B")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--orders", type=int, help="default 1M (100k with --quick)")
    ap.add_argument("--quick", action="store_true", help="100k orders, short latency phases")
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["plain", "quix", "processes", "latency", "restart"],
    )
    ap.add_argument("--quix-max-seconds", type=float, default=420)
    ap.add_argument("--latency-only", action="store_true", help="only the latency phases")
    ap.add_argument(
        "--latency-phase",
        action="append",
        metavar="RATE:SECONDS[:LINGER_MS]",
        help="these phases instead of the default (half the one-process rate for 30 s, the "
        "probe producing at linger.ms 5, then at 20); LINGER_MS defaults to 5 (repeatable)",
    )
    ap.add_argument("--plain-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_child:
        plain_child(args.plain_child)
        return
    if args.orders is None:
        args.orders = 100_000 if args.quick else 1_000_000
    if args.quick:
        args.quix_max_seconds = min(args.quix_max_seconds, 90)

    from connectors.broker import EmbeddedBroker

    bench_t0 = time.perf_counter()
    phases: list[Phase] = []
    if args.latency_phase:
        for spec in args.latency_phase:
            rate, secs, *linger = spec.split(":")
            lms = int(linger[0]) if linger else PROBE_LINGER_MS
            name = f"{float(rate) / 1000:g}k" + (f"_linger{lms}" if lms != PROBE_LINGER_MS else "")
            phases.append(Phase(name, float(rate), float(secs), lms))
    elif args.latency_only:
        phases = [Phase("4k", 4000.0, 30.0)]
    if args.latency_only:
        with EmbeddedBroker(startup_timeout=30) as broker:
            lat = run_latency(
                broker.bootstrap, phases, drain=60 if not args.quick else 30, broker_pid=broker.pid
            )
        for name, r in lat.items():
            print(f"latency at {name}/s: {r}")
        return
    path = dataset(args.orders)
    events = sum(1 for _ in path.open("rb"))
    print(f"dataset: {events:,} events, {args.orders:,} orders ({path.name})")
    f: dict[str, float] = {"kafka_events": events, "kafka_orders": args.orders}
    notes: list[str] = []

    with EmbeddedBroker(startup_timeout=30) as broker:
        bs = broker.bootstrap
        inputs, _ = topic_names("bench")
        create_topics(bs, list(inputs.values()))
        n, secs = produce_file(bs, inputs, path)
        print(f"produced {n:,} events to {bs} in {secs:.1f} s ({n / secs:,.0f}/s)")

        # start-up: the same command on empty topics and a fresh recovery dir
        empty_in, empty_out = topic_names("empty")
        create_topics(bs, [*empty_in.values(), *empty_out.values()])
        rdir = DATA / "recovery-empty"
        shutil.rmtree(rdir, ignore_errors=True)
        startup = run_pipeline(pipeline_env(bs, empty_in, empty_out, rdir))
        f["kafka_pipeline_startup_seconds"] = round(startup, 2)
        print(f"pipeline start-up + shutdown on empty topics: {startup:.1f} s")

        # (a) the pipeline, one process
        _, outs = topic_names("a")
        create_topics(bs, list(outs.values()))
        rdir = DATA / "recovery-a"
        shutil.rmtree(rdir, ignore_errors=True)
        env_a = pipeline_env(bs, inputs, outs, rdir)
        cpu0 = children_cpu()
        wall = run_pipeline(env_a)
        f["kafka_pipeline_cpu_us_per_event"] = round((children_cpu() - cpu0) / events * 1e6, 1)
        f["kafka_pipeline_seconds"] = round(wall, 2)
        f["kafka_pipeline_events_per_s"] = round(events / wall)
        f["kafka_pipeline_events_per_s_excl_startup"] = round(events / max(0.1, wall - startup))
        pipeline_out = outputs_digest(bs, outs)
        f["kafka_pipeline_records_out"] = sum(n for n, _ in pipeline_out.values())
        print(f"pipeline: {wall:.1f} s, {events / wall:,.0f} events/s")
        delete_topics(bs, list(outs.values()))
        f["kafka_open_orders"] = args.orders

        # (e) restart from the snapshot, no new input
        if "restart" not in args.skip:
            create_topics(bs, list(outs.values()))
            f["recovery_dir_bytes"] = dir_size(rdir)
            f["restart_seconds"] = round(run_pipeline(env_a), 2)
            print(f"restart: {f['restart_seconds']:.1f} s ({f['recovery_dir_bytes']:,} B)")
            delete_topics(bs, list(outs.values()))
        shutil.rmtree(rdir, ignore_errors=True)

        # (b) the plain loop
        if "plain" not in args.skip:
            _, outs = topic_names("plain")
            create_topics(bs, list(outs.values()))
            cpu0 = children_cpu()
            r = run_plain(bs, inputs, outs)
            f["kafka_plain_cpu_us_per_event"] = round((children_cpu() - cpu0) / events * 1e6, 1)
            f["kafka_plain_events_per_s"] = round(r["events"] / r["wall"])
            f["kafka_plain_events_per_s_excl_startup"] = round(r["events"] / r["seconds"])
            f["kafka_plain_records_out"] = r["records_out"]
            plain_out = outputs_digest(bs, outs)
            same = plain_out == pipeline_out
            f["kafka_plain_outputs_identical"] = int(same)
            if not same:
                notes.append(f"plain loop's outputs differ: {plain_out} vs {pipeline_out}")
            f["kafka_open_orders"] = r["open_orders"]  # counted in the core's shards
            f["plain_to_pipeline_cpu_ratio"] = round(
                f["kafka_plain_cpu_us_per_event"] / f["kafka_pipeline_cpu_us_per_event"], 3
            )
            f["pipeline_to_plain_ratio"] = round(
                f["kafka_pipeline_events_per_s_excl_startup"]
                / f["kafka_plain_events_per_s_excl_startup"],
                3,
            )
            rate = r["events"] / r["wall"]
            print(f"plain loop: {r['wall']:.1f} s, {rate:,.0f} events/s, {r['rounds']:,} rounds")
            delete_topics(bs, list(outs.values()))

        # (c) Quix Streams
        if "quix" not in args.skip:
            py = quix_python()
            if py is None:
                notes.append("quix: no Python with quixstreams (pip install -e '.[bench]')")
            else:
                out = "quix.corrected"
                create_topics(bs, [out])
                before = set(list_topics(bs))
                try:
                    r = run_quix(py, bs, inputs, out, events, args.quix_max_seconds)
                except RuntimeError as e:
                    notes.append(f"quix failed: {str(e).strip().splitlines()[-1]}")
                    print(e)
                else:
                    f["kafka_quix_events"] = r["messages"]
                    f["kafka_quix_events_per_s"] = round(r["messages"] / r["seconds"])
                    f["kafka_quix_records_out"] = r["records_out"]
                    f["pipeline_to_quix_ratio"] = round(
                        f["kafka_pipeline_events_per_s_excl_startup"]
                        / f["kafka_quix_events_per_s"],
                        3,
                    )
                    if r["messages"] < events:
                        notes.append(
                            f"quix: stopped after {args.quix_max_seconds:g} s at "
                            f"{r['messages']:,} of {events:,} events (rate over those)"
                        )
                    print(f"quix: {r['seconds']:.1f} s, {f['kafka_quix_events_per_s']:,} events/s")
                extra = [t for t in list_topics(bs) if t not in before]  # changelogs
                delete_topics(bs, [out, *extra])

        # (d) 2 processes
        if "processes" not in args.skip:
            if not supports_processes():
                notes.append("processes: `orderguard run --processes` does not exist yet")
            else:
                empty2_in, empty2_out = topic_names("empty2")
                create_topics(bs, [*empty2_in.values(), *empty2_out.values()])
                rdir = DATA / "recovery-empty2"
                shutil.rmtree(rdir, ignore_errors=True)
                env = pipeline_env(bs, empty2_in, empty2_out, rdir)
                startup2 = run_pipeline(env, "--processes", "2")
                shutil.rmtree(rdir, ignore_errors=True)
                _, outs = topic_names("d")
                create_topics(bs, list(outs.values()))
                rdir = DATA / "recovery-d"
                shutil.rmtree(rdir, ignore_errors=True)
                wall2 = run_pipeline(pipeline_env(bs, inputs, outs, rdir), "--processes", "2")
                shutil.rmtree(rdir, ignore_errors=True)
                f["kafka_pipeline_2proc_startup_seconds"] = round(startup2, 2)
                f["kafka_pipeline_2proc_seconds"] = round(wall2, 2)
                f["kafka_pipeline_2proc_events_per_s"] = round(events / wall2)
                f["kafka_pipeline_2proc_events_per_s_excl_startup"] = round(
                    events / max(0.1, wall2 - startup2)
                )
                two_out = outputs_digest(bs, outs)
                f["kafka_pipeline_2proc_records_out"] = sum(n for n, _ in two_out.values())
                f["kafka_pipeline_2proc_outputs_identical"] = int(two_out == pipeline_out)
                if two_out != pipeline_out:
                    notes.append(f"2 processes' outputs differ: {two_out} vs {pipeline_out}")
                f["processes_2_to_1_ratio"] = round(
                    f["kafka_pipeline_2proc_events_per_s_excl_startup"]
                    / f["kafka_pipeline_events_per_s_excl_startup"],
                    3,
                )
                print(f"2 processes: {wall2:.1f} s, {events / wall2:,.0f} events/s")
                delete_topics(bs, list(outs.values()))

        delete_topics(bs, list(inputs.values()))

        # (f) latency, on fresh topics and a continuously running pipeline
        if "latency" not in args.skip:
            if not args.latency_phase:  # issue 14: half the rate one process sustains
                half = round(f["kafka_pipeline_events_per_s_excl_startup"] / 2, -2)
                secs = 30.0 if not args.quick else 10.0
                phases = [Phase("half", half, secs), Phase("half_linger20", half, secs, 20)]
            lat = run_latency(bs, phases, drain=60 if not args.quick else 30, broker_pid=broker.pid)
            for name, r in lat.items():
                for k in (
                    *("p50_ms", "p99_ms", "max_ms", "achieved_rate"),
                    *("emitted_p50_ms", "emitted_p99_ms", "broker_out_p50_ms", "broker_out_p99_ms"),
                ):
                    f[f"latency_{name}_{k}"] = round(r[k], 1)
                f[f"latency_{name}_matched_share"] = round(r["matched"] / max(1, r["expected"]), 4)
                thirds = zip(("first", "middle", "last"), r["p99_by_third_ms"], strict=True)
                for third, p99 in thirds:
                    f[f"latency_{name}_p99_{third}_third_ms"] = round(p99, 1)
                cpu = r["timeline_broker_cpu"]
                if cpu:
                    f[f"latency_{name}_broker_cpu_first_s"] = cpu[0]
                    f[f"latency_{name}_broker_cpu_last_s"] = cpu[-1]
                print(
                    f"latency at {name}/s: p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms "
                    f"({r['matched']:,}/{r['expected']:,} matched, "
                    f"produced at {r['achieved_rate']:,.0f}/s); each second's worst: "
                    f"{r['timeline_worst_ms']}; produce -> emitted_at p50 "
                    f"{r['emitted_p50_ms']:.0f} ms, p99 {r['emitted_p99_ms']:.0f} ms; the output's "
                    f"broker hop p50 {r['broker_out_p50_ms']:.0f} ms, "
                    f"p99 {r['broker_out_p99_ms']:.0f} ms; p99 by third of the phase "
                    f"{[round(x) for x in r['p99_by_third_ms']]} ms; the broker's CPU "
                    f"each second {r['timeline_broker_cpu']}"
                )

    f["kafka_bench_seconds"] = round(time.perf_counter() - bench_t0, 1)
    print()
    print(f"  {'figure':<30}{'value':>20}  {'target':>10}  {'ratio':>6}  result")
    for name, value, target, ratio, met in _rows(f):
        print(f"  {name:<30}{value:>20}  {target:>10}  {ratio:>6}  {met}")
    for note in notes:
        print(f"  note: {note}")
    if not args.quick:
        _merge_results({k: v for k, v in f.items() if isinstance(v, int | float) and v == v})
        print(f"\nmerged into {LATEST}")


if __name__ == "__main__":
    main()
