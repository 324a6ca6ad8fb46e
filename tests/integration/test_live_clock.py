"""The "Clocks" rule, live: a restart never fires a storm of false "stuck" alerts.

A deadline fires once everything that arrived before it has been consumed. Here
twenty orders are paid; while `orderguard run` is down, labels for ten of them
arrive in Kafka before their SHIPMENT_DELAYED deadline; the run is restarted well
after the deadline has passed on the wall clock. The ten with a label waiting must
not alert (the label arrived before the deadline); the other ten, with nothing
waiting, must. The labels sit behind a backlog (consumer lag on their partitions)
while payment re-notifications received after the deadline wait on the quick
partitions: neither a fast partition's idle tick nor its newer events may carry
the clock past a label still unread. Real broker (Tansu), real subprocesses, real
SIGTERM and recovery.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.broker import ensure_topics
from connectors.kafka_envelopes import produce_envelopes
from tests.helpers import settings_of
from tests.integration.test_run_live import live_env, read_topic

ORDERS = 20
LABELLED = range(10)  # their label waits in Kafka while the run is down
CONTROL = range(10, 20)  # nothing waits: their deadline really passes
DELAY_S = 20  # thresholds.shipment_delayed for this test
BACKLOG = 600  # re-deliveries per labelled order queued ahead of its label: consumer lag
BATCH = 20  # pipeline.batch_size: the backlog takes many batches to work through
CN = timezone(timedelta(hours=8))
ROOT = Path(__file__).resolve().parents[2]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def paid(oid: str, i: int, now: datetime) -> list[dict[str, Any]]:
    """The OMS says paid and WeChat Pay confirms it: PAID, nothing unreflected."""
    cn = now.astimezone(CN).isoformat(timespec="seconds")
    txn = f"42000{oid[2:]}{i:04d}"
    return [
        {
            "stream": "payments",
            "source": "wechatpay",
            "received_at": _iso(now),
            "payload": {
                "out_trade_no": oid,
                "transaction_id": txn,
                "trade_state": "SUCCESS",
                "success_time": cn,
                "amount": {"total": 19900, "currency": "CNY"},
            },
            "event_id": f"wx-{txn}",
        },
        {
            "stream": "orders",
            "source": "oms",
            "received_at": _iso(now),
            "event_id": f"oms-paid-{oid}",  # one identity: re-deliveries change nothing
            "payload": {
                "order_id": oid,
                "status": "已支付",
                "updated_at": cn,
                "customer_id": f"C{20000 + i}",
                "channel": "taobao",
                "tracking_no": None,
                "carrier": None,
                "amount": "199.00",
                "currency": "CNY",
            },
        },
    ]


def label(oid: str, i: int, now: datetime) -> dict[str, Any]:
    return {
        "stream": "orders",
        "source": "wms",
        "received_at": _iso(now),
        "payload": {
            "order_id": oid,
            "event": "LABEL_PRINTED",
            "warehouse": "HZ-01",
            "tracking_no": f"SF{700000000000 + i:012d}",
            "carrier": "sf",
            "at": _iso(now),
        },
    }


def records(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _, v in read_topic(bootstrap, topic)]


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dataflows.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def wait_for(proc: subprocess.Popen[str], what: str, done: Callable[[], bool], timeout: float):
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"run exited {proc.returncode} waiting for {what}\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, f"exit {proc.returncode}\n{out}\n{err}"
    assert "stopped; the next run resumes" in out


def test_restart_after_deadline_fires_only_where_nothing_was_waiting(broker, tmp_path):
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    env["ORDERGUARD__THRESHOLDS__SHIPMENT_DELAYED"] = f"{DELAY_S}s"
    env["ORDERGUARD__PIPELINE__BATCH_SIZE"] = str(BATCH)
    settings = settings_of(env)  # the same configuration the subprocesses get
    kafka = settings.kafka
    ensure_topics(kafka.bootstrap_servers, kafka.topic_partitions())
    corrected = kafka.output_topics.corrected
    alerts = kafka.output_topics.alerts

    t0 = datetime.now(UTC)
    today = t0.astimezone(CN).strftime("%Y%m%d")
    ids = [f"TB{today}{i:05d}" for i in range(ORDERS)]
    envelopes = [e for i, oid in enumerate(ids) for e in paid(oid, i, t0)]
    assert produce_envelopes(settings, envelopes) == len(envelopes)
    started = time.monotonic()

    def statuses() -> dict[str, set[str]]:
        got: dict[str, set[str]] = {}
        for r in records(broker.bootstrap, corrected):
            got.setdefault(r["order_id"], set()).add(r["status"])
        return got

    def all_have(status: str, orders: list[str]) -> bool:
        now = statuses()
        return all(status in now.get(o, ()) for o in orders)

    def firing(kind: str) -> set[str]:
        return {
            r["order_id"]
            for r in records(broker.bootstrap, alerts)
            if r["type"] == kind and r["state"] == "firing" and r.get("order_id") in ids
        }

    # 1. A live run sees them all PAID, snapshots, and is stopped well before the deadline.
    proc = start(env)
    try:
        wait_for(
            proc,
            "PAID for all orders",
            lambda: all_have("PAID", ids),
            timeout=DELAY_S / 2,
        )
        time.sleep(2.5)  # past a snapshot (interval 1 s) of that state
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert any((tmp_path / "recovery").glob("part-*.sqlite3"))
    assert not firing("SHIPMENT_DELAYED"), "a deadline fired before it was due"

    # 2. While it is down, labels for half of them arrive, before their deadline, each
    # behind a backlog in its partition (the OMS re-delivering its paid event), so the
    # restarted run is lagging on those partitions while the others are caught up.
    backlog = [
        {**e, "received_at": _iso(datetime.now(UTC))}
        for i in LABELLED
        for e in paid(ids[i], i, t0)
        if e["source"] == "oms"
    ] * BACKLOG
    assert produce_envelopes(settings, backlog) == len(backlog)
    labelled_at = datetime.now(UTC)
    assert labelled_at - t0 < timedelta(seconds=DELAY_S - 3), "too slow: labels would be late"
    labels = [label(ids[i], i, labelled_at) for i in LABELLED]
    assert produce_envelopes(settings, labels) == len(labels)
    # ... and the deadline passes on the wall clock with the run still down.
    time.sleep(max(0.0, started + DELAY_S + 10 - time.monotonic()))
    # WeChat Pay re-notifies every payment now, past the deadline: on the quick payments
    # partitions these arrive ahead of the waiting labels, and must not move the clock.
    renotified = [
        {**e, "received_at": _iso(datetime.now(UTC))}
        for i, oid in enumerate(ids)
        for e in paid(oid, i, t0)
        if e["source"] == "wechatpay"
    ]
    assert produce_envelopes(settings, renotified) == len(renotified)

    # 3. The restarted run consumes the waiting labels before it lets the deadline fire.
    proc = start(env)
    try:
        wait_for(
            proc,
            "LABEL_CREATED for the labelled orders",
            lambda: all_have("LABEL_CREATED", [ids[i] for i in LABELLED]),
            timeout=60,
        )
        wait_for(
            proc,
            "SHIPMENT_DELAYED for the control orders",
            lambda: firing("SHIPMENT_DELAYED") >= {ids[i] for i in CONTROL},
            timeout=60,
        )
        time.sleep(3)  # room for any late (false) alert to show up
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    ours = [r for r in records(broker.bootstrap, alerts) if r.get("order_id") in ids]
    delayed = {r["order_id"] for r in ours if r["type"] == "SHIPMENT_DELAYED"}
    assert delayed == {ids[i] for i in CONTROL}, (
        f"false SHIPMENT_DELAYED for {sorted(delayed - {ids[i] for i in CONTROL})}; "
        f"missing for {sorted({ids[i] for i in CONTROL} - delayed)}"
    )
    assert {(r["order_id"], r["type"], r["state"]) for r in ours} == {
        (ids[i], "SHIPMENT_DELAYED", "firing") for i in CONTROL
    }
    # The control orders' alerts are due at their own deadline, not at the restart.
    for r in ours:
        first_seen = datetime.fromisoformat(r["first_seen"].replace("Z", "+00:00"))
        assert abs(first_seen - (t0 + timedelta(seconds=DELAY_S))) < timedelta(seconds=1), r
    final = statuses()
    assert all("LABEL_CREATED" not in final[ids[i]] for i in CONTROL)
