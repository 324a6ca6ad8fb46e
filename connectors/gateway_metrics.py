"""The webhook gateway's Prometheus series (served by `orderguard gateway`, not the pipeline).

`source` is a configured source or `unknown`: a path a stranger made up never
becomes a label.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "orderguard_gateway_requests_total",
    "Webhook requests answered, by source and HTTP status code (499: the client "
    "disconnected before its answer, nginx's convention; nothing was sent).",
    ["source", "code"],
)
REJECTED = Counter(
    "orderguard_gateway_rejected_total",
    "Webhook requests refused, by source and reason (unsigned, bad_signature, "
    "stale_timestamp, too_large, not_json, rate_limited, kafka_unavailable, body_timeout, "
    "client_aborted, ...); internal_error alone is a bug.",
    ["source", "reason"],
)
DUPLICATES = Counter(
    "orderguard_gateway_duplicates_total",
    "Redeliveries of stored webhooks: acknowledged, not produced again.",
    ["source"],
)
UNDEDUPLICATED = Counter(
    "orderguard_gateway_idempotency_degraded_total",
    "Webhooks produced without a de-duplication check because Redis was away or slow "
    "(at least once: a redelivery among them is produced again).",
    ["source"],
)
PRODUCED = Counter(
    "orderguard_gateway_produced_total",
    "Envelopes Kafka acknowledged, by source.",
    ["source"],
)
DURATION = Histogram(
    "orderguard_gateway_request_duration_seconds",
    "Time from a webhook request's body being read to its answer, by source.",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
KAFKA_READY = Gauge(
    "orderguard_gateway_kafka_ready",
    "1 while the last readiness check reached a Kafka broker (GET /readyz).",
)
CONNECTIONS_SHED = Counter(
    "orderguard_gateway_connections_shed_total",
    "Connections closed because the process had gateway.max_connections open: the oldest "
    "idle one to make room (idle), or the newcomer when every one was busy (busy).",
    ["reason"],
)
