"""Two Bytewax processes (`orderguard run --processes 2`) give the same outputs as one.

Both runs read the same input topics on the embedded broker (Tansu), each with its
own recovery dir and output topics. With `--exit-when-caught-up` the clock is the
records' own `received_at`, so outputs are deterministic whatever the number of
processes: the same records, ignoring wall-clock fields (as in test_determinism).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.helpers import ROOT
from tests.integration.test_crash_restart import Tail
from tests.integration.test_run_live import OUTPUTS, live_env, ok, orderguard, read_topic

ORDERS = 400
INCIDENTS = (
    "lost_payment_callback",
    "channel_error_storm",
    "carrier_api_outage",
    "stalled_tracking",
)


def cluster_env(bootstrap: str, recovery_dir: Path, inputs_from: dict[str, str] | None):
    """2 partitions per topic: 6 input partitions spread evenly over 2 workers (#556)."""
    env = live_env(bootstrap, recovery_dir)
    env["ORDERGUARD__KAFKA__PARTITIONS"] = "2"
    if inputs_from is not None:  # same inputs, own outputs
        for k, v in inputs_from.items():
            if k.startswith("ORDERGUARD__KAFKA__INPUT_TOPICS__"):
                env[k] = v
    return env


def outputs(bootstrap: str, env: dict[str, str]) -> dict[str, Counter[bytes]]:
    """Each output topic as a multiset of (key, record without wall-clock fields)."""
    result = {}
    for name in OUTPUTS:
        topic = env[f"ORDERGUARD__KAFKA__OUTPUT_TOPICS__{name.upper()}"]
        rows: Counter[bytes] = Counter()
        for key, value in read_topic(bootstrap, topic):
            doc = orjson.loads(value)
            if name not in ("alerts", "breakers"):
                doc.pop("at", None)  # dead letters' `at` is when they were written
            doc.pop("emitted_at", None)
            rows[
                orjson.dumps([key.decode() if key else None, doc], option=orjson.OPT_SORT_KEYS)
            ] += 1
        result[name] = rows
    return result


@dataclass
class Runs:
    one: dict[str, str]
    two: dict[str, str]
    stdout: str
    stderr: str
    ref: dict[str, Counter[bytes]]
    got: dict[str, Counter[bytes]]


@pytest.fixture(scope="module")
def runs(broker, tmp_path_factory) -> Runs:
    """One simulated day read by 1 process and, into other outputs, by 2 processes."""
    tmp = tmp_path_factory.mktemp("scale")
    one = cluster_env(broker.bootstrap, tmp / "rec-1", None)
    two = cluster_env(broker.bootstrap, tmp / "rec-2", one)
    incidents = [a for i in INCIDENTS for a in ("--incident", i)]
    ok(orderguard(one, "simulate", "--orders", str(ORDERS), *incidents, "--to-kafka"))
    assert "recovery initialized" in ok(orderguard(one, "run", "--exit-when-caught-up"))
    proc = orderguard(two, "run", "--exit-when-caught-up", "--processes", "2", timeout=60)
    ok(proc)
    ref, got = outputs(broker.bootstrap, one), outputs(broker.bootstrap, two)
    assert all(ref[t] for t in ref), {t: sum(v.values()) for t, v in ref.items()}
    return Runs(one, two, proc.stdout, proc.stderr, ref, got)


def final_status(records: Counter[bytes]) -> dict[str, str]:
    """Each order's last derived status (highest version)."""
    last: dict[str, tuple[int, str]] = {}
    for row in records:
        key, doc = orjson.loads(row)
        if key not in last or doc["version"] > last[key][0]:
            last[key] = (doc["version"], doc["status"])
    return {k: v[1] for k, v in last.items()}


def test_two_processes_share_the_partitions_and_one_store(runs, broker):
    out = runs.stdout
    assert "by 2 processes; recovery initialized" in out, out
    assert "[0] caught up" in out and "[1] caught up" in out, out
    assert "bytewax#556" not in runs.stderr, runs.stderr  # 6 partitions, 2 workers: even

    # Every input record was read exactly once: the same dead letters, every order
    # corrected, each ending in the same derived status as with one process.
    assert runs.got["dead_letters"] == runs.ref["dead_letters"]
    assert final_status(runs.got["corrected"]) == final_status(runs.ref["corrected"])

    # Both processes wrote their share of the one store (recovery partitions are
    # sqlite files in one directory; each is written by one worker of the cluster).
    rdir = Path(runs.two["ORDERGUARD__RECOVERY__DIR"])
    writers = set()
    for part in rdir.glob("part-*.sqlite3"):
        with contextlib.closing(sqlite3.connect(part)) as db:
            writers |= {r[0] for r in db.execute("SELECT DISTINCT worker_index FROM fronts")}
    assert writers == {0, 1}, writers

    # Resuming with a different process count: nothing new to read, nothing written.
    totals = {t: sum(v.values()) for t, v in runs.got.items()}
    again = ok(orderguard(runs.two, "run", "--exit-when-caught-up", timeout=60))
    assert "caught up: 0 records delivered; recovery resumed from" in again, again
    assert {t: sum(v.values()) for t, v in outputs(broker.bootstrap, runs.two).items()} == totals


def test_two_processes_give_the_same_outputs_as_one(runs):
    for name in OUTPUTS:
        missing, extra = runs.ref[name] - runs.got[name], runs.got[name] - runs.ref[name]
        assert not missing and not extra, (
            f"{name}: {sum(missing.values())} missing, {sum(extra.values())} extra; "
            f"e.g. {next(iter(missing or extra))[:300]!r}"
        )


def test_cluster_options_are_checked_before_anything_starts(tmp_path):
    env = live_env("127.0.0.1:1", tmp_path / "rec")
    bad = {
        ("-i", "0"): "--process-id and --addresses go together",
        ("-i", "2", "-a", "127.0.0.1:7001;127.0.0.1:7002"): "process id 2 is not in 0..1",
        ("-i", "0", "-a", "127.0.0.1"): "is not host:port",
        ("--processes", "2", "-i", "0", "-a", "h:1"): "leave out -i and -a",
    }
    for args, message in bad.items():
        proc = orderguard(env, "run", *args, timeout=30)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "rec").exists()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(c) for c in f.read().split())


def test_kill_9_of_one_process_then_restart_gives_the_same_outputs_as_one(runs, broker, tmp_path):
    """A 2-process run loses a process to kill -9 mid-output; restarted, the cluster's
    outputs are the 1-process run's (as sets: a killed run's records may be written twice,
    identically)."""
    for attempt in range(3):  # a run can finish before its kill lands: draw again
        env = cluster_env(broker.bootstrap, tmp_path / f"rec-{attempt}", runs.one)
        for name in OUTPUTS:
            env[f"ORDERGUARD__KAFKA__OUTPUT_TOPICS__{name.upper()}"] += f".kill{attempt}"
        launcher = subprocess.Popen(
            [sys.executable, "-m", "dataflows.cli", "run", "--exit-when-caught-up",
             "--processes", "2"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        tail = Tail(broker.bootstrap, env["ORDERGUARD__KAFKA__OUTPUT_TOPICS__CORRECTED"], 2)
        try:
            deadline = time.monotonic() + 90
            while launcher.poll() is None and time.monotonic() < deadline:
                if tail.poll() >= 1:  # the topic exists once the run writes to it
                    break
            children = _children(launcher.pid) if launcher.poll() is None else []
            if len(children) == 2:
                os.kill(children[1], signal.SIGKILL)
        finally:
            tail.close()
        out, err = launcher.communicate(timeout=120)
        if children:
            assert launcher.returncode != 0, f"exit {launcher.returncode}\n{out}\n{err[-2000:]}"
            assert "process 1" in (out + err), err[-2000:]
            break
    else:
        pytest.fail("in 3 attempts the 2-process run ended before its kill")
    ok(orderguard(env, "run", "--exit-when-caught-up", "--processes", "2", timeout=120))
    got = outputs(broker.bootstrap, env)
    for name in OUTPUTS:
        missing, extra = set(runs.ref[name]) - set(got[name]), set(got[name]) - set(runs.ref[name])
        assert not missing and not extra, (
            f"{name}: {len(missing)} missing, {len(extra)} extra after kill -9 and restart; "
            f"e.g. {next(iter(missing or extra))[:300]!r}"
        )
