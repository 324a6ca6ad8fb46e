"""The gateway protects itself: hostile or broken clients cannot stop or fool it (issue 11).

Every test runs the real gateway process against a real broker and Redis, and talks
to it the way the client in question would: raw sockets for idle, slow, aborting or
malformed clients, signed requests for providers.
"""

from __future__ import annotations

import shutil
import socket
import urllib.request
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.broker import EmbeddedBroker, free_port
from tests.helpers import PrivateRedis, wait_until
from tests.integration.gateway_fixture import (
    GatewayProcess,
    Webhook,
    gateway_env,
    post_all,
    records,
    run_id,
    signed,
    stripe_body,
)

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


def _env(broker: EmbeddedBroker, redis: PrivateRedis, **overrides: str) -> dict[str, str]:
    return gateway_env(
        broker.bootstrap,
        redis.url,
        GATEWAY__METRICS_PORT=str(free_port()),
        # yto's own bucket is small, so a flood would empty it at once
        GATEWAY__SOURCES__YTO__RATE_LIMIT__RATE="1",
        GATEWAY__SOURCES__YTO__RATE_LIMIT__BURST="20",
        **overrides,
    )


@pytest.fixture(scope="module")
def gw(broker: EmbeddedBroker, private_redis: PrivateRedis) -> Iterator[GatewayProcess]:
    """The default configuration but for the metrics port and yto's limit."""
    with GatewayProcess(_env(broker, private_redis)) as g:
        yield g


def rejected(gw: GatewayProcess) -> Counter[tuple[str, str]]:
    """orderguard_gateway_rejected_total by (source, reason)."""
    url = f"http://127.0.0.1:{gw.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "orderguard_gateway_rejected_total":
                out[s.labels["source"], s.labels["reason"]] += int(s.value)
    return out


def connect(gw: GatewayProcess) -> socket.socket:
    host, port = gw.settings.gateway.host, gw.settings.gateway.port
    return socket.create_connection((host, port), timeout=30)


def exchange(gw: GatewayProcess, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the gateway closes: status, headers (lower-case), body."""
    with connect(gw) as s:
        s.sendall(data)
        raw = read_to_close(s)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0] else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def read_to_close(s: socket.socket) -> bytes:
    """Everything until EOF; a reset counts as EOF (the server closed); a 30 s silence fails."""
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            pytest.fail("the gateway neither answered nor closed the connection within 30 s")
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def head(source: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST /webhooks/{source} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


# ------------------------------------------------------------------ finding 3: idle sockets
def test_idle_connections_do_not_starve_signed_webhooks(broker, private_redis):
    """300 idle sockets against a process allowed 256 open files: webhooks are still served."""
    env = _env(broker, private_redis)
    run = run_id()
    with GatewayProcess(env, open_files=256) as g:
        idle = []
        try:
            for _ in range(300):
                idle.append(connect(g))
            hooks = [
                signed(g.settings, "stripe", stripe_body(f"evt_{run}_{i}", f"TB-{run}"))
                for i in range(30)
            ]
            answers = post_all(g.url, hooks, concurrency=10)
        finally:
            for s in idle:
                s.close()
        codes = Counter(a.status for a in answers)
        assert codes == {202: 30}, codes


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /webhooks/stripe HTTP/1.1\r\nHost: gw\r\n"],
    ids=["nothing", "half a head"],
)
def test_a_connection_without_a_complete_request_head_is_closed(broker, private_redis, sent):
    env = _env(broker, private_redis, GATEWAY__IDLE_TIMEOUT="1s")
    with GatewayProcess(env) as g, connect(g) as s:
        s.sendall(sent)
        assert read_to_close(s) == b""


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closed(broker, private_redis):
    with GatewayProcess(_env(broker, private_redis, GATEWAY__BODY_TIMEOUT="1s")) as g:
        status, headers, body = exchange(g, head("stripe", 1000) + b'{"id": "evt_slow"')
        assert status == 408
        assert headers["content-type"].startswith("application/json")
        assert orjson.loads(body)["error"] == "body_timeout"
        assert rejected(g)["stripe", "body_timeout"] == 1


# ------------------------------------------------------------------ finding 4: unsigned floods
def test_an_unsigned_flood_does_not_make_genuine_webhooks_429(gw, broker):
    """yto's bucket holds 20: 200 unsigned posts, then 10 signed ones, all 202."""
    run = run_id()
    flood = [Webhook("yto", b"{}", {"Content-Type": "application/json"}) for _ in range(200)]
    answers = post_all(gw.url, flood, concurrency=20)
    assert Counter(a.status for a in answers) == {401: 200}
    genuine = [
        signed(
            gw.settings,
            "yto",
            b'{"mailNo": "YT%s-%d", "orderNo": "SH-%s"}' % (run.encode(), i, run.encode()),
        )
        for i in range(10)
    ]
    codes = Counter(a.status for a in post_all(gw.url, genuine, concurrency=5))
    assert codes == {202: 10}, codes
    # The limit still holds for signed traffic: 30 more exceed what is left of the bucket.
    more = [
        signed(gw.settings, "yto", b'{"mailNo": "YT%s-more-%d"}' % (run.encode(), i))
        for i in range(30)
    ]
    assert Counter(a.status for a in post_all(gw.url, more, concurrency=5))[429] > 0


# ------------------------------------------------------------------ finding 7: client aborts
def test_a_client_that_disconnects_mid_body_is_counted_client_aborted_not_an_error(gw):
    before = rejected(gw)
    with connect(gw) as s:
        s.sendall(head("stripe", 10_000) + b'{"id": "evt_gone", "pad": "' + b"x" * 100)
    wait_until(
        "client_aborted to be counted",
        lambda: rejected(gw)["stripe", "client_aborted"] > before["stripe", "client_aborted"],
        timeout=30,
    )
    after = rejected(gw)
    assert after["stripe", "internal_error"] == before["stripe", "internal_error"]
    assert "ERROR" not in gw.output and "Traceback" not in gw.output, gw.output


# ---------------------------------------------------------- finding 8: bodies near Kafka's limit
def test_the_default_max_body_is_stored_and_a_larger_body_is_413_not_503(gw, broker):
    """The default `max_body` is stored; 999,950 B (the finding's 503s) is 413 at once."""
    run = run_id()
    limit = gw.settings.gateway.max_body

    def body(size: int, n: int) -> bytes:
        start = b'{"id": "evt_%s_%d", "pad": "' % (run.encode(), n)
        return start + b"x" * (size - len(start) - 2) + b'"}'

    at_limit = signed(gw.settings, "stripe", body(limit, 1))
    near_kafka = signed(gw.settings, "stripe", body(999_950, 2))
    answers = post_all(gw.url, [at_limit, near_kafka])
    assert [(a.status, a.error) for a in answers] == [(202, None), (413, "too_large")]


def test_an_envelope_kafka_would_refuse_is_413_not_503(broker, private_redis):
    """A body within `max_body` whose id makes the envelope exceed message.max.bytes."""
    env = _env(
        broker,
        private_redis,
        KAFKA__CLIENT='{"message.max.bytes": "50000"}',
        LIMITS__OUTPUT_RECORD="40000",  # the pipeline's records must fit 50,000 too
        GATEWAY__MAX_BODY="30000",
    )
    run = run_id()
    with GatewayProcess(env) as g:
        # The id (stored again as the envelope's event_id) is most of the body.
        body = b'{"id": "evt_%s_%s"}' % (run.encode(), b"x" * 29_000)
        answers = post_all(g.url, [signed(g.settings, "stripe", body)])
        assert [(a.status, a.error) for a in answers] == [(413, "too_large")]


# ------------------------------------------------------------------ finding 9: unsigned ids
def test_new_delivery_id_headers_on_a_signed_body_do_not_make_duplicates(gw, broker):
    run = run_id()
    body = stripe_body(f"evt_{run}", f"WX-{run}")
    hooks = []
    for i in range(3):
        hook = signed(gw.settings, "stripe", body)
        hooks.append(Webhook(hook.source, hook.body, {**hook.headers, "X-Delivery-Id": f"x{i}"}))
    statuses = [post_all(gw.url, [h])[0].status for h in hooks]
    assert statuses == [202, 200, 200]
    held = records(broker.bootstrap, gw.topics["payments"])
    assert len([r for r in held if run.encode() in r.value]) == 1


# ------------------------------------------------------ finding 11: the framework's own answers
SIGNATURE_LIKE = "v1=" + "5f" * 5000


@pytest.mark.parametrize(
    "request_bytes",
    [
        head("stripe", 2, f"Stripe-Signature: t=1,{SIGNATURE_LIKE}\r\n") + b"{}",
        f"POST /webhooks/stripe?{SIGNATURE_LIKE} HTTP/1.1\r\nHost: gw\r\n\r\n".encode(),
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: gw\r\nBroken header line\r\n\r\n",
    ],
    ids=["header too long", "request line too long", "malformed header"],
)
def test_malformed_http_gets_a_json_400_that_quotes_nothing(gw, request_bytes):
    status, headers, body = exchange(gw, request_bytes)
    assert status == 400
    assert headers["content-type"].startswith("application/json"), body
    assert orjson.loads(body)["error"] == "bad_request"
    assert b"5f5f5f" not in body and b"Broken" not in body
    assert "5f5f5f" not in gw.output and "ERROR" not in gw.output, gw.output[-2000:]
