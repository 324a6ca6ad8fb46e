"""`orderguard gateway`: carriers' and payment gateways' webhooks into the input topics.

`POST /webhooks/{source}` acknowledges a webhook only after Kafka acknowledged the
envelope, and answers 503 when it did not within `gateway.produce_timeout`, so a
provider retries whatever was not stored; each answer in the provider's own form (the
source's `answers`: Alipay's `success`, WeChat Pay's 204...), else the gateway's JSON.
What a request must pass is `schemas.webhooks`; PayPal's signing certificates are
fetched by `connectors.paypal_certs`; redeliveries are recognized by
`connectors.delivery_ledger`. `GET /healthz` says the process is up, `GET /readyz` that
a broker answers, `GET /openapi.json` describes all of it. The HTTP layer's own refusals
are JSON; nothing a request causes is a 500. The server protects itself: a request
head (or the next one on a kept-alive connection) must arrive within
`gateway.idle_timeout` and its body within `body_timeout`, `_Connection` answers
malformed HTTP without quoting it, and `_Server` caps the connections of a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import orjson
import uvloop
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import start_http_server

from connectors import gateway_metrics as m
from connectors.acked_producer import AckedProducer, ProduceFailed
from connectors.delivery_ledger import Claim, DeliveryLedger
from connectors.paypal_certs import CertificateUnavailable, Fetch, PayPalCertificates
from schemas.config import Settings
from schemas.gateway_openapi import openapi
from schemas.provider_signatures import SignatureRefused
from schemas.webhooks import (
    Accepted,
    Kind,
    Rejected,
    WebhookEndpoint,
    endpoints,
    refusal_kind,
)
from state.rate_limit import TokenBucket

log = logging.getLogger("orderguard.gateway")

UNKNOWN = "unknown"
PENDING_MARGIN_MS = 5_000
"""A claim outlives the produce deadline by this much, then a retry may take it over."""
RECORD_FRAMING = 64
"""What librdkafka adds to key + value when it checks `message.max.bytes` (at most 36 B)."""
RESERVED_FILES = 64
"""Open files a process needs besides its connections: Kafka, Redis, metrics, listener."""


class GatewayError(RuntimeError):
    """The gateway could not start (port taken, metrics port taken)."""


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


@dataclass
class _Route:
    """One source's endpoint with its bucket and metric children (looked up once)."""

    endpoint: WebhookEndpoint
    bucket: TokenBucket
    topic: str
    produced: Any
    duration: Any
    certs: PayPalCertificates | None = None
    codes: dict[int, Any] = field(default_factory=dict)

    def answer(
        self,
        kind: Kind,
        status: int,
        error: str = "",
        detail: str = "",
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """The answer in the provider's form (`gateway.sources.<source>.answers`)."""
        reply = self.endpoint.reply(kind, status, error, detail)
        return web.Response(
            status=reply.status,
            body=reply.body,
            content_type=reply.content_type,
            headers=headers,
        )

    def count(self, status: int) -> None:
        child = self.codes.get(status)
        if child is None:
            child = self.codes[status] = m.REQUESTS.labels(self.endpoint.name, str(status))
        child.inc()


class Gateway:
    """The request handlers; `app()` wires them into an aiohttp application."""

    def __init__(
        self,
        settings: Settings,
        producer: AckedProducer,
        ledger: DeliveryLedger | None,
        share: float = 1.0,
        clock: Callable[[], float] = time.time,
        cert_fetch: Fetch | None = None,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.ledger = ledger
        self.clock = clock
        gw = settings.gateway
        topics = settings.kafka.input_topics.model_dump()
        now = time.monotonic()
        self.routes: dict[str, _Route] = {}
        for name, endpoint in endpoints(settings).items():
            limit = gw.sources[name].rate_limit or gw.rate_limit
            bucket = TokenBucket(limit.rate * share, max(1, round(limit.burst * share)), now)
            # Created up front: each source's series exist from zero, so rate() sees the first.
            self.routes[name] = _Route(
                endpoint,
                bucket,
                topics[endpoint.stream],
                m.PRODUCED.labels(name),
                m.DURATION.labels(name),
                _paypal_certificates(endpoint, cert_fetch),
            )
        self.pending_ms = gw.produce_timeout + PENDING_MARGIN_MS
        self.max_body = gw.max_body
        self.max_record = settings.kafka.message_max_bytes()
        self.body_timeout = gw.body_timeout / 1000
        self._openapi = orjson.dumps(openapi(settings))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_post("/webhooks/{source}", self.webhook)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/openapi.json", self.openapi)
        # Last, so only what nothing above took lands here: JSON, like every answer.
        app.router.add_route("*", "/webhooks/{source}", self.wrong_method)
        app.router.add_route("*", "/{path:.*}", self.not_found)
        return app

    async def wrong_method(self, request: web.Request) -> web.Response:
        allowed = "POST"
        detail = f"{request.method} is not allowed here; webhooks are POSTed"
        return _json(405, {"error": "method_not_allowed", "detail": detail}, {"Allow": allowed})

    async def not_found(self, request: web.Request) -> web.Response:
        detail = "no such path: webhooks go to POST /webhooks/<source>"
        return _json(404, {"error": "not_found", "detail": detail})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = await self.producer.ready()
        m.KAFKA_READY.set(1 if ready else 0)
        if ready:
            return _json(200, {"status": "ready"})
        where = self.settings.kafka.bootstrap_servers
        return _json(503, {"status": "unready", "reason": f"no Kafka broker answers at {where}"})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def webhook(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        route = self.routes.get(request.match_info["source"])
        if route is None:
            m.REJECTED.labels(UNKNOWN, "unknown_source").inc()
            m.REQUESTS.labels(UNKNOWN, "404").inc()
            return _json(404, {"error": "unknown_source", "detail": "no such webhook source"})
        try:
            response = await self._handle(route, request)
        except Exception:  # a bug must not become a 500 the provider gives up on
            log.exception("webhook for %s failed", route.endpoint.name)
            response = self._refuse(route, Rejected(503, "internal_error", "try again later"))
            response.headers["Retry-After"] = "5"
        route.count(response.status)
        route.duration.observe(time.perf_counter() - started)
        return response

    async def _handle(self, route: _Route, request: web.Request) -> web.Response:
        size = request.content_length
        if size is not None and size > self.max_body:
            return self._too_large(route)
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large(route)
        except TimeoutError:
            detail = f"the body did not arrive within {self.body_timeout:g}s"
            response = self._refuse(route, Rejected(408, "body_timeout", detail))
            response.force_close()
            return response
        except ConnectionError:
            # Not ours to fix: a provider's timeout or a network cut. Nobody reads the answer.
            log.debug("webhook for %s: the client left before its body", route.endpoint.name)
            # 499, nginx's "client closed request": counted, never sent (nobody would read it)
            refused = Rejected(499, "client_aborted", "the client disconnected")
            return self._refuse(route, refused)
        certificate = None
        url = route.endpoint.cert_url(request.headers)
        if url is not None and route.certs is not None:
            try:
                certificate = await route.certs.get(url)
            except SignatureRefused as e:
                refused = Rejected(401, e.reason, "the PAYPAL-CERT-URL certificate does not check")
                return self._refuse(route, refused)
            except CertificateUnavailable:
                refused = Rejected(503, "certificate_unavailable", "not stored; retry later")
                return self._refuse(route, refused, {"Retry-After": "5"})
        now_ms = int(self.clock() * 1000)
        verdict = route.endpoint.admit(request.headers, body, now_ms, certificate)
        if isinstance(verdict, Rejected):
            return self._refuse(route, verdict)
        # After the signature: requests anyone can forge never use up a provider's bucket.
        wait = route.bucket.take(time.monotonic())
        if wait:
            refused = Rejected(429, "rate_limited", "too many requests for this source")
            return self._refuse(route, refused, {"Retry-After": str(math.ceil(wait))})
        if len(verdict.envelope) + len(verdict.key or b"") + RECORD_FRAMING > self.max_record:
            # Permanent: a retry would be refused again, so never the retryable 503.
            detail = "with its envelope and id the body exceeds what Kafka accepts"
            return self._refuse(route, Rejected(413, "too_large", detail))
        return await self._store(route, verdict)

    async def _store(self, route: _Route, accepted: Accepted) -> web.Response:
        name = route.endpoint.name
        ledger, key, claim = self.ledger, b"", Claim.UNAVAILABLE
        if ledger is not None:
            key = ledger.key(name, accepted.delivery_id)
            claim = await ledger.claim(key, self.pending_ms)
            if claim is Claim.STORED:
                m.DUPLICATES.labels(name).inc()
                return route.answer("duplicate", 200)
            if claim is Claim.IN_FLIGHT:
                refused = Rejected(409, "in_flight", "this delivery is being stored; retry")
                return self._refuse(route, refused, {"Retry-After": "1"})
            if claim is Claim.UNAVAILABLE:
                m.UNDEDUPLICATED.labels(name).inc()
        try:
            await self.producer.send(route.topic, accepted.key, accepted.envelope)
        except ProduceFailed as e:
            if claim is Claim.NEW:
                ledger.release(key)  # type: ignore[union-attr]
            log.warning("webhook for %s not stored: %s", name, e)
            refused = Rejected(503, "kafka_unavailable", "not stored; retry later")
            return self._refuse(route, refused, {"Retry-After": "5"})
        if claim is Claim.NEW:
            ledger.stored(key, route.endpoint.retry_horizon_ms)  # type: ignore[union-attr]
        route.produced.inc()
        return route.answer("accepted", 202)

    def _too_large(self, route: _Route) -> web.Response:
        detail = f"the body is larger than {self.max_body} bytes"
        return self._refuse(route, Rejected(413, "too_large", detail))

    def _refuse(
        self, route: _Route, rejected: Rejected, headers: dict[str, str] | None = None
    ) -> web.Response:
        m.REJECTED.labels(route.endpoint.name, rejected.reason).inc()
        kind = refusal_kind(rejected.status)
        return route.answer(kind, rejected.status, rejected.reason, rejected.detail, headers)


def _paypal_certificates(
    endpoint: WebhookEndpoint, fetch: Fetch | None
) -> PayPalCertificates | None:
    """The certificate cache of a PayPal source with no pinned certificate."""
    auth = endpoint.auth
    if auth.scheme != "paypal" or endpoint.pinned is not None or endpoint.missing:
        return None
    if auth.trust_roots is not None:
        roots = auth.trust_roots.read_bytes()
    else:
        roots = Path(certifi.where()).read_bytes()
    return PayPalCertificates(roots, auth.cert_timeout / 1000, fetch)


class _Connection(RequestHandler):
    """aiohttp's connection handler, with JSON answers for what its HTTP parser refuses.

    aiohttp answers those in plain text quoting the offending bytes (which can be a
    signature header) and logs them as errors: here a client's malformed request is
    a debug line and a JSON 400 that quotes nothing; only a bug is logged as an error.
    """

    def idle(self) -> bool:
        """No request in progress: waiting for a request head (or for a slow one to end).

        aiohttp's own idle test (its keep-alive timer closes a connection only then).
        """
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had begun: no other answer can be sent")
        if status == 400:  # the client's: only the type, its message quotes the request
            log.debug("refused a malformed request from %s: %s", request.remote, type(exc).__name__)
            detail = "not a valid HTTP/1.1 request (a line over 8190 bytes, or malformed)"
            response = _json(400, {"error": "bad_request", "detail": detail})
        else:  # a handler raised: ours to fix, the provider's to retry (never a 500)
            self.log_exception("error handling a request", exc_info=exc)
            body = {"error": "internal_error", "detail": "try again later"}
            response = _json(503, body, {"Retry-After": "5"})
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's server, making `_Connection`s, at most `cap` of them open at once.

    Over the cap, the longest-open idle connection (no request in progress: an idle
    keep-alive, a client that sent nothing or only part of a head) is closed to make
    room, so sockets held open by anyone cannot lock providers out; the newcomer is
    closed only when every connection is busy with a request (each bounded by
    `body_timeout` and `produce_timeout`). Capping below the open-file limit keeps
    accept() from failing, which would refuse everyone alike.
    """

    def __init__(self, cap: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cap = cap
        self._open: dict[_Connection, None] = {}  # in the order they were opened

    def __call__(self) -> _Connection:
        return _Connection(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        assert isinstance(handler, _Connection)
        self._open[handler] = None
        if len(self._open) <= self.cap:
            return
        oldest = next((c for c in self._open if c is not handler and c.idle()), handler)
        del self._open[oldest]
        m.CONNECTIONS_SHED.labels("idle" if oldest is not handler else "busy").inc()
        oldest.force_close()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._open.pop(handler, None)  # type: ignore[call-overload]
        super().connection_lost(handler, exc)


class _Runner(web.AppRunner):
    """`web.AppRunner` serving its application with a `_Server`."""

    def __init__(
        self, app: web.Application, cap: int, shutdown_timeout: float, **handler: Any
    ) -> None:
        super().__init__(app, shutdown_timeout=shutdown_timeout, **handler)
        self._cap = cap
        self._handler_kwargs = handler

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the application started and frozen
        return _Server(
            self._cap,
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **self._handler_kwargs,
        )


def _connection_cap(wanted: int) -> int:
    """`wanted`, raising the open-file limit for it if need be, else what the limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    cap = max(1, soft - RESERVED_FILES)
    log.warning(
        "gateway.max_connections %d: the open-file limit is %d (ulimit -n), so at most %d "
        "connections are kept open",
        wanted,
        soft,
        cap,
    )
    return cap


async def _watch_kafka(producer: AckedProducer, stop: asyncio.Event, every: float = 10.0) -> None:
    """Keep `orderguard_gateway_kafka_ready` current even when nobody asks /readyz."""
    while not stop.is_set():
        m.KAFKA_READY.set(1 if await producer.ready() else 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def run_gateway(settings: Settings, process_index: int = 0, processes: int = 1) -> None:
    """Serve until SIGINT or SIGTERM, then finish the requests in flight and flush."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # uvloop: measurably less CPU per request than asyncio's own loop (gateway_bench)
    uvloop.run(_serve(settings, process_index, processes))


async def _serve(settings: Settings, process_index: int, processes: int) -> None:
    gw = settings.gateway
    loop = asyncio.get_running_loop()
    for name, hook in gw.sources.items():
        if (missing := hook.missing()) is not None:
            log.warning("no %s for %s: its webhooks are refused (503)", missing, name)
    producer = AckedProducer(settings.kafka, gw.produce_timeout)
    producer.start(loop)
    ledger = DeliveryLedger(settings.redis, gw.idempotency_timeout) if settings.redis.url else None
    if ledger is None:
        log.warning("no redis.url: redeliveries are produced again (at least once)")
    gateway = Gateway(settings, producer, ledger, share=1 / processes)
    grace = gw.produce_timeout / 1000
    runner = _Runner(
        gateway.app(),
        _connection_cap(gw.max_connections),
        access_log=None,
        shutdown_timeout=grace,
        # aiohttp's keep-alive clock runs from a connection's opening or last answer until
        # a complete request head: one bound for idle and for slow-header connections.
        keepalive_timeout=gw.idle_timeout / 1000,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, gw.host, gw.port, reuse_port=processes > 1, backlog=2048)
        await site.start()
    except OSError as e:
        await runner.cleanup()
        producer.close()
        raise GatewayError(f"cannot listen on {gw.host}:{gw.port}: {e.strerror}") from None
    metrics = ""
    if gw.metrics_port:
        port = gw.metrics_port + process_index
        try:
            start_http_server(port, addr=gw.host)
        except OSError as e:
            raise GatewayError(f"cannot serve metrics on {gw.host}:{port}: {e.strerror}") from None
        metrics = f", metrics http://{gw.host}:{port}/metrics"
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watch = loop.create_task(_watch_kafka(producer, stop))
    sources = ", ".join(gw.sources) or "none configured"
    print(
        f"gateway listening on http://{gw.host}:{gw.port} (process {process_index} of "
        f"{processes}{metrics}); sources: {sources}",
        flush=True,
    )
    await stop.wait()
    await watch
    await runner.cleanup()  # stops listening, lets the requests in flight finish
    for route in gateway.routes.values():
        if route.certs is not None:
            await route.certs.close()
    left = producer.close()
    if ledger is not None:
        await ledger.close()
    # Nothing answered 2xx is among `left`: those requests were answered 503 (or cut off).
    lost = f"; {left} records in flight were not acknowledged by Kafka" if left else ""
    print(f"gateway stopped{lost}", file=sys.stderr if left else sys.stdout, flush=True)
