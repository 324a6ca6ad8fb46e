"""`orderguard gateway` end to end: signed webhooks over HTTP into Kafka, nothing acknowledged lost.

The gateway runs as a subprocess, as an operator runs it, against a real broker
(Tansu) and a private `redis-server` that the Redis test stops and starts again.
Topics are read back with every partition assigned from offset 0, so each test
checks what a consumer sees, not what the gateway says it did.

"The broker is down" is made two ways that keep what it stored: a TCP proxy between
the gateway and a broker that advertises the proxy (`TcpProxy.cut()` resets every
connection and refuses new ones), and SIGSTOP on the broker process (it accepts
connections but never answers). Tansu here stores in memory only, so a real kill and
restart would lose every record and prove nothing about lost acknowledgements.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.broker import EmbeddedBroker, free_port
from tests.helpers import PrivateRedis, wait_until
from tests.integration.gateway_fixture import (
    RFC3339_MS_Z,
    Answer,
    GatewayProcess,
    Record,
    Webhook,
    event_ids,
    free_port_pair,
    gateway_env,
    get,
    post,
    post_all,
    post_async,
    records,
    run_id,
    signed,
    stripe_body,
)
from tests.integration.test_connection_cut import ProxiedBroker
from tests.integration.test_redis_outage import metrics
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)

MAX_BODY = 4096
PRODUCE_TIMEOUT = "2s"
DEGRADED = "orderguard_gateway_idempotency_degraded_total"
REQUESTS = "orderguard_gateway_requests_total"


@pytest.fixture(scope="module")
def gw(broker: EmbeddedBroker, private_redis: PrivateRedis) -> Iterator[GatewayProcess]:
    """One gateway for the tests that do not stop anything but Redis."""
    env = gateway_env(
        broker.bootstrap,
        private_redis.url,
        GATEWAY__MAX_BODY=str(MAX_BODY),
        GATEWAY__METRICS_PORT=str(free_port()),
    )
    with GatewayProcess(env) as g:
        yield g


def payments(gw: GatewayProcess, bootstrap: str) -> list[Record]:
    return records(bootstrap, gw.topics["payments"])


def tracking(gw: GatewayProcess, bootstrap: str) -> list[Record]:
    return records(bootstrap, gw.topics["tracking"])


def stripe(gw: GatewayProcess, event_id: str, order_id: str = "TB-1", **kw: Any) -> Webhook:
    """A Stripe event for `order_id`, signed now (or as `kw` says: secret, now, content_type)."""
    return signed(gw.settings, "stripe", stripe_body(event_id, order_id), **kw)


def until_settled(url: str, hook: Webhook, tries: int = 20) -> Answer:
    """Send as a provider does: again after a 409 (the first copy is still being stored)."""
    for _ in range(tries):
        answer = post(url, hook)
        if answer.status != 409:
            return answer
        time.sleep(0.1)
    return answer


# ------------------------------------------------------------------ 1. where webhooks land
def test_signed_webhooks_land_on_their_topic_keyed_by_order_else_tracking_number(gw, broker):
    """Both signature schemes; the envelope wraps the provider's bytes as they came."""
    run = run_id()
    s = gw.settings
    cases: dict[str, tuple[bytes, str, bytes]] = {
        # source: (body, topic, key)
        "stripe": (stripe_body(f"evt_{run}", f"TB-{run}"), "payments", f"TB-{run}".encode()),
        "yto": (
            b'{"mailNo":"YT%s","orderNo":"SH-%s","infoContent":"GOT",'
            b'"acceptTime":"2026-03-02 10:00:00","remark":"\xe5\x8f\x91\xe8\xbf\x90"}'
            % (run.encode(), run.encode()),
            "tracking",
            f"SH-{run}".encode(),
        ),
        "aftership": (
            b'{ "tracking_number": "1Z%s", "order_id": "WEB-%s", "slug": "ups",'
            b' "tag": "InTransit", "checkpoint_time": "2026-03-02T10:00:00+01:00" }'
            % (run.encode(), run.encode()),
            "tracking",
            f"WEB-{run}".encode(),
        ),
        "dhl": (
            b'{"trackingNumber": "9%s", "orderReference": "DY-%s",\n'
            b'"status": {"statusCode": "transit", "timestamp": "2026-03-02T10:00:00Z"}}'
            % (run.encode(), run.encode()),
            "tracking",
            f"DY-{run}".encode(),
        ),
        # a ZTO scan names no order: keyed by its tracking number
        "zto": (
            b'{"billCode":"7%s","scanType":"\xe6\x94\xb6\xe4\xbb\xb6",'
            b'"scanDate":"2026-03-02 10:00:00"}' % run.encode(),
            "tracking",
            f"7{run}".encode(),
        ),
    }
    before = time.time()
    answers = post_all(gw.url, [signed(s, src, body) for src, (body, _, _) in cases.items()])
    after = time.time()
    got = {src: (a.status, a.body) for src, a in zip(cases, answers, strict=True)}
    accepted = (202, {"status": "accepted"})
    assert got == {
        src: (200, {"status": "accepted"}) if src == "dhl" else accepted for src in cases
    }

    held = {"payments": payments(gw, broker.bootstrap), "tracking": tracking(gw, broker.bootstrap)}
    for source, (body, topic, key) in cases.items():
        tail = b',"payload":' + body + b"}"
        found = {t: [r for r in recs if r.value.endswith(tail)] for t, recs in held.items()}
        assert len(found[topic]) == 1, (source, found)
        assert sum(len(v) for v in found.values()) == 1, (source, "on another topic too")
        rec = found[topic][0]
        assert rec.key == key, source
        env = rec.envelope
        assert env["stream"] == topic and env["source"] == source
        assert RFC3339_MS_Z.match(env["received_at"]), env["received_at"]
        at = datetime.fromisoformat(env["received_at"].replace("Z", "+00:00")).timestamp()
        assert before - 1 <= at <= after + 1, (env["received_at"], before, after)
        if source == "stripe":
            assert env["event_id"] == f"evt_{run}"  # the provider's id, from the body
            assert set(env) == {"stream", "source", "received_at", "event_id", "payload"}
        else:
            assert set(env) == {"stream", "source", "received_at", "payload"}


# ------------------------------------------------------------------ 2. refusals
def test_refused_requests_get_their_status_and_reason_and_produce_nothing(gw, broker):
    """A provider (or an attacker) learns why; Kafka never sees a refused body."""
    run = run_id()
    s = gw.settings
    mark = f"refused-{run}"

    def body(n: int) -> bytes:
        return stripe_body(f"evt_{mark}_{n}", f"TB-{mark}")

    unsigned = Webhook("stripe", body(3), {"Content-Type": "application/json"})
    big = b'{"id": "evt_%s_5", "pad": "%s"}' % (mark.encode(), b"x" * MAX_BODY)
    cases: list[tuple[Webhook, int, str]] = [
        (stripe(gw, f"evt_{mark}_1", secret="whsec_someone_else"), 401, "bad_signature"),
        (stripe(gw, f"evt_{mark}_2", now=time.time() - 600), 401, "stale_timestamp"),
        (unsigned, 401, "unsigned"),
        (signed(s, "yto", b'{"mailNo": "YT%s", "orderNo": "[1,' % mark.encode()), 400, "not_json"),
        (signed(s, "stripe", big), 413, "too_large"),
        (Webhook("nosuch", body(6), {"Content-Type": "application/json"}), 404, "unknown_source"),
        (signed(s, "stripe", body(7), content_type="text/plain"), 415, "unsupported_media_type"),
        # paypal is configured but given no secret: refused, never taken unsigned
        (Webhook("paypal", body(8), {"Content-Type": "application/json"}), 503, "no_secret"),
    ]
    answers = post_all(gw.url, [hook for hook, _, _ in cases])
    got = [(a.status, a.error) for a in answers]
    assert got == [(status, reason) for _, status, reason in cases]
    held = payments(gw, broker.bootstrap) + tracking(gw, broker.bootstrap)
    assert not [r for r in held if mark.encode() in r.value]
    # The same requests, correctly signed, are stored: the refusals were the requests' fault.
    fixed = post(gw.url, stripe(gw, f"evt_{mark}_ok", f"TB-{mark}"))
    assert fixed.status == 202
    assert len([r for r in payments(gw, broker.bootstrap) if mark.encode() in r.value]) == 1


# ------------------------------------------------------------------ 3. redelivery
def test_a_redelivery_is_acknowledged_as_duplicate_and_stored_once(gw, broker):
    """Providers redeliver what they think was lost; the pipeline must see it once."""
    run = run_id()
    first = stripe(gw, f"evt_{run}", f"TB-{run}")
    assert post(gw.url, first).status == 202
    # Stripe re-signs a retry (a new timestamp): the event id, not the header, tells.
    again = stripe(gw, f"evt_{run}", f"TB-{run}", now=time.time() + 2)
    assert again.headers != first.headers
    answer = until_settled(gw.url, again)
    assert (answer.status, answer.body) == (200, {"status": "duplicate"})

    # yto sends no id: the body's hash is the delivery's
    yto = signed(gw.settings, "yto", b'{"mailNo":"YT%s","orderNo":"SH-%s"}' % ((run.encode(),) * 2))
    assert post(gw.url, yto).status == 202
    assert until_settled(gw.url, yto).status == 200
    assert event_ids(payments(gw, broker.bootstrap)).count(f"evt_{run}") == 1
    stored = [r for r in tracking(gw, broker.bootstrap) if r.value.endswith(yto.body + b"}")]
    assert len(stored) == 1


# ------------------------------------------------------------------ 6. concurrent copies
def test_concurrent_copies_of_one_delivery_produce_one_record_and_no_5xx(gw, broker):
    """Copies racing each other: one claim wins, the rest are told duplicate or retry."""
    run = run_id()
    copies = [stripe(gw, f"evt_{run}", f"TB-{run}", now=time.time() + i % 3) for i in range(20)]
    answers = post_all(gw.url, copies, concurrency=20)
    codes = Counter(a.status for a in answers)
    assert codes[202] == 1 and set(codes) <= {202, 200, 409}, codes
    assert event_ids(payments(gw, broker.bootstrap)).count(f"evt_{run}") == 1


# ------------------------------------------------------------------ 8. health
def test_health_and_readiness_with_the_broker_up(gw):
    assert (get(gw.url, "/healthz").status, get(gw.url, "/healthz").body) == (200, {"status": "ok"})
    ready = get(gw.url, "/readyz")
    assert (ready.status, ready.body) == (200, {"status": "ready"})


# ------------------------------------------------------------------ 5. Redis away
def test_without_redis_webhooks_are_still_taken_and_dedupe_returns_with_it(
    gw, broker, private_redis
):
    """Redis is an optimisation of at-least-once: never a reason to refuse a webhook."""
    run = run_id()
    degraded_before = metrics(gw.metrics_port).get(DEGRADED, 0.0)
    private_redis.stop()
    try:
        hooks = [stripe(gw, f"evt_{run}_{i}", f"TB-{run}") for i in range(10)]
        hooks.append(stripe(gw, f"evt_{run}_0", f"TB-{run}", now=time.time() + 1))  # redelivery
        answers = post_all(gw.url, hooks)
        # taken without de-duplication: the redelivery is produced again (at least once)
        assert [a.status for a in answers] == [202] * len(hooks), [a.body for a in answers]
        assert metrics(gw.metrics_port).get(DEGRADED, 0.0) >= degraded_before + len(hooks)
    finally:
        private_redis.start()  # the same port, empty

    seen: list[int] = []

    def dedupes_again() -> bool:
        fresh = stripe(gw, f"evt_{run}_{run_id()}", f"TB-{run}")
        seen.append(post(gw.url, fresh).status)
        seen.append(until_settled(gw.url, fresh).status)
        assert all(code in (200, 202) for code in seen), seen  # never a 5xx
        return seen[-1] == 200

    wait_until("a redelivery to be recognized again", dedupes_again, timeout=20, interval=0.2)
    ids = event_ids(payments(gw, broker.bootstrap))
    assert all(ids.count(f"evt_{run}_{i}") >= 1 for i in range(10))


# ------------------------------------------------------------------ 4. broker unreachable
@dataclass
class Outage:
    gateway: GatewayProcess
    proxy: TcpProxy
    broker: EmbeddedBroker


@pytest.fixture(scope="module")
def outage(private_redis: PrivateRedis) -> Iterator[Outage]:
    """A broker of its own that only a proxy leads to, and a gateway with a short deadline."""
    port = free_port()
    with TcpProxy(port) as proxy, ProxiedBroker(proxy.port, port=port) as broker:
        env = gateway_env(
            proxy.address, private_redis.url, GATEWAY__PRODUCE_TIMEOUT=PRODUCE_TIMEOUT
        )
        with GatewayProcess(env) as g:
            yield Outage(g, proxy, broker)


def settle(gw: GatewayProcess, hook: Webhook, timeout: float = 30.0) -> Answer:
    """Retry as a provider does (after 503 or 409) until the gateway takes the delivery."""
    deadline = time.monotonic() + timeout
    while True:
        answer = post(gw.url, hook)
        assert answer.status in (200, 202, 409, 503), (answer.status, answer.body)
        if answer.ok or time.monotonic() > deadline:
            return answer
        time.sleep(0.3)


def check_nothing_acknowledged_missing(
    o: Outage, sent: list[tuple[str, Answer]], refused: list[str]
) -> None:
    ids = Counter(event_ids(records(o.proxy.address, o.gateway.topics["payments"])))
    acked = [eid for eid, a in sent if a.ok]
    assert acked and all(ids[eid] == 1 for eid in acked), {e: ids[e] for e in acked}
    # Each refused delivery, retried now, is taken (or was stored after all) and is there.
    for eid in refused:
        assert settle(o.gateway, stripe(o.gateway, eid)).status in (200, 202), eid
    ids = Counter(event_ids(records(o.proxy.address, o.gateway.topics["payments"])))
    assert all(ids[eid] >= 1 for eid in refused), {e: ids[e] for e in refused}


def test_a_broker_cut_off_gets_503_and_nothing_acknowledged_is_lost(outage):
    """Cut: every request 503 with Retry-After, /readyz 503; restored: all 2xx'd are stored."""
    o, g, run = outage, outage.gateway, run_id()
    assert get(g.url, "/readyz").status == 200
    before = [f"evt_{run}_a{i}" for i in range(5)]
    sent = list(zip(before, post_all(g.url, [stripe(g, e) for e in before]), strict=True))
    assert [a.status for _, a in sent] == [202] * 5

    o.proxy.cut()
    try:
        during = [f"evt_{run}_b{i}" for i in range(5)]
        answers = post_all(g.url, [stripe(g, e) for e in during])
        assert [a.status for a in answers] == [503] * 5, [a.body for a in answers]
        assert all(a.error == "kafka_unavailable" and a.headers.get("Retry-After") for a in answers)
        wait_until("/readyz to say unready", lambda: get(g.url, "/readyz").status == 503, 10, 0.2)
    finally:
        o.proxy.restore()
    wait_until("/readyz to say ready", lambda: get(g.url, "/readyz").status == 200, 30, 0.2)
    # the first after the cut may wait out librdkafka's reconnect backoff: retried
    probe = f"evt_{run}_probe"
    sent.append((probe, settle(g, stripe(g, probe))))
    after = [f"evt_{run}_c{i}" for i in range(5)]
    answers = post_all(g.url, [stripe(g, e) for e in after])
    assert [a.status for a in answers] == [202] * 5, [a.body for a in answers]
    sent += zip(after, answers, strict=True)
    check_nothing_acknowledged_missing(o, sent, during)


def test_a_frozen_broker_gets_503_and_nothing_acknowledged_is_lost(outage):
    """SIGSTOP: connections stay open but nothing answers; past the deadline, 503."""
    o, g, run = outage, outage.gateway, run_id()
    before = [f"evt_{run}_a{i}" for i in range(5)]
    sent = list(zip(before, post_all(g.url, [stripe(g, e) for e in before]), strict=True))
    assert [a.status for _, a in sent] == [202] * 5
    assert o.broker.pid is not None
    os.kill(o.broker.pid, signal.SIGSTOP)
    try:
        during = [f"evt_{run}_b{i}" for i in range(5)]
        answers = post_all(g.url, [stripe(g, e) for e in during])
    finally:
        os.kill(o.broker.pid, signal.SIGCONT)
    # not 2xx: nothing was acknowledged (some may be stored after all: at least once)
    assert [a.status for a in answers] == [503] * 5, [a.body for a in answers]
    sent += zip(during, answers, strict=True)
    after = [f"evt_{run}_c{i}" for i in range(5)]
    for eid in after:
        sent.append((eid, settle(g, stripe(g, eid))))
    check_nothing_acknowledged_missing(o, sent, during)


# ------------------------------------------------------------------ 7, 9. two processes
@pytest.fixture(scope="module")
def pair(broker: EmbeddedBroker, private_redis: PrivateRedis) -> Iterator[GatewayProcess]:
    env = gateway_env(
        broker.bootstrap, private_redis.url, GATEWAY__METRICS_PORT=str(free_port_pair())
    )
    with GatewayProcess(env, processes=2) as g:
        yield g


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc: no psutil)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """Exited (or a zombie whose parent has not reaped it yet; never its own pid reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def test_two_processes_share_the_port_and_store_each_delivery_once(pair, broker):
    """SO_REUSEPORT: one address, both processes serve, one shared ledger dedupes."""
    run = run_id()
    ids = [f"evt_{run}_{i}" for i in range(200)]
    answers = post_all(pair.url, [stripe(pair, e, f"TB-{i}") for i, e in enumerate(ids)])
    assert Counter(a.status for a in answers) == {202: 200}
    held = Counter(event_ids(payments(pair, broker.bootstrap)))
    assert all(held[e] == 1 for e in ids)
    served = [metrics(pair.metrics_port + k).get(REQUESTS, 0.0) for k in (0, 1)]
    assert sum(served) == 200, served
    # SO_REUSEPORT spreads connections by a hash of their addresses: with 20 client
    # connections the odds that one process gets them all are 2 in a million.
    assert all(served), served


def test_sigterm_in_flight_stops_both_processes_and_loses_nothing_acknowledged(pair, broker):
    """A deploy stops the gateway under load: whatever was answered 2xx is in Kafka."""
    assert pair.proc is not None
    kids = children(pair.proc.pid)
    assert len(kids) == 2, kids
    run = run_id()
    ids = [f"evt_{run}_{i}" for i in range(400)]
    answers: dict[str, Answer] = {}
    in_flight_at_signal: list[str] = []

    async def load() -> None:
        gate = asyncio.Semaphore(16)
        started: set[str] = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:

            async def one(eid: str) -> None:
                async with gate:
                    started.add(eid)
                    answers[eid] = await post_async(session, pair.url, stripe(pair, eid))
                    if len(answers) == 60:  # mid-stream: requests are in flight
                        in_flight_at_signal.extend(started - set(answers))
                        pair.signal(signal.SIGTERM)

            await asyncio.gather(*(one(e) for e in ids))

    asyncio.run(load())
    code = pair.wait(30)
    assert code in (0, 130), pair.output
    assert all(gone(k) for k in kids), pair.output
    assert "not acknowledged" not in pair.output, pair.output
    assert "Traceback" not in pair.output, pair.output
    acked = [e for e, a in answers.items() if a.ok]
    assert len(acked) >= 60 and in_flight_at_signal
    assert all(a.status in (0, 202, 503) for a in answers.values()), Counter(
        a.status for a in answers.values()
    )
    held = Counter(event_ids(payments(pair, broker.bootstrap)))
    assert all(held[e] == 1 for e in acked), [e for e in acked if held[e] != 1]
    # requests in flight when the signal came were finished, not dropped
    assert [e for e in in_flight_at_signal if answers[e].ok]
