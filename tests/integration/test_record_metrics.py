"""The record counters say exactly what the pipeline wrote, label by label."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import orjson
from prometheus_client import REGISTRY

from dataflows.replay import run_replay
from schemas.config import load_settings
from sim import generate, write_jsonl

STREAMS = {"orders", "payments", "tracking"}
SERIES = {
    "corrected": ("orderguard_corrections_total", ("status",)),
    "alerts": ("orderguard_alerts_total", ("type", "state")),
    "dead_letters": ("orderguard_dead_letters_total", ("stream", "reason")),
    "breakers": ("orderguard_breaker_transitions_total", ("breaker", "state")),
}


def counted(name: str, labels: tuple[str, ...]) -> Counter[tuple[str, ...]]:
    out: Counter[tuple[str, ...]] = Counter()
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.name == name:
                out[tuple(s.labels[k] for k in labels)] += int(s.value)
    return out


def test_counters_match_the_records_written(tmp_path):
    day = tmp_path / "day.jsonl"
    incidents = {"lost_payment_callback", "channel_error_storm", "carrier_api_outage"}
    write_jsonl(
        day,
        generate(
            orders=300,
            seed=5,
            start=datetime(2026, 3, 2, tzinfo=UTC),
            incidents=frozenset(incidents),
        ),
    )
    before = {topic: counted(*spec) for topic, spec in SERIES.items()}
    run_replay(load_settings(), [day], tmp_path / "out", show_progress=False)
    for topic, (name, labels) in SERIES.items():
        written: Counter[tuple[str, ...]] = Counter()
        for line in (tmp_path / "out" / f"{topic}.jsonl").read_bytes().splitlines():
            doc = orjson.loads(line)
            if topic == "dead_letters" and doc["stream"] not in STREAMS:
                doc["stream"] = "unknown"  # no input text in labels: their number is bounded
            written[tuple(str(doc[k]) for k in labels)] += 1
        assert written, f"the day wrote no {topic}: no comparison"
        assert counted(name, labels) - before[topic] == written, topic


def gauge(name: str, label: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.name == name and s.value:
                out[s.labels[label]] += int(s.value)
    return out


def test_state_gauges_say_what_is_held_and_what_is_firing(tmp_path):
    """Every life cut short (open_share 1): no order is evicted, so the state holds them all."""
    day = tmp_path / "day.jsonl"
    write_jsonl(
        day,
        generate(
            orders=300,
            seed=9,
            start=datetime(2026, 3, 2, tzinfo=UTC),
            incidents=frozenset({"lost_payment_callback", "stalled_tracking"}),
            open_share=1.0,
        ),
    )
    run_replay(load_settings(), [day], tmp_path / "out", show_progress=False)
    out = tmp_path / "out"
    last: dict[str, tuple[int, str]] = {}
    for line in (out / "corrected.jsonl").read_bytes().splitlines():
        doc = orjson.loads(line)
        last[doc["order_id"]] = max(
            last.get(doc["order_id"], (0, "")), (doc["version"], doc["status"])
        )
    firing: dict[str, str] = {}
    for line in (out / "alerts.jsonl").read_bytes().splitlines():
        doc = orjson.loads(line)
        if "order_id" in doc:
            if doc["state"] == "firing":
                firing[doc["alert_id"]] = doc["type"]
            else:
                firing.pop(doc["alert_id"], None)
    assert len(last) > 250 and firing  # a real comparison
    assert gauge("orderguard_orders", "status") == Counter(status for _, status in last.values())
    assert gauge("orderguard_open_order_alerts", "type") == Counter(firing.values())
