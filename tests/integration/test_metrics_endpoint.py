"""The metrics endpoint of a running `orderguard run`, scraped over HTTP as Prometheus does.

A day with lost payment callbacks, every life cut short (so orders stay open), is
read by a live run; once it has caught up, the ingestion clock follows the wall
clock and the unreflected payments pass their deadline. The series must then say
what the output topics say.
"""

from __future__ import annotations

import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
from prometheus_client.parser import text_string_to_metric_families

from connectors.broker import ensure_topics, free_port
from connectors.kafka_envelopes import produce_envelopes
from schemas.errors import REASONS
from sim import generate
from tests.helpers import settings_of
from tests.integration.test_live_clock import start, stop, wait_for
from tests.integration.test_run_live import live_env, read_topic

Scrape = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(m: Scrape, name: str, **match: str) -> float:
    return sum(
        v for labels, v in m.get(name, []) if all(labels.get(k) == x for k, x in match.items())
    )


def test_a_lost_callback_incident_moves_the_series_it_should(broker, tmp_path):
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    port = free_port()
    env["ORDERGUARD__METRICS__PORT"] = str(port)
    settings = settings_of(env)
    ensure_topics(settings.kafka.bootstrap_servers, settings.kafka.topic_partitions())
    envelopes = list(
        generate(
            orders=300,
            seed=21,
            # recent: once caught up the clock is the wall clock, and older orders are evicted
            start=datetime.now(UTC).replace(microsecond=0) - timedelta(days=2),
            incidents=frozenset({"lost_payment_callback"}),
            open_share=1.0,
        )
    )
    assert produce_envelopes(settings, envelopes) == len(envelopes)
    alerts_topic = settings.kafka.output_topics.alerts

    def open_unreflected() -> int:
        firing: set[str] = set()
        for _, value in read_topic(broker.bootstrap, alerts_topic):
            doc = orjson.loads(value)
            if doc["type"] == "PAYMENT_NOT_REFLECTED":
                (firing.add if doc["state"] == "firing" else firing.discard)(doc["alert_id"])
        return len(firing)

    proc = start(env)
    try:
        m: Scrape = {}

        def settled() -> bool:
            nonlocal m
            try:
                m = scrape(port)
            except OSError:
                return False  # not serving yet
            read = total(m, "orderguard_input_records_total")
            stuck = total(m, "orderguard_open_order_alerts", type="PAYMENT_NOT_REFLECTED")
            return read == len(envelopes) and stuck > 0 and stuck == open_unreflected()

        wait_for(proc, "the stuck gauge to agree with the alerts topic", settled, timeout=120)

        fired = total(m, "orderguard_alerts_total", type="PAYMENT_NOT_REFLECTED", state="firing")
        assert fired >= total(m, "orderguard_open_order_alerts", type="PAYMENT_NOT_REFLECTED")
        # every line read is an event or a normalizer's dead letter
        events = total(m, "orderguard_events_total")
        dead = sum(total(m, "orderguard_dead_letters_total", reason=r) for r in REASONS)
        assert events + dead == len(envelopes)
        by_stream = Counter(e["stream"] for e in envelopes)
        for stream, n in by_stream.items():
            assert 0 < total(m, "orderguard_events_total", stream=stream) <= n
        assert total(m, "orderguard_payments_total", outcome="success") > 0
        # the state gauges hold every order; the live clock follows the wall clock
        corrected = read_topic(broker.bootstrap, settings.kafka.output_topics.corrected)
        assert total(m, "orderguard_orders") == len({k for k, _ in corrected})
        assert 0 <= total(m, "orderguard_processing_lag_seconds") < 300
        assert total(m, "orderguard_snapshot_duration_seconds_count", step="orders") > 0
        assert total(m, "orderguard_stage_duration_seconds_count", stage="paid_to_label") > 0
        states = {
            (labels["breaker"], labels["key"])
            for labels, v in m["orderguard_breaker_state"]
            if v == 1
        }
        assert {("channel", c) for c in settings.channels} <= states
        assert {("carrier", c) for c in settings.carriers} <= states
        assert "orderguard_pending_tracking" in m
    finally:
        stop(proc)
