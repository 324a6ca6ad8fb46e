"""The pipeline's Prometheus series and the endpoint that serves them.

Names follow Prometheus conventions: one `orderguard_` prefix, base units, `_total`
counters, no order ids in labels. Series live in the default registry; Bytewax's own
API server (which would merge that registry into its output) is left off, so each
series is served once, by `serve`.
"""

from __future__ import annotations

import time
from collections import Counter as CounterOf
from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from schemas.event import DeadLetter
from state.health import HealthBatch
from state.records import Alert, Correction, Decision
from state.stages import StageTiming

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
OUTPUT_REPLACED = Counter(
    "orderguard_output_replaced_total",
    "Output records replaced by a bounded dead letter `output_too_large`, by stage: "
    "`encode` (over limits.output_record) or `broker` (Kafka refused the record itself).",
    ["stage"],
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

EVENTS = Counter(
    "orderguard_events_total",
    "Input lines normalized into events (dead letters not included), by stream and source.",
    ["stream", "source"],
)
PAYMENTS = Counter(
    "orderguard_payments_total",
    "Payment gateway results seen, by gateway (source) and outcome (success, failure).",
    ["gateway", "outcome"],
)
SOURCE_ANOMALIES = Counter(
    "orderguard_source_anomalies_total",
    "Every occurrence behind the rate-limited source alerts: an unmapped status value "
    "(UNMAPPED_STATUS), a payload missing an implied field (SCHEMA_DRIFT), an event "
    "time ahead of ingestion (CLOCK_SKEW); by type and source.",
    ["type", "source"],
)
STAGE_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800, 259200, 604800)
STAGE_DURATION = Histogram(
    "orderguard_stage_duration_seconds",
    "Time between fulfillment milestones on the ingestion clock, by stage (paid_to_label, "
    "label_to_pickup, pickup_to_delivered, payment_to_oms), channel and carrier.",
    ["stage", "channel", "carrier"],
    buckets=STAGE_BUCKETS,
)
BREAKER_STATE = Gauge(
    "orderguard_breaker_state",
    "1 for the state each channel and carrier breaker is in now, 0 for the others.",
    ["breaker", "key", "state"],
)
CUSTOMER_HOLDS = Gauge("orderguard_customer_holds", "Customers on hold (auto-ship paused) now.")
PROCESSING_LAG = Gauge(
    "orderguard_processing_lag_seconds",
    "Wall clock minus the ingestion clock the order shards of this process have reached.",
)
PENDING_TRACKING = Gauge(
    "orderguard_pending_tracking",
    "Events held for a tracking number or reference no order holds yet, by index shard.",
    ["shard"],
)
REFERENCE_CONFLICTS = Counter(
    "orderguard_reference_conflicts_total",
    "Links refused because their reference already belonged to another order.",
)
SNAPSHOT_DURATION = Histogram(
    "orderguard_snapshot_duration_seconds",
    "Time to serialize one step's state for a recovery snapshot, by step.",
    ["step"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

_STREAMS = frozenset({"orders", "payments", "tracking", "control"})  # control: commands
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


def observe_stages(timings: Iterable[StageTiming]) -> None:
    for t in timings:
        STAGE_DURATION.labels(t.stage, t.channel, t.carrier).observe(t.ms / 1000)


_SOURCE_ANOMALY_LISTS = (
    ("UNMAPPED_STATUS", "unmapped"),
    ("SCHEMA_DRIFT", "drift"),
    ("CLOCK_SKEW", "skews"),
)


def count_health_batch(batch: HealthBatch) -> None:
    """Traffic per stream and source, payment outcomes, source anomalies: from the batch's sums."""
    for (stream, source), n in batch.events.items():
        EVENTS.labels(stream, source).inc(n)
    gateways: CounterOf[tuple[str, str]] = CounterOf()
    for (gateway, _minute), (ok, failed) in batch.outcomes.items():
        gateways[gateway, "success"] += ok
        gateways[gateway, "failure"] += failed
    for labels, n in gateways.items():
        if n:
            PAYMENTS.labels(*labels).inc(n)
    anomalies: CounterOf[tuple[str, str]] = CounterOf()
    for kind, attr in _SOURCE_ANOMALY_LISTS:
        for item in getattr(batch, attr):
            anomalies[kind, item[2]] += 1  # (pos, at, source, ...)
    for labels, n in anomalies.items():
        SOURCE_ANOMALIES.labels(*labels).inc(n)


BREAKER_STATES = ("CLOSED", "OPEN", "HALF_OPEN")


def publish_breakers(states: Iterable[tuple[str, str, str]]) -> None:
    """(breaker, key, state) for every channel and carrier breaker: one-hot per breaker."""
    for breaker, key, state in states:
        for s in BREAKER_STATES:
            BREAKER_STATE.labels(breaker, key, s).set(1 if s == state else 0)


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


class Metrics:
    """The dataflow's observer (`dataflows.observer.Observer`): its reports as these series."""

    def snapshot(self, step: str, seconds: float) -> None:
        SNAPSHOT_DURATION.labels(step).observe(seconds)

    def reference_index(self, index: str, pending: int, refused: int) -> None:
        PENDING_TRACKING.labels(index).set(pending)
        if refused:
            REFERENCE_CONFLICTS.inc(refused)

    def shard_batch(self, stages: Iterable[StageTiming], frontier_ms: int) -> None:
        observe_stages(stages)
        if frontier_ms:
            PROCESSING_LAG.set(max(0.0, time.time() - frontier_ms / 1000))

    def census(
        self, shard: str, statuses: Mapping[str, int], open_alerts: Mapping[str, int]
    ) -> None:
        publish_census(shard, statuses, open_alerts)

    def customer_holds(self, held: int) -> None:
        CUSTOMER_HOLDS.set(held)

    def health_batch(self, batch: HealthBatch) -> None:
        count_health_batch(batch)

    def breakers(self, states: Iterable[tuple[str, str, str]]) -> None:
        publish_breakers(states)

    def records(self, records: Iterable[object]) -> None:
        count_records(records)

    def output_replaced(self, count: int) -> None:
        OUTPUT_REPLACED.labels("encode").inc(count)


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


# ---------------------------------------------------------------- the Redis order view
VIEW_WRITES = Counter("orderguard_redis_view_writes_total", "Keys written to the Redis order view.")
VIEW_FAILURES = Counter(
    "orderguard_redis_view_failures_total",
    "Failed attempts to write to the Redis order view (Redis away, too slow, or a command "
    "refused); what was not written is tried again.",
)
VIEW_DROPPED = Counter(
    "orderguard_redis_view_dropped_total",
    "Keys dropped from the order view's buffer while it was full (Redis away too long).",
)
VIEW_BUFFERED = Gauge(
    "orderguard_redis_view_buffered", "Keys waiting to be written to the Redis order view."
)
