"""The pipeline's Prometheus series and the endpoint that serves them.

Names follow Prometheus conventions: one `orderguard_` prefix, base units, `_total`
counters, no order ids in labels. Series live in the default registry; Bytewax's own
API server (which would merge that registry into its output) is left off, so each
series is served once, by `serve`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

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
