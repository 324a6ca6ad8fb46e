"""The live demo shows every alert type and a customer hold in its first minutes (issue 15).

The demo's traffic (a day of backlog, then real time) is cut at five minutes of real time
and replayed with the wall clock pinned there: what the live pipeline would have raised by
then, since deadlines fire on the ingestion clock in both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import takewhile

import orjson

from dataflows.cli import DEMO_INCIDENTS
from dataflows.demo import DemoOptions, demo_traffic
from dataflows.replay import run_replay
from schemas.config import load_settings
from schemas.timeparse import parse_rfc3339
from sim import write_jsonl

ALERT_TYPES = {
    "PAYMENT_NOT_REFLECTED",
    "PAID_AFTER_CLOSE",
    "SHIPMENT_DELAYED",
    "PICKUP_MISSING",
    "TRACKING_STALLED",
    "DELIVERY_NOT_REFLECTED",
    "DUPLICATE_SHIPMENT_RISK",
    "POST_DELIVERY_ANOMALY",
    "DELIVERY_EXCEPTION",
    "STATUS_REGRESSION",
    "REFUND_STUCK",
    "UNMAPPED_STATUS",
    "SCHEMA_DRIFT",
    "CLOCK_SKEW",
    "PAYMENT_SUCCESS_RATE_LOW",
}
NOW = datetime(2026, 3, 2, 9, 30, 17, tzinfo=UTC)


def test_first_five_live_minutes_show_every_alert_type_and_a_customer_hold(tmp_path):
    opts = DemoOptions(incidents=DEMO_INCIDENTS, showcase=True)  # `orderguard demo`'s default
    cut = NOW + timedelta(minutes=5)
    cut_ms = int(cut.timestamp() * 1000)
    live_ms = int(NOW.timestamp() * 1000)
    envelopes = takewhile(
        lambda e: parse_rfc3339(e["received_at"]) < cut_ms, demo_traffic(opts, NOW)
    )
    src = tmp_path / "demo.jsonl"
    write_jsonl(src, envelopes)
    out = tmp_path / "out"
    run_replay(load_settings(), [src], out, show_progress=False, wall_clock=lambda: cut_ms)

    def lines(topic: str) -> list[dict]:
        return [orjson.loads(x) for x in (out / f"{topic}.jsonl").read_bytes().splitlines()]

    live = [a for a in lines("alerts") if parse_rfc3339(a["at"]) >= live_ms]
    assert ALERT_TYPES - {a["type"] for a in live if a["state"] == "firing"} == set()
    holds = [
        d
        for d in lines("breakers")
        if d["breaker"] == "customer" and d["state"] == "HOLD" and parse_rfc3339(d["at"]) >= live_ms
    ]
    assert holds
