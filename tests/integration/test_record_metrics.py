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
