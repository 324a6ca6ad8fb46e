"""The project's alert rules fire in a real Prometheus scraping a running pipeline.

`orderguard run` reads the last 6 hours of simulated traffic with lost payment callbacks
from the embedded broker, and a real Prometheus (Debian's package) runs a copy of
ops/prometheus.yml and ops/alerts.yml. The copies differ from the project's files only
where a test must: the scrape target is the pipeline's metrics port on loopback (the
webhook gateway's job is left out: no gateway runs here), scrape and evaluation run
every second, the alerting section (no Alertmanager here) is
dropped, and every rule's `for:` is shortened to FOR_IN_TEST. Thresholds are unchanged:
the incident leaves more orders unreflected than the production threshold allows.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.broker import ensure_topics, free_port
from connectors.kafka_envelopes import produce_envelopes
from sim import generate
from tests.helpers import settings_of
from tests.integration.test_live_clock import start, stop
from tests.integration.test_run_live import live_env
from tests.prometheus_server import PrometheusServer

OPS = Path(__file__).resolve().parents[2] / "ops"
ALERT = "OrderguardStuckPaymentNotReflected"
STUCK = 'sum(orderguard_open_order_alerts{type="PAYMENT_NOT_REFLECTED"})'
FOR_IN_TEST = "2s"
HOURS = 6
# Over 6 hours, unreflected payments open at the end (threshold 10): the simulator's
# traffic follows China's day, so the count depends on the hour. Replayed for six hours
# of the day: 24 to 117 (2,000 orders gave exactly 10 at 02:00 China time, and failed).
ORDERS = 5000
WAIT = 120.0


def config_for_test(workdir: Path, metrics_port: int) -> Path:
    """Copies of the project's scrape config and rules, changed as the module docstring says."""
    rules = yaml.safe_load((OPS / "alerts.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR_IN_TEST
    (workdir / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))

    config = yaml.safe_load((OPS / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config.pop("alerting")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "orderguard"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    config["scrape_configs"] = [job]
    path = workdir / "prometheus.yml"  # rule_files (alerts.yml) resolve next to it
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def received(envelope: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(envelope["received_at"]).replace("Z", "+00:00"))


def the_last_hours_until_now() -> list[dict[str, Any]]:
    """Traffic of the last HOURS with lost callbacks; what would arrive later is left out."""
    now = datetime.now(UTC)
    envelopes = generate(
        orders=ORDERS,
        seed=7,
        start=now - timedelta(hours=HOURS),
        hours=HOURS,
        incidents=frozenset({"lost_payment_callback"}),
    )
    return [e for e in envelopes if received(e) <= now]


def firing(alerts: list[dict[str, Any]]) -> dict[str, Any] | None:
    for a in alerts:
        if a["labels"]["alertname"] == ALERT and a["state"] == "firing":
            return a
    return None


def situation(prom: PrometheusServer) -> str:
    """What Prometheus sees now, for a failure message."""
    alerts = [
        f"  {a['labels']['alertname']} {a['state']} value={a['value']}" for a in prom.alerts()
    ]
    targets = [f"  {t['scrapeUrl']} {t['health']} {t['lastError']}" for t in prom.targets()]
    stuck = prom.query(STUCK)
    return (
        "alerts:\n" + ("\n".join(alerts) or "  none") + "\ntargets:\n" + "\n".join(targets)
        + f"\nscraped {STUCK} = {stuck[0]['value'][1] if stuck else 'no data'}"
        + f"\nprometheus log:\n{prom.log_tail()}"
    )  # fmt: skip


def test_stuck_payments_alert_fires_in_a_real_prometheus(broker, tmp_path):
    env = live_env(broker.bootstrap, tmp_path / "recovery")
    metrics_port = free_port()
    env["ORDERGUARD__METRICS__HOST"] = "127.0.0.1"
    env["ORDERGUARD__METRICS__PORT"] = str(metrics_port)
    settings = settings_of(env)
    kafka = settings.kafka
    ensure_topics(kafka.bootstrap_servers, kafka.topic_partitions())
    envelopes = the_last_hours_until_now()
    assert produce_envelopes(settings, envelopes) == len(envelopes)

    with PrometheusServer(config_for_test(tmp_path, metrics_port), tmp_path) as prom:
        proc = start(env)
        try:
            deadline = time.monotonic() + WAIT
            alert = None
            while alert is None:
                if proc.poll() is not None:
                    out, err = proc.communicate()
                    pytest.fail(f"orderguard run exited {proc.returncode}\n{out}\n{err}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{ALERT} not firing after {WAIT:g}s\n{situation(prom)}")
                time.sleep(1)
                alert = firing(prom.alerts())

            assert float(alert["value"]) > 10, situation(prom)
            assert alert["labels"]["severity"] == "critical"
            assert alert["annotations"]["runbook_url"].endswith(f"/ops/runbooks/{ALERT}.md")
            (target,) = prom.targets()
            assert target["labels"]["job"] == "orderguard"
            assert target["health"] == "up", situation(prom)
            assert [float(r["value"][1]) for r in prom.query('up{job="orderguard"}')] == [1.0]
        finally:
            if proc.poll() is None:  # an exited run was already reported above
                stop(proc)
