"""The record counters say exactly what the pipeline wrote, label by label."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import orjson
from prometheus_client import REGISTRY

from dataflows.replay import run_replay
from schemas.config import load_settings
from schemas.event import Event
from schemas.normalize import Normalizer
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


def samples(name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for f in REGISTRY.collect() for s in f.samples if s.name == name]


def test_traffic_breaker_hold_and_stage_series_follow_the_input_and_the_decisions(tmp_path):
    """Traffic counters equal what the normalizer makes of each line; the breaker and hold
    gauges say the last decision of each breaker; every stage of a delivered life is timed."""
    day = tmp_path / "day.jsonl"
    incidents = {"channel_error_storm", "carrier_api_outage", "delivery_not_reflected"}
    envelopes = list(
        generate(
            orders=400,
            seed=11,
            start=datetime(2026, 3, 3, tzinfo=UTC),
            incidents=frozenset(incidents),
        )
    )
    write_jsonl(day, envelopes)
    settings = load_settings()
    normalize = Normalizer(settings).normalize
    events: Counter[tuple[str, ...]] = Counter()
    payments: Counter[tuple[str, ...]] = Counter()
    unmapped: Counter[tuple[str, ...]] = Counter()
    for i, line in enumerate(day.read_bytes().splitlines()):
        result = normalize(line, origin={}, stream=None, seq=i)
        # a split notification (`each:`) gives a tuple: one result per element
        for r in result if type(result) is tuple else (result,):
            if isinstance(r, Event):
                events[r.stream, r.source] += 1
                if r.kind == "gateway" and r.outcome in ("success", "failure"):
                    payments[r.source, r.outcome] += 1
            elif r.reason == "unmapped_status" and r.source:
                unmapped["UNMAPPED_STATUS", r.source] += 1
    assert payments and unmapped  # the storm sends order_status 9: a real comparison

    before = {
        "events": counted("orderguard_events_total", ("stream", "source")),
        "payments": counted("orderguard_payments_total", ("gateway", "outcome")),
        "anomalies": counted("orderguard_source_anomalies_total", ("type", "source")),
        "stages": counted("orderguard_stage_duration_seconds_count", ("stage",)),
    }
    run_replay(settings, [day], tmp_path / "out", show_progress=False)

    assert counted("orderguard_events_total", ("stream", "source")) - before["events"] == events
    got = counted("orderguard_payments_total", ("gateway", "outcome")) - before["payments"]
    assert got == payments
    anomalies = counted("orderguard_source_anomalies_total", ("type", "source"))
    got = Counter(
        {k: v for k, v in (anomalies - before["anomalies"]).items() if k[0] == "UNMAPPED_STATUS"}
    )
    assert got == unmapped

    last: dict[tuple[str, str], str] = {}
    opened = set()
    for line in (tmp_path / "out" / "breakers.jsonl").read_bytes().splitlines():
        doc = orjson.loads(line)
        last[doc["breaker"], doc["key"]] = doc["state"]
        if doc["state"] in ("OPEN", "HOLD"):
            opened.add(doc["breaker"])
    assert opened == {"channel", "carrier", "customer"}  # the incidents moved every kind
    one_hot = {
        (labels["breaker"], labels["key"]): labels["state"]
        for labels, value in samples("orderguard_breaker_state")
        if value == 1
    }
    for (kind, key), state in last.items():
        if kind != "customer":
            assert one_hot[kind, key] == state, (kind, key)
    held = sum(1 for (kind, _), s in last.items() if kind == "customer" and s == "HOLD")
    assert samples("orderguard_customer_holds") == [({}, float(held))]  # released ones left

    stages = counted("orderguard_stage_duration_seconds_count", ("stage",)) - before["stages"]
    assert {k for (k,) in stages} == {
        "paid_to_label",
        "label_to_pickup",
        "pickup_to_delivered",
        "payment_to_oms",
    }
    for labels, value in samples("orderguard_stage_duration_seconds_sum"):
        assert value >= 0, labels
