"""A Redis outage neither stops nor blocks the pipeline, and the view catches up after it.

A private `redis-server` (not the shared one: this test stops it) on a free loopback
port, a real broker, and a long-running `orderguard run`. Traffic is produced in two
parts; between them Redis is stopped. The pipeline must read and correct the second
part while Redis is away (counting failed writes on its metrics endpoint), and once
`redis-server` is back on the same port (empty: it keeps nothing on disk), every order
that changed during the outage must show its latest status.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from connectors.broker import ensure_topics, free_port
from connectors.kafka_envelopes import produce_envelopes
from connectors.processes import stop_group
from sim import generate
from tests.helpers import PrivateRedis, settings_of, wait_until
from tests.integration.test_run_live import live_env, read_topic

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 300
TIMEOUT = 180.0  # seconds for anything to happen on a busy 2-core machine

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


def metrics(port: int) -> dict[str, float]:
    """Each series of the pipeline's endpoint, summed over its labels (empty: no answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def last_corrections(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for _, v in read_topic(bootstrap, topic):
        c = orjson.loads(v)
        if c["version"] >= last.get(c["order_id"], {}).get("version", 0):
            last[c["order_id"]] = c
    return last


def view_versions(client: redis.Redis, prefix: str, ids: list[str]) -> dict[str, int | None]:
    pipe = client.pipeline(transaction=False)
    for oid in ids:
        pipe.get(f"{prefix}order:{oid}")
    docs = pipe.execute()
    return {
        oid: orjson.loads(d)["version"] if d else None for oid, d in zip(ids, docs, strict=True)
    }


def shows(client: redis.Redis, prefix: str, last: dict[str, dict[str, Any]]) -> bool:
    """Whether the view holds every one of these orders at its last correction's version."""
    try:
        got = view_versions(client, prefix, list(last))
    except redis.RedisError:
        return False
    return all(got[oid] == c["version"] for oid, c in last.items())


def test_the_view_catches_up_after_redis_was_stopped_and_the_pipeline_never_waited(
    broker, tmp_path
):
    port, metrics_port = free_port(), free_port()
    server = PrivateRedis(port).start()
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    env["ORDERGUARD__REDIS__URL"] = server.url
    env["ORDERGUARD__REDIS__KEY_PREFIX"] = "og:"
    env["ORDERGUARD__REDIS__RETRY_INTERVAL"] = "200ms"
    env["ORDERGUARD__REDIS__SOCKET_TIMEOUT"] = "500ms"
    env["ORDERGUARD__METRICS__PORT"] = str(metrics_port)
    corrected = env["ORDERGUARD__KAFKA__OUTPUT_TOPICS__CORRECTED"]
    settings = settings_of(env)
    ensure_topics(broker.bootstrap, settings.kafka.topic_partitions())

    # a day that ended an hour ago, all in the past: the live clock follows the wall clock
    now = datetime.now(UTC)
    envelopes = [
        e
        for e in generate(orders=ORDERS, seed=3, start=now - timedelta(hours=25), hours=24)
        if datetime.fromisoformat(e["received_at"].replace("Z", "+00:00")) < now
    ]
    half = len(envelopes) // 2
    first, second = envelopes[:half], envelopes[half:]

    client = redis.Redis.from_url(server.url, socket_timeout=2)
    log = tmp_path / "pipeline.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        assert produce_envelopes(settings, first) == len(first)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dataflows.cli", "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )

        def read(n: int) -> Callable[[], bool]:
            def done() -> bool:
                assert proc is not None and proc.poll() is None, log.read_text()
                return metrics(metrics_port).get("orderguard_input_records_total") == n

            return done

        # part 1 is read, and the view shows every order at its last correction
        wait_until("the pipeline to read part 1", read(len(first)))
        wait_until(
            "the view to show part 1",
            lambda: shows(client, "og:", last_corrections(broker.bootstrap, corrected)),
        )
        before = last_corrections(broker.bootstrap, corrected)
        assert len(before) > ORDERS / 4
        failures_before = metrics(metrics_port)["orderguard_redis_view_failures_total"]

        server.stop()  # Redis goes away; the pipeline goes on
        assert produce_envelopes(settings, second) == len(second)
        wait_until("the pipeline to read part 2 without Redis", read(len(envelopes)))

        def corrected_everything() -> bool:
            m = metrics(metrics_port)
            written = len(read_topic(broker.bootstrap, corrected))
            return (
                m["orderguard_corrections_total"] == written
                and m["orderguard_redis_view_failures_total"] > failures_before
            )

        wait_until("the pipeline to correct part 2 while Redis is away", corrected_everything)
        after = last_corrections(broker.bootstrap, corrected)
        changed = {
            oid: c
            for oid, c in after.items()
            if c["version"] > before.get(oid, {}).get("version", 0)
        }
        assert len(changed) > ORDERS / 4, "part 2 changed too few orders to tell"
        m = metrics(metrics_port)
        assert m["orderguard_redis_view_buffered"] > 0  # waiting for Redis
        assert m["orderguard_redis_view_dropped_total"] == 0
        writes_during = m["orderguard_redis_view_writes_total"]

        server.start()  # same port, nothing kept: only what waited is written
        wait_until("the view to catch up", lambda: shows(client, "og:", changed))
        m = metrics(metrics_port)
        assert m["orderguard_redis_view_writes_total"] > writes_during
        wait_until(
            "the buffer to empty",
            lambda: metrics(metrics_port).get("orderguard_redis_view_buffered") == 0,
        )
        text = log.read_text()
        assert f"redis view: cannot write to {server.url}" in text, text
        assert f"redis view: {server.url} answers again" in text, text
    finally:
        if proc is not None:
            stop_group(proc, signal.SIGINT, grace=30)
        client.close()
        server.stop()
