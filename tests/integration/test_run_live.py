"""`orderguard simulate --to-kafka` and `orderguard run` as subprocesses against a real broker.

Tansu on loopback, no mocks: the commands are run the way an operator runs them,
configured through environment overrides only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.broker import free_port
from schemas.config import load_settings
from schemas.ids import IdRules
from schemas.keys import MessageKeys
from sim import generate
from tests.helpers import ROOT, run_cli

ORDERS = 50
DAY_1, DAY_2 = "2026-03-02T00:00:00Z", "2026-04-02T00:00:00Z"  # ids carry the CN date
OUTPUTS = ("corrected", "alerts", "breakers", "dead_letters")


def live_env(bootstrap: str, recovery_dir: Path) -> dict[str, str]:
    """Fresh topic names per test (the broker is shared) and a private recovery dir."""
    suffix = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGUARD__")}
    env["ORDERGUARD__KAFKA__BOOTSTRAP_SERVERS"] = bootstrap
    env["ORDERGUARD__KAFKA__PARTITIONS"] = "3"
    env["ORDERGUARD__RECOVERY__DIR"] = str(recovery_dir)
    env["ORDERGUARD__RECOVERY__SNAPSHOT_INTERVAL"] = "1s"
    env["ORDERGUARD__METRICS__PORT"] = "0"  # tests run side by side: no fixed port
    for stream in ("orders", "payments", "tracking"):
        env[f"ORDERGUARD__KAFKA__INPUT_TOPICS__{stream.upper()}"] = f"in.{stream}.{suffix}"
    for out in OUTPUTS:
        env[f"ORDERGUARD__KAFKA__OUTPUT_TOPICS__{out.upper()}"] = f"out.{out}.{suffix}"
    env["ORDERGUARD__KAFKA__CONTROL_TOPIC"] = f"in.control.{suffix}"
    return env


def orderguard(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, timeout=timeout)


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Every record of a topic, all partitions assigned from the beginning, until EOF."""
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    partitions = sorted(meta.topics[topic].partitions)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    got: list[tuple[bytes | None, bytes]] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + 20
    try:
        while len(at_end) < len(partitions):
            assert time.monotonic() < deadline, f"{topic}: no EOF on {set(partitions) - at_end}"
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                at_end.add(msg.partition())
                continue
            at_end.discard(msg.partition())
            got.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return got


def simulated_order_ids(start: str = DAY_1) -> set[str]:
    """The orders the simulator creates for a day with the CLI's defaults (no refund orders),
    by their canonical id: the OMS's (a channel's own id is linked to it by the OMS)."""
    settings = load_settings()
    keys, ids = MessageKeys(settings), IdRules.from_settings(settings)
    begin = datetime.fromisoformat(start.replace("Z", "+00:00"))
    envs = generate(orders=ORDERS, seed=7, start=begin)
    found = {keys.key(e) for e in envs if e.get("stream") == "orders"}
    refs = (ids.parse_order_id(k.decode()) for k in found if k is not None)
    return {r.order_id for r in refs if r is not None and r.refund_id is None}


def corrections_per_order(bootstrap: str, topic: str) -> Counter[str]:
    return Counter(k.decode() for k, _ in read_topic(bootstrap, topic) if k is not None)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_simulate_to_kafka_then_run_corrects_every_order_and_resumes(broker, tmp_path):
    rdir = tmp_path / "recovery"
    env = live_env(broker.bootstrap, rdir)
    corrected = env["ORDERGUARD__KAFKA__OUTPUT_TOPICS__CORRECTED"]
    outputs = [env[f"ORDERGUARD__KAFKA__OUTPUT_TOPICS__{o.upper()}"] for o in OUTPUTS]

    assert "produced" in ok(orderguard(env, "simulate", "--orders", str(ORDERS), "--to-kafka"))
    inputs = [env[f"ORDERGUARD__KAFKA__INPUT_TOPICS__{s}"] for s in ("ORDERS", "TRACKING")]
    produced = sum(len(read_topic(broker.bootstrap, t)) for t in inputs)
    assert produced > 2 * ORDERS

    first = ok(orderguard(env, "run", "--exit-when-caught-up"))
    assert "recovery initialized" in first
    totals_1 = {t: len(read_topic(broker.bootstrap, t)) for t in outputs}

    # (a) every simulated order got corrections, keyed by its order id
    records = read_topic(broker.bootstrap, corrected)
    assert all(orjson.loads(v)["order_id"] == k.decode() for k, v in records if k is not None)
    day_1 = simulated_order_ids(DAY_1)
    assert len(day_1) == ORDERS
    after_1 = corrections_per_order(broker.bootstrap, corrected)
    assert day_1 <= set(after_1), sorted(day_1 - set(after_1))[:5]

    # (b) the store was initialized, with the configured partition count
    assert sorted(p.name for p in rdir.iterdir()) == [
        "increments",  # the order shards' and reference indexes' chains
        "orderguard-layout.json",
        *(f"part-{i}.sqlite3" for i in range(8)),
    ]
    assert all(p.stat().st_size > 0 for p in rdir.iterdir())
    assert {p.name for p in (rdir / "increments").iterdir()} == {"orders", "tracking_index"}

    # Nothing new: a resumed run reads nothing and writes nothing.
    idle = ok(orderguard(env, "run", "--exit-when-caught-up"))
    assert "recovery resumed from" in idle and "caught up: 0 records delivered" in idle
    assert {t: len(read_topic(broker.bootstrap, t)) for t in outputs} == totals_1

    # A copy of the store without one shard's increments is refused before the run
    # starts, in one line naming the directory (not from inside Bytewax's restore),
    # and is left as it was: nothing read, nothing deleted.
    moved = tmp_path / "moved"
    shutil.copytree(rdir, moved)
    lost = moved / "increments" / "orders" / "o003"
    shutil.rmtree(lost)
    before = sorted(p.relative_to(moved) for p in moved.rglob("*"))
    moved_env = env | {"ORDERGUARD__RECOVERY__DIR": str(moved)}
    refused = orderguard(moved_env, "run", "--exit-when-caught-up")
    err = refused.stderr.strip()
    assert refused.returncode != 0 and "Traceback" not in err and "panicked" not in err, err
    assert len(err.splitlines()) == 1 and str(lost) in err and "must move with" in err, err
    assert sorted(p.relative_to(moved) for p in moved.rglob("*")) == before

    # A second day: the resumed run corrects the new orders (state and per-batch
    # sequencing were restored: a fresh shard would hold every batch back, waiting
    # for batch 0) and does not re-read day 1 (no further corrections for it).
    ok(orderguard(env, "simulate", "--orders", str(ORDERS), "--start", DAY_2, "--to-kafka"))
    second = ok(orderguard(env, "run", "--exit-when-caught-up"))
    assert "recovery resumed from" in second
    after_2 = corrections_per_order(broker.bootstrap, corrected)
    day_2 = simulated_order_ids(DAY_2)
    assert len(day_2) == ORDERS and not day_1 & day_2
    assert day_2 <= set(after_2), sorted(day_2 - set(after_2))[:5]
    assert {o: after_2[o] for o in day_1} == {o: after_1[o] for o in day_1}


def test_run_against_nothing_listening_fails_fast_in_one_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    env = live_env(address, tmp_path / "recovery")
    started = time.monotonic()
    proc = orderguard(env, "run", "--exit-when-caught-up", timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert elapsed < 20
    err = proc.stderr.strip()
    assert address in err and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "recovery").exists()  # nothing set up for a run that never began


def test_simulate_to_kafka_against_nothing_listening_fails_in_one_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    env = live_env(address, tmp_path / "recovery")
    proc = orderguard(env, "simulate", "--orders", "5", "--to-kafka", timeout=60)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert address in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_simulate_needs_exactly_one_destination(tmp_path):
    env = live_env("127.0.0.1:1", tmp_path / "recovery")
    both = orderguard(env, "simulate", "--orders", "5", "--to-kafka", "--out", "x.jsonl")
    neither = orderguard(env, "simulate", "--orders", "5")
    for proc in (both, neither):
        assert proc.returncode == 2 and "exactly one of --out FILE and --to-kafka" in proc.stderr
    out = tmp_path / "day.jsonl"
    ok(orderguard(env, "simulate", "--orders", "5", "--out", str(out)))
    assert out.read_bytes().count(b"\n") > 5


def _stopped_live_run(
    env: dict[str, str],
    ready: Callable[[], bool],
    never: str,
    sig: signal.Signals,
    settle: float = 0.0,
) -> tuple[str, str]:
    """`orderguard run` until `ready()` (+ `settle` s), then `sig`: it must stop cleanly
    (exit 130, the resume line); its stdout and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataflows.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, never
            time.sleep(0.5)
        time.sleep(settle)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "stopped; the next run resumes" in out
    return out, err


def test_continuous_run_stops_on_sigterm_and_the_next_run_resumes(broker, tmp_path):
    """The real live mode: runs until told to stop; SIGTERM (what an orchestrator sends)
    stops it cleanly, and a resumed run adds no new distinct corrections for what was done."""
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    corrected = env["ORDERGUARD__KAFKA__OUTPUT_TOPICS__CORRECTED"]
    ok(orderguard(env, "simulate", "--orders", str(ORDERS), "--to-kafka"))
    day_1 = simulated_order_ids(DAY_1)
    _stopped_live_run(
        env,
        lambda: day_1 <= set(corrections_per_order(broker.bootstrap, corrected)),
        "live run never corrected every order",
        signal.SIGTERM,
        settle=2.5,  # past a snapshot (1 s) of the state that produced them
    )

    def distinct_ids() -> set[str]:
        return {orjson.loads(v)["id"] for _, v in read_topic(broker.bootstrap, corrected)}

    before = distinct_ids()
    assert "recovery resumed from" in ok(orderguard(env, "run", "--exit-when-caught-up"))
    assert distinct_ids() == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_prints_no_rust_panic(broker, tmp_path, sig):
    """Ctrl-C (SIGINT) or SIGTERM mid-run: the clean line, exit 130, nothing from Rust."""
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    corrected = env["ORDERGUARD__KAFKA__OUTPUT_TOPICS__CORRECTED"]
    ok(orderguard(env, "simulate", "--orders", "50", "--to-kafka"))
    _, err = _stopped_live_run(
        {**env, "RUST_BACKTRACE": "1"},
        lambda: bool(read_topic(broker.bootstrap, corrected)),  # the dataflow is running
        "the live run never corrected an order",
        sig,
    )
    assert "panicked" not in err and "run.rs" not in err and "Traceback" not in err, err


def test_run_serves_the_operator_page_when_page_port_is_set(broker, tmp_path):
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    env["ORDERGUARD__METRICS__PORT"] = str(free_port())
    page = free_port()
    env["ORDERGUARD__PAGE__PORT"] = str(page)
    ok(orderguard(env, "simulate", "--orders", "50", "--to-kafka"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataflows.cli", "run"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        state: dict = {}
        while not state.get("corrections"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"the page never showed corrections: {state}"
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{page}/api/state", timeout=2) as r:
                    state = orjson.loads(r.read())
            except OSError:
                continue
        with urllib.request.urlopen(f"http://127.0.0.1:{page}/", timeout=2) as r:
            assert b'id="corrections"' in r.read()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
