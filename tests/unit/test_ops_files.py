"""The ops files are what they claim: Prometheus accepts them, every alert is complete,
has a runbook and a rule test, and every series a rule or a dashboard panel reads is one
the code exports.

promtool is Debian's `prometheus` package (`make tools` installs it; CI runs `make test`).
Without it these tests fail, not skip: a skipped check would pass CI unchecked.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from pydantic import BaseModel

import connectors.gateway_metrics  # the webhook gateway's series too
import connectors.metrics  # noqa: F401  (registers every series the pipeline exports)
from schemas.config import Settings
from schemas.statuses import MAIN_PATH

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
RULES = OPS / "alerts.yml"
RULE_TESTS = sorted((OPS / "rules-tests").glob("*.yml"))
RUNBOOKS = OPS / "runbooks"
DASHBOARD = OPS / "grafana" / "dashboards" / "orderguard.json"
PROVISIONING = OPS / "grafana" / "provisioning"
RUNBOOK_BASE = "https://github.com/orderguard/orderguard/blob/main/ops/runbooks/"
SEVERITIES = {"critical", "warning"}
METRIC = re.compile(r"\borderguard_[a-z_]+")
CONFIG_KEY = re.compile(
    r"\b(?:thresholds|breakers|retention|pipeline|kafka|recovery|metrics|redis|gateway|control)"
    r"(?:\.[a-z_]+)+"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool is not installed: run `make tools` (Debian package `prometheus`)",
            pytrace=False,
        )
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )


def passed(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def dashboard_panels() -> list[dict[str, Any]]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def exported_series() -> set[str]:
    """Every sample name the code's registry exposes (counters _total, histograms'
    _bucket/_sum/_count), derived from the registry, not listed by hand."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("orderguard_"):
            continue
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


# ---------------------------------------------------------------- promtool
def test_rules_pass_promtool_check():
    out = passed(promtool("check", "rules", str(RULES)))
    assert f"{len(alert_rules())} rules found" in out


def test_prometheus_config_passes_promtool_check_with_its_rule_file():
    out = passed(promtool("check", "config", str(OPS / "prometheus.yml")))
    assert "alerts.yml" in out  # rule_files resolved next to the config, and checked


def test_rule_unit_tests_pass():
    assert RULE_TESTS, "no promtool rule tests in ops/rules-tests/"
    out = passed(promtool("test", "rules", *map(str, RULE_TESTS)))
    assert out.count("SUCCESS") == len(RULE_TESTS), out


def test_every_alert_has_a_rule_test_that_sees_it_fire():
    firing: set[str] = set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    firing.add(check["alertname"])
    assert {r["alert"] for r in alert_rules()} <= firing, "alerts never shown firing"


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses each panel query as the expression of a recording rule."""
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    passed(promtool("check", "rules", str(path)))


# ---------------------------------------------------------------- rules and runbooks
def test_every_rule_is_complete_and_links_its_runbook():
    rules = alert_rules()
    assert rules
    for r in rules:
        name = r["alert"]
        assert r.get("for"), f"{name}: no for:"
        assert r["labels"]["severity"] in SEVERITIES, name
        notes = r["annotations"]
        assert notes.get("summary") and notes.get("description"), name
        assert "{{" in notes["description"], f"{name}: the description shows no value or label"
        assert notes["runbook_url"] == f"{RUNBOOK_BASE}{name}.md", name
        assert (RUNBOOKS / f"{name}.md").is_file(), f"no runbook ops/runbooks/{name}.md"


def test_every_runbook_belongs_to_an_alert():
    alerts = {r["alert"] for r in alert_rules()}
    books = {p.stem for p in RUNBOOKS.glob("*.md")}
    assert books == alerts
    for name in books:
        text = (RUNBOOKS / f"{name}.md").read_text(encoding="utf-8")
        assert text.startswith(f"# {name}\n"), name
        for section in ("## What it means", "## Check", "## Mitigate"):
            assert section in text, f"{name}: no {section!r}"


def config_key_exists(dotted: str) -> bool:
    model: type[BaseModel] = Settings
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif i < len(parts) - 1:
            return False
    return True


def test_the_config_keys_runbooks_and_alerts_name_exist():
    texts = {p.name: p.read_text(encoding="utf-8") for p in RUNBOOKS.glob("*.md")}
    texts[RULES.name] = RULES.read_text(encoding="utf-8")
    named = {(where, key) for where, t in texts.items() for key in CONFIG_KEY.findall(t)}
    assert len({k for _, k in named}) > 20  # the pattern finds them
    missing = sorted((w, k) for w, k in named if not config_key_exists(k))
    assert not missing, missing


# ---------------------------------------------------------------- series
def test_the_registry_exports_what_the_rules_are_about():
    series = exported_series()
    assert {"orderguard_open_order_alerts", "orderguard_payments_total"} <= series
    assert "orderguard_stage_duration_seconds_bucket" in series
    assert {"orderguard_gateway_requests_total", "orderguard_gateway_rejected_total"} <= series
    assert "orderguard_gateway_request_duration_seconds_bucket" in series


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_series_read_is_exported_by_the_code(source):
    exprs = [r["expr"] for r in alert_rules()] if source == "rules" else dashboard_exprs()
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert len(used) >= 8, used
    assert not used - exported_series(), f"{source} read series the code does not export"


# ---------------------------------------------------------------- dashboard
PANELS = {  # title -> a series its queries must read
    "Fulfillment funnel": "orderguard_orders",
    "Stuck orders by type": "orderguard_open_order_alerts",
    "Breaker states": "orderguard_breaker_state",
    "Payment success rate per gateway": "orderguard_payments_total",
    "Processing lag": "orderguard_processing_lag_seconds",
    "Consumer lag": "orderguard_consumer_lag_records",
    "Stage duration quantiles": "orderguard_stage_duration_seconds_bucket",
    "Dead letters by reason": "orderguard_dead_letters_total",
    "Redis view health": "orderguard_redis_view_failures_total",
    "Gateway requests by code": "orderguard_gateway_requests_total",
    "Gateway rejections by reason": "orderguard_gateway_rejected_total",
    "Gateway latency p99": "orderguard_gateway_request_duration_seconds_bucket",
    "Gateway produced": "orderguard_gateway_produced_total",
    "Gateway idempotency degraded": "orderguard_gateway_idempotency_degraded_total",
}


def test_dashboard_has_the_panels_with_their_queries():
    by_title = {p["title"]: p for p in dashboard_panels()}
    for title, series in PANELS.items():
        assert title in by_title, f"no panel {title!r}"
        exprs = [t["expr"] for t in by_title[title]["targets"]]
        assert any(series in e for e in exprs), f"{title}: does not read {series}"
    assert "histogram_quantile" in by_title["Stage duration quantiles"]["targets"][0]["expr"]
    redis = " ".join(t["expr"] for t in by_title["Redis view health"]["targets"])
    for name in ("writes", "failures", "dropped", "buffered"):
        assert f"orderguard_redis_view_{name}" in redis


def test_funnel_follows_the_main_path_in_order():
    funnel = next(p for p in dashboard_panels() if p["title"] == "Fulfillment funnel")
    shown = [re.search(r'status="(\w+)"', t["expr"]).group(1) for t in funnel["targets"]]
    assert shown == list(MAIN_PATH)


def test_dashboard_panels_use_the_provisioned_datasource_and_fit_the_grid():
    (source,) = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus"
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == source["uid"], p["title"]
        assert p["targets"] and all(t["datasource"]["uid"] == source["uid"] for t in p["targets"])


def test_dashboard_provider_loads_json_files_from_one_directory():
    (provider,) = load_yaml(PROVISIONING / "dashboards" / "orderguard.yml")["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    # where compose mounts ops/grafana/dashboards: tests/unit/test_docker_files.py


# ---------------------------------------------------------------- alertmanager
def test_alertmanager_routes_every_severity_and_inhibits_warnings_under_criticals():
    am = load_yaml(OPS / "alertmanager.yml")
    receivers = {r["name"] for r in am["receivers"]}
    route = am["route"]
    assert route["receiver"] in receivers
    assert {"alertname", "type", "gateway"} <= set(route["group_by"])
    routed = {}
    for sub in route["routes"]:
        assert sub["receiver"] in receivers
        for m in sub["matchers"]:
            key, value = re.fullmatch(r'(\w+)="(\w+)"', m).groups()
            if key == "severity":
                routed[value] = sub["receiver"]
    assert set(routed) == SEVERITIES and routed["critical"] != routed["warning"]
    (inhibit,) = am["inhibit_rules"]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert "alertname" in inhibit["equal"]


def test_alertmanager_example_holds_no_secret():
    text = (OPS / "alertmanager.yml").read_text(encoding="utf-8")
    live = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in live if re.search(r"(password|secret|token|api_key)\s*:", ln)]
    hosts = re.findall(r"(?:https?://|smarthost:\s*|@)([\w.-]+)", "\n".join(live))
    assert hosts and all(h.endswith(".invalid") for h in hosts), hosts
