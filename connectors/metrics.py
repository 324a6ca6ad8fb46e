"""The pipeline's Prometheus series and the endpoint that serves them.

Names follow Prometheus conventions: one `orderguard_` prefix, base units, `_total`
counters, no order ids in labels. Series live in the default registry; Bytewax's own
API server (which would merge that registry into its output) is left off, so each
series is served once, by `serve`.
"""

from __future__ import annotations

from collections import Counter as CounterOf
from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, start_http_server

from schemas.event import DeadLetter
from state.records import Alert, Correction, Decision

INPUT_RECORDS = Counter(
    "orderguard_input_records_total",
    "Records read from the input topics (message errors included).",
    ["topic", "partition"],
)
CONSUMER_LAG = Gauge(
    "orderguard_consumer_lag_records",
    "High watermark minus the next offset to read, as the consumer last saw it. "
    "Correct on Apache Kafka; Tansu reports a wrong high watermark.",
    ["topic", "partition"],
)
CAUGHT_UP = Gauge(
    "orderguard_input_caught_up",
    "1 while the partition's consumer last saw its end (the clock follows the wall clock).",
    ["topic", "partition"],
)

CORRECTIONS = Counter(
    "orderguard_corrections_total", "Status corrections emitted, by the new status.", ["status"]
)
ALERTS = Counter(
    "orderguard_alerts_total", "Alert records emitted, by type and state.", ["type", "state"]
)
DEAD_LETTERS = Counter(
    "orderguard_dead_letters_total",
    "Input lines dead-lettered, by stream and reason.",
    ["stream", "reason"],
)
BREAKER_TRANSITIONS = Counter(
    "orderguard_breaker_transitions_total",
    "Breaker decisions, by breaker kind (channel, carrier, customer) and new state.",
    ["breaker", "state"],
)
SINK_FAILURES = Counter(
    "orderguard_sink_delivery_failures_total",
    "Output records Kafka did not acknowledge (the run then fails: nothing is dropped).",
    ["topic"],
)
ORDERS_HELD = Gauge(
    "orderguard_orders",
    "Orders held in state, by derived status and state shard (sum over shards).",
    ["status", "shard"],
)
OPEN_ALERTS = Gauge(
    "orderguard_open_order_alerts",
    "Order alerts firing now (e.g. orders past a deadline), by type and state shard.",
    ["type", "shard"],
)

_STREAMS = frozenset({"orders", "payments", "tracking"})
_published: dict[tuple[Gauge, str], set[str]] = {}


def publish_census(shard: str, statuses: Mapping[str, int], open_alerts: Mapping[str, int]) -> None:
    """Set one shard's gauges; what it no longer holds goes to 0, not stale."""
    for gauge, values in ((ORDERS_HELD, statuses), (OPEN_ALERTS, open_alerts)):
        seen = _published.setdefault((gauge, shard), set())
        for label in seen - values.keys():
            gauge.labels(label, shard).set(0)
        for label, n in values.items():
            gauge.labels(label, shard).set(n)
        seen.update(values)


def count_records(records: Iterable[object]) -> None:
    """Count output records by kind; labels only take bounded values (no ids, no input text).

    Summed per call first: one increment per series and batch, not per record.
    """
    counts: CounterOf[tuple[Counter, tuple[str, ...]]] = CounterOf()
    for r in records:
        if isinstance(r, Correction):
            counts[CORRECTIONS, (r.status,)] += 1
        elif isinstance(r, Alert):
            counts[ALERTS, (r.type, r.state)] += 1
        elif isinstance(r, DeadLetter):
            stream = r.stream if r.stream in _STREAMS else "unknown"
            counts[DEAD_LETTERS, (stream, r.reason)] += 1
        elif isinstance(r, Decision):
            counts[BREAKER_TRANSITIONS, (r.breaker, r.state)] += 1
    for (metric, labels), n in counts.items():
        metric.labels(*labels).inc(n)


class MetricsPortInUse(RuntimeError):
    """The metrics port is taken (another process on this host?)."""


def serve(host: str, port: int) -> None:
    """Serve /metrics on host:port in a daemon thread; port 0 means no endpoint."""
    if port == 0:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as e:
        raise MetricsPortInUse(
            f"cannot serve metrics on {host}:{port}: {e.strerror} "
            "(set metrics.port, or 0 to switch the endpoint off)"
        ) from None
