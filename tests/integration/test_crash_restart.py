"""`kill -9` at random moments, restart, and nothing is lost.

`orderguard run --exit-when-caught-up` (a real subprocess, real Tansu broker, real
Bytewax recovery with a short snapshot interval) is SIGKILLed at seeded random points
and restarted each time, until a last run catches up. All input is produced before
the first run and every run is a finite one, so the ingestion clock is the records'
own `received_at`, never the wall clock.

Asserted against an uninterrupted run over the very same input topics (what the
live path guarantees):

- the last correction written for each order (in topic order: one order, one
  partition) says what the uninterrupted run's last correction says;
- every dead letter is there, exactly (their ids name the input offset);
- nothing was lost in between: each order's versions run 1..N without a gap, every
  resolved alert has its firing record, each breaker's changes chain state to state;
- every kill landed on a running pipeline and every restart resumed.

And record for record, because the dataflow merges its input partitions in one
canonical order (`state/watermark.py`): a record repeated after a restart is the
*same* record, an order's highest version is its final state, and the crashing runs
together write exactly the uninterrupted run's records. (Before the canonical order, the
three topics were merged by timing: two uninterrupted runs over this input differed
in 10-120 of ~1,800 correction ids, and a restart could write another status under an
id a killed run had already written, since `corrected` ids are order id + version.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connectors.broker import ensure_topics
from connectors.kafka_envelopes import produce_envelopes
from connectors.recovery_store import read_progress
from sim import generate
from tests.helpers import settings_of
from tests.integration.test_run_live import (
    OUTPUTS,
    live_env,
    ok,
    orderguard,
    read_topic,
)

ORDERS = 300
SEED = 20260302
INCIDENTS = frozenset(
    {
        "lost_payment_callback",
        "channel_error_storm",
        "carrier_api_outage",
        "reship_delivered",
        "stalled_tracking",
    }
)
KILLS = 3
BATCH = 20  # small batches: many epochs, so snapshots fall all through the run
SNAPSHOT = "200ms"
PARTITIONS = 3  # live_env's kafka.partitions
ROOT = Path(__file__).resolve().parents[2]

Records = dict[str, list[dict[str, Any]]]
"""Every record of each output, in topic order, repeats included."""
ById = dict[str, dict[str, dict[str, Any]]]
"""Each output's records by id (first occurrence), without wall-clock fields."""


# ------------------------------------------------------------------ shared helpers


def pipeline_env(
    bootstrap: str, recovery_dir: Path, inputs: dict[str, str] | None = None
) -> dict[str, str]:
    """`live_env` with small batches and a short snapshot interval; `inputs` reuses the
    input topics of another env (the same input read again) with fresh output topics."""
    env = live_env(bootstrap, recovery_dir)
    env["ORDERGUARD__PIPELINE__BATCH_SIZE"] = str(BATCH)
    # The merge waits to hear from every partition, and an empty one (the control
    # topic) speaks at its first end of partition, one fetch wait after start-up: at
    # the default 50 ms the whole day is read by then and leaves in one epoch, so no
    # kill could fall inside the output. A short wait spreads it over many epochs.
    env["ORDERGUARD__KAFKA__CLIENT"] = '{"fetch.wait.max.ms": "5"}'
    env["ORDERGUARD__RECOVERY__SNAPSHOT_INTERVAL"] = SNAPSHOT
    if inputs is not None:
        env.update({k: v for k, v in inputs.items() if "__INPUT_TOPICS__" in k})
    return env


def produce_day(env: dict[str, str], orders: int = ORDERS, seed: int = SEED) -> int:
    """A simulated day with incidents (so alerts, breakers and dead letters all appear),
    produced to the input topics before any run starts; creates the topics first."""
    settings = settings_of(env)
    ensure_topics(settings.kafka.bootstrap_servers, settings.kafka.topic_partitions())
    envelopes = generate(
        orders=orders,
        seed=seed,
        start=datetime(2026, 3, 2, tzinfo=UTC),
        hours=24,
        incidents=INCIDENTS,
    )
    return produce_envelopes(settings, envelopes)


def create_topics(env: dict[str, str]) -> None:
    settings = settings_of(env)
    ensure_topics(settings.kafka.bootstrap_servers, settings.kafka.topic_partitions())


def output_topic(env: dict[str, str], output: str) -> str:
    return env[f"ORDERGUARD__KAFKA__OUTPUT_TOPICS__{output.upper()}"]


def read_outputs(bootstrap: str, env: dict[str, str]) -> Records:
    return {
        o: [orjson.loads(v) for _, v in read_topic(bootstrap, output_topic(env, o))]
        for o in OUTPUTS
    }


def content(output: str, record: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields that say when it was written, not what it says."""
    drop = {"emitted_at", "at"} if output == "dead_letters" else {"emitted_at"}
    return {k: v for k, v in record.items() if k not in drop}


def by_id(records: Records) -> tuple[ById, list[tuple[str, dict, dict]], int]:
    """The records by id (first occurrence), the repeats whose content differs from the
    first record under their id, and how many repeats there were in all."""
    result: ById = {}
    conflicts: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    repeats = 0
    for output, rows in records.items():
        seen: dict[str, dict[str, Any]] = {}
        for r in rows:
            c = content(output, r)
            first = seen.setdefault(r["id"], c)
            if first is not c:
                repeats += 1
                if first != c:
                    conflicts.append((output, first, c))
        result[output] = seen
    return result, conflicts, repeats


def last_written(corrected: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """Each order's status and standard status in the last correction written for it."""
    return {r["order_id"]: (r["status"], r["standard_status"]) for r in corrected}


def highest_version(corrected: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """Each order's status and standard status in its highest-version correction."""
    last: dict[str, dict[str, Any]] = {}
    for r in corrected.values():
        have = last.get(r["order_id"])
        if have is None or r["version"] > have["version"]:
            last[r["order_id"]] = r
    return {o: (r["status"], r["standard_status"]) for o, r in last.items()}


def assert_nothing_lost(records: Records) -> None:
    """What a lost record would break, checkable without a reference run: a gap in an
    order's versions, a resolved alert without its firing record."""
    versions: dict[str, set[int]] = defaultdict(set)
    for r in records["corrected"]:
        versions[r["order_id"]].add(r["version"])
    gaps = {o: sorted(v) for o, v in versions.items() if sorted(v) != list(range(1, len(v) + 1))}
    assert not gaps, f"versions with gaps: {dict(list(gaps.items())[:5])}"

    states: dict[str, set[str]] = defaultdict(set)
    for r in records["alerts"]:
        states[r["alert_id"]].add(r["state"])
    orphans = [a for a, s in states.items() if "firing" not in s]
    assert not orphans, f"resolved alerts without their firing record: {orphans[:5]}"


def assert_breaker_chains(breakers: list[dict[str, Any]]) -> None:
    """Each breaker change starts where the previous one of its key ended (first
    occurrences, in topic order: one key, one partition)."""
    seen: set[str] = set()
    last: dict[tuple[str, str], str] = {}
    for r in breakers:
        if r["id"] in seen:
            continue
        seen.add(r["id"])
        key = (r["breaker"], r["key"])
        if key in last:
            assert r["previous_state"] == last[key], f"breaker {key} skipped a change: {r}"
        last[key] = r["state"]


def assert_chains_link(corrected: dict[str, dict[str, Any]]) -> None:
    """Each order's version v+1 names version v's status as its previous status."""
    chains: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in corrected.values():
        chains[r["order_id"]][r["version"]] = r
    for order, chain in chains.items():
        assert chain[1]["previous_status"] is None, chain[1]
        for v in range(2, len(chain) + 1):
            assert chain[v]["previous_status"] == chain[v - 1]["status"], (
                f"{order} v{v} follows {chain[v]['previous_status']}, "
                f"but v{v - 1} was {chain[v - 1]['status']}"
            )


def compare(name: str, ours: ById, ref: ById) -> str:
    lines = [f"{name} against the reference run (distinct ids: ours / reference / common):"]
    for o in OUTPUTS:
        a, b = set(ours[o]), set(ref[o])
        lines.append(f"  {o:13} {len(a):5} / {len(b):5} / {len(a & b):5}")
    return "\n".join(lines)


def start_run(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dataflows.cli", "run", "--exit-when-caught-up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def ended(proc: subprocess.Popen[str]) -> str:
    """How a run that ended looks: exit status, its output and the end of its stderr."""
    out, err = proc.communicate()
    return f"exit {proc.returncode}\n{out}\n...{err[-3000:]}"


class Tail:
    """Counts the records arriving on an output topic, to kill a run mid-way."""

    def __init__(self, bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"tail-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                # Tansu holds a fetch for the whole wait: by default 500 ms, in which a
                # run writes much of its output, and the kill would come too late
                "fetch.wait.max.ms": 10,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.count = 0

    def poll(self, timeout: float = 0.05) -> int:
        for msg in self._consumer.consume(1000, timeout):
            if msg.error() is None:
                self.count += 1
        return self.count

    def drain(self, quiet: float = 1.0) -> int:
        """Everything written so far: a poll takes at most 1,000 records, and a killed
        run's last writes may still be on their way."""
        last, since = self.count, time.monotonic()
        while time.monotonic() - since < quiet:
            if self.poll() != last:
                last, since = self.count, time.monotonic()
        return self.count

    def close(self) -> None:
        self._consumer.close()


# ------------------------------------------------------------------ the scenario


@dataclass
class Crashes:
    reference: Records
    crashing: Records
    kills: list[str]
    """How each kill landed: after how many new corrections, or how long after start."""
    written_before_last: int
    """Corrections the killed runs wrote (repeats included)."""
    last_run: str
    resumes: list[int]
    """The epoch each restart resumed at (Bytewax's `exs` table), in order."""


ATTEMPTS = 3
"""Draws of kill moments before giving up: see `RunEnded`."""


class RunEnded(Exception):
    """A run finished by itself (exit 0) before its kill: the output comes in bursts,
    and a draw can fall after a run's last one. The draw missed, not the pipeline."""


@pytest.fixture(scope="module")
def crashes(broker, tmp_path_factory) -> Crashes:
    tmp = tmp_path_factory.mktemp("crash")
    rng = random.Random(SEED)
    reference_env = pipeline_env(broker.bootstrap, tmp / "reference")
    assert produce_day(reference_env) > 10 * ORDERS

    ok(orderguard(reference_env, "run", "--exit-when-caught-up"))
    reference = read_outputs(broker.bootstrap, reference_env)
    missed: list[str] = []
    for attempt in range(ATTEMPTS):
        # fresh output topics and store, the same input
        recovery = tmp / f"crashing{attempt}"
        env = pipeline_env(broker.bootstrap, recovery, inputs=reference_env)
        try:
            return crash_and_restart(broker.bootstrap, env, recovery, rng, reference)
        except RunEnded as e:
            missed.append(str(e))
    pytest.fail(f"in all {ATTEMPTS} attempts a run ended before its kill: {missed}")


def crash_and_restart(
    bootstrap: str, env: dict[str, str], recovery: Path, rng: random.Random, reference: Records
) -> Crashes:
    total = len(by_id(reference)[0]["corrected"])
    create_topics(env)  # the output topics, so the tail can follow them from the start
    tail = Tail(bootstrap, output_topic(env, "corrected"))

    def running(proc: subprocess.Popen[str], what: str) -> None:
        code = proc.poll()
        if code == 0:
            raise RunEnded(what)
        assert code is None, f"{what}: {ended(proc)}"

    # Most kills fall at a random point of the output; one, on a restart, in its
    # start-up. Whether a restart then completes an epoch without touching keys the
    # killed run had snapshotted in it (the case that lost corrections) depends on
    # timing; tests/unit/test_recovery_store.py builds it deterministically.
    at_startup = rng.randrange(1, KILLS)
    kills: list[str] = []
    try:
        for k in range(KILLS):
            proc = start_run(env)
            try:
                begin, started = tail.poll(), time.monotonic()
                if k == at_startup:
                    # A random moment of start-up, ended early by the restart's first
                    # completed epoch (snapshots the killed run wrote of that epoch, for
                    # keys the restart has not touched, are still in the store then:
                    # connectors.recovery_store) or by its first new correction (start-up
                    # is over; a run that got far would leave the next one too little
                    # output to reach its kill mark).
                    # The moment counts from when the run has registered its execution
                    # in the store: a kill before that is no restart of the store (and on a
                    # loaded machine start-up alone can outlast the longest wait).
                    executions = len(read_progress(recovery).exs)
                    while len(read_progress(recovery).exs) == executions:
                        running(proc, f"run {k} ended before it registered its execution")
                        assert time.monotonic() - started < 60, f"run {k}: never registered"
                        time.sleep(0.01)
                    wait = rng.uniform(0.0, 1.2)
                    started = time.monotonic()
                    resume = read_progress(recovery).resume_epoch
                    while (
                        time.monotonic() - started < wait
                        and tail.poll(0.01) == begin
                        and read_progress(recovery).resume_epoch == resume
                    ):
                        pass
                    kills.append(f"{time.monotonic() - started:.2f}s after it registered")
                else:
                    mark = begin + rng.uniform(0.03, 0.15) * total
                    while tail.poll() < mark:
                        running(proc, f"run {k} ended before {mark:.0f} corrections")
                        assert time.monotonic() - started < 60, f"run {k}: no progress"
                    # then a moment more, so kills fall anywhere in the epoch/flush cycle
                    time.sleep(rng.uniform(0.0, 0.1))
                    kills.append(f"{tail.poll() - begin}+ new corrections")
                running(proc, f"run {k} ended before its kill ({kills[-1]})")
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()
            assert proc.returncode == -signal.SIGKILL, proc.returncode
        written = tail.drain()
        last_run = ok(orderguard(env, "run", "--exit-when-caught-up"))
    finally:
        tail.close()
    exs = read_progress(recovery).exs
    resumes = [exs[ex][1] for ex in sorted(exs) if ex > 0]
    return Crashes(reference, read_outputs(bootstrap, env), kills, written, last_run, resumes)


def test_kill_9_at_random_moments_then_restart_loses_nothing(crashes):
    assert "recovery resumed from" in crashes.last_run
    ref, _, _ = by_id(crashes.reference)
    assert all(ref[o] for o in OUTPUTS), {o: len(ref[o]) for o in OUTPUTS}
    assert_nothing_lost(crashes.reference)
    want = last_written(crashes.reference["corrected"])
    assert len(want) == ORDERS
    assert want == highest_version(ref["corrected"])  # one run: the same thing

    ours, conflicts, repeats = by_id(crashes.crashing)
    summary = (
        f"kills: {crashes.kills}; {repeats} records repeated, {len(conflicts)} of them "
        f"differing from the first record under their id\n"
        + compare("killed and restarted", ours, ref)
    )
    print(
        summary,
        f"\n  written by the killed runs: {crashes.written_before_last}; "
        f"restarts resumed at epochs {crashes.resumes}",
    )
    # Each order ends where the uninterrupted run ended it.
    got = last_written(crashes.crashing["corrected"])
    differ = {o: (got.get(o), s) for o, s in want.items() if got.get(o) != s}
    assert not differ, f"{len(differ)} orders end elsewhere (ours, reference): {differ}\n{summary}"
    assert set(got) == set(want)
    # Nothing lost: every dead letter, no gap in any chain.
    assert ours["dead_letters"] == ref["dead_letters"], summary
    assert_nothing_lost(crashes.crashing)
    # Each restart resumed from a snapshot: none started over (epoch 1), none went back
    # behind another. (How many records were repeated says little: a kill can fall
    # right after a completed epoch, and so repeat nothing, or in a long epoch that
    # holds all of a run's output, and so repeat all of it.)
    assert len(crashes.resumes) == KILLS, crashes.resumes
    assert crashes.resumes[0] > 1 and crashes.resumes == sorted(crashes.resumes), crashes.resumes


def assert_same_records(ours: ById, ref: ById) -> None:
    """The uninterrupted run's records, all of them, each with the same content."""
    for o in OUTPUTS:
        missing, extra = set(ref[o]) - set(ours[o]), set(ours[o]) - set(ref[o])
        assert not missing and not extra, (
            f"{o}: {len(missing)} ids missing, {len(extra)} not in the uninterrupted run"
        )
        differ = [i for i in ref[o] if ours[o][i] != ref[o][i]]
        assert not differ, f"{o}: {len(differ)} records differ, e.g. {ours[o][differ[0]]}"


def test_records_repeated_after_a_restart_are_the_same_records(crashes):
    ours, conflicts, _ = by_id(crashes.crashing)
    assert not conflicts, (
        f"{len(conflicts)} ids written with different content, e.g. {conflicts[0][0]}:\n"
        f"  {conflicts[0][1]}\n  {conflicts[0][2]}"
    )
    assert_chains_link(ours["corrected"])
    assert_breaker_chains(crashes.crashing["breakers"])
    assert highest_version(ours["corrected"]) == last_written(crashes.reference["corrected"])
    assert_same_records(ours, by_id(crashes.reference)[0])
