"""The demo's provider-side client: signed as the gateway verifies, retried until 2xx."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from aiohttp import web

from connectors import webhook_client
from connectors.broker import free_port
from connectors.webhook_client import WebhookSender
from schemas.config import Settings, load_settings
from schemas.provider_requests import ProviderKeys
from schemas.signatures import SCHEMES, verify


class _Provider:
    """A stand-in gateway: checks each signature, refuses the first `refuse` requests."""

    def __init__(self, settings: Settings, secret: bytes, refuse: int) -> None:
        self.settings = settings
        self.secret = secret
        self.refuse = refuse
        self.seen: list[tuple[str, int, dict[str, str]]] = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        source = request.match_info["source"]
        body = await request.read()
        auth = self.settings.gateway.sources[source].auth
        refused = verify(auth, self.secret, request.headers, body, time.time())
        status = 401 if refused else 503 if len(self.seen) < self.refuse else 202
        self.seen.append((source, status, dict(request.headers)))
        return web.json_response({"error": refused or "kafka_unavailable"}, status=status)


@pytest.fixture
def provider() -> Iterator[_Provider]:
    settings = load_settings()
    p = _Provider(settings, b"s3cret", refuse=2)
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/webhooks/{source}", p.handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", p.port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield p
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_refused_deliveries_are_retried_signed_and_counted(provider, monkeypatch):
    monkeypatch.setattr(webhook_client, "BACKOFF_FIRST", 0.01)
    settings = provider.settings
    hmac = [n for n, h in settings.gateway.sources.items() if h.auth.scheme in SCHEMES]
    keys = {name: ProviderKeys(secret=provider.secret) for name in hmac}
    sender = WebhookSender(
        settings, f"http://127.0.0.1:{provider.port}", keys, concurrency=1
    ).start()
    try:
        env = {
            "stream": "payments",
            "source": "stripe",
            "received_at": "2026-03-02T08:00:00.000Z",
            "event_id": "evt_1",
            "payload": {"id": "evt_1", "type": "charge.succeeded"},
        }
        assert sender.offer(env)
        # a source it holds no keys for (here WeChat Pay's): Kafka
        assert not sender.offer({**env, "source": "wechatpay"})
        # not the gateway's business: orders, malformed lines, sources it has no entry for
        assert not sender.offer({**env, "stream": "orders", "source": "oms"})
        assert not sender.offer({"__raw__": "{oops", "received_at": env["received_at"]})
        assert not sender.offer({**env, "source": "no_such_source"})
        _wait(lambda: sender.stats.accepted == 1)
    finally:
        sender.stop()
    assert sender.stats.accepted == 1 and sender.stats.retried == 2
    assert sender.stats.pending == 0 and sender.stats.last_failure == "503 kafka_unavailable"
    assert [s for _, s, _ in provider.seen] == [503, 503, 202]  # every attempt authentic
    headers = provider.seen[-1][2]
    assert "Stripe-Signature" in headers


def test_an_unreachable_gateway_is_retried_and_left_pending(monkeypatch):
    monkeypatch.setattr(webhook_client, "BACKOFF_FIRST", 0.01)
    settings = load_settings()
    keys = {name: ProviderKeys(secret=b"x") for name in settings.gateway.sources}
    sender = WebhookSender(settings, f"http://127.0.0.1:{free_port()}", keys).start()
    try:
        assert sender.offer(
            {"stream": "tracking", "source": "zto", "received_at": "2026-03-02T08:00:00.000Z",
             "payload": {"billCode": "751234567890", "scanType": "收件"}}
        )  # fmt: skip
        _wait(lambda: sender.stats.retried >= 3)
    finally:
        sender.stop()
    assert sender.stats.retried >= 3 and sender.stats.pending == 1  # never dropped silently
    assert sender.stats.accepted == 0 and sender.stats.last_failure


def test_a_payload_no_provider_sends_is_left_pending_not_dropped(provider):
    """A WeChat Pay notification without `resource` cannot be made into WeChat Pay's
    request: it is not sent, and the sender says so (pending, last failure)."""
    settings = provider.settings
    keys = {"wechatpay": ProviderKeys.generate(settings.gateway.sources["wechatpay"])}
    sender = WebhookSender(settings, f"http://127.0.0.1:{provider.port}", keys).start()
    try:
        assert sender.offer(
            {"stream": "payments", "source": "wechatpay", "received_at": "2026-03-02T08:00:00Z",
             "payload": {"id": "EV-1", "event_type": "TRANSACTION.SUCCESS"}}
        )  # fmt: skip
        _wait(lambda: bool(sender.stats.last_failure))
    finally:
        sender.stop()
    assert sender.stats.pending == 1 and sender.stats.last_failure == "unsendable: KeyError"
    assert provider.seen == []
