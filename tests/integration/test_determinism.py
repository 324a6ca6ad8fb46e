"""Replaying the same input gives the same outputs whatever the batch size or worker count."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from dataflows.replay import run_replay
from schemas.config import load_settings
from sim import generate, write_jsonl

WALL_CLOCK_FIELDS = {"emitted_at", "at"}  # dead letters' `at` is when they were written


@pytest.fixture(scope="module")
def busy_day(tmp_path_factory) -> Path:
    """A day with incidents, so alerts, breakers and dead letters all appear."""
    path = tmp_path_factory.mktemp("in") / "day.jsonl"
    write_jsonl(
        path,
        generate(
            orders=400,
            seed=3,
            start=datetime(2026, 3, 2, tzinfo=UTC),
            hours=24,
            incidents=frozenset(
                {
                    "lost_payment_callback",
                    "channel_error_storm",
                    "carrier_api_outage",
                    "reship_delivered",
                    "duplicate_webhooks",
                    "out_of_order_scans",
                    "delivery_not_reflected",
                    "stalled_tracking",
                }
            ),
        ),
    )
    return path


def outputs(directory: Path) -> dict[str, list[dict]]:
    result = {}
    for topic in ("corrected", "alerts", "breakers", "dead_letters"):
        rows = []
        for line in (directory / f"{topic}.jsonl").read_bytes().splitlines():
            doc = orjson.loads(line)
            if topic != "alerts" and topic != "breakers":
                doc.pop("at", None)
            doc.pop("emitted_at", None)
            rows.append(doc)
        result[topic] = rows
    return result


def test_batch_size_and_worker_count_do_not_change_outputs(busy_day, tmp_path):
    settings = load_settings()
    reference = run_replay(settings, [busy_day], tmp_path / "ref", batch_size=1000)
    ref = outputs(tmp_path / "ref")
    assert all(ref[t] for t in ref), {t: len(v) for t, v in ref.items()}
    assert reference.events_in > 4000
    for name, kwargs in {
        "batch7": {"batch_size": 7},
        "batch333": {"batch_size": 333},
        "two_workers": {"batch_size": 50, "workers": 2},
    }.items():
        run_replay(settings, [busy_day], tmp_path / name, **kwargs)
        got = outputs(tmp_path / name)
        for topic in ref:
            assert got[topic] == ref[topic], f"{name}: {topic} differs"
