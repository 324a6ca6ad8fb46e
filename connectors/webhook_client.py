"""The providers' side of the webhook gateway: signed POSTs, retried until answered 2xx.

`orderguard demo --gateway` hands its real-time webhook envelopes to a `WebhookSender`
instead of producing them to Kafka, so they take the production path (webhook ->
gateway -> Kafka). The sender behaves as the provider does: it turns the envelope's
payload back into the provider's own request (`schemas.provider_requests.
provider_request`: WeChat Pay's encrypted `resource` and RSA headers, Alipay's signed
form, PayPal's transmission headers, SF's and J&T's digested forms, the HMACs), signed
with the provider's test keys, and retries any answer but 2xx, and any connection
failure, with exponential backoff (honouring `Retry-After`), signing again each time
(a timestamped signature goes stale). Nothing is dropped silently: every retry is
counted, and whatever was still unanswered when the sender stopped is `pending`.

It runs its own asyncio loop in a thread with one keep-alive `aiohttp` session, so
`offer` (called from the producer's thread) never waits on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
import orjson

from schemas.config import Settings, WebhookSource
from schemas.provider_requests import ProviderKeys, provider_request

log = logging.getLogger("orderguard.webhooks")

BACKOFF_FIRST = 0.25
"""Seconds before the first retry; doubled each time up to `BACKOFF_MAX`."""
BACKOFF_MAX = 5.0
REQUEST_TIMEOUT = 15.0
"""Seconds for one request: longer than the gateway's default produce deadline (5 s)."""


@dataclass
class WebhookStats:
    """Counts the demo screen shows; written by the sender's thread only."""

    accepted: int = 0
    """Answered 2xx: stored in Kafka (or, for a provider whose answer does not say, a
    redelivery already stored: Alipay's `success`, WeChat Pay's 204 ...)."""
    duplicates: int = 0
    """Answered the gateway's JSON `{"status": "duplicate"}`: already stored."""
    retried: int = 0
    """Attempts that failed (non-2xx or no answer) and were tried again."""
    offered: int = 0
    last_failure: str = ""
    """The last failed attempt: an HTTP status and the gateway's `error`, or the exception."""

    @property
    def done(self) -> int:
        return self.accepted + self.duplicates

    @property
    def pending(self) -> int:
        """Offered but not yet answered 2xx (queued, in flight or being retried)."""
        return self.offered - self.done


@dataclass(frozen=True, slots=True)
class _Hook:
    """What a source's requests need: where they go, how they are made and signed."""

    url: str
    stream: str
    source: WebhookSource
    keys: ProviderKeys


class WebhookSender:
    """Posts envelopes to `POST {base_url}/webhooks/<source>` from a thread of its own.

    `keys`: each source's provider keys (the gateway holds the matching secret or public
    key). A source without a gateway entry or keys, another stream, or a malformed line
    is refused by `offer` (False): the caller produces it to Kafka directly.
    """

    def __init__(
        self,
        settings: Settings,
        base_url: str,
        keys: Mapping[str, ProviderKeys],
        *,
        concurrency: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        base = base_url.rstrip("/")
        self._hooks: dict[str, _Hook] = {}
        for name, hook in settings.gateway.sources.items():
            made = keys.get(name)
            spec = settings.sources.get(name)
            if made is None or spec is None:
                continue
            self._hooks[name] = _Hook(f"{base}/webhooks/{name}", spec.stream, hook, made)
        self._concurrency = concurrency
        self._clock = clock
        self.stats = WebhookStats()
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[tuple[_Hook, dict[str, Any]]] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._stopping: asyncio.Event | None = None
        self._closed = threading.Event()

    @property
    def sources(self) -> frozenset[str]:
        """The sources whose envelopes `offer` takes."""
        return frozenset(self._hooks)

    def start(self) -> Self:
        self._thread.start()
        self._started.wait(10)
        return self

    def offer(self, env: Mapping[str, Any]) -> bool:
        """Queue `env` for its source's webhook (True), or refuse it (False: use Kafka)."""
        hook = self._hooks.get(str(env.get("source")))
        if hook is None or "__raw__" in env or env.get("stream") != hook.stream:
            return False
        if not isinstance(env.get("payload"), dict):  # no provider sends it: Kafka's
            return False
        if self._queue is None or self._closed.is_set():
            return False
        # Counted first, so `pending` never goes below 0; only this (the offering) thread
        # writes `offered`.
        self.stats.offered += 1
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (hook, dict(env)))
        except RuntimeError:  # stopped meanwhile: the loop is closed
            self.stats.offered -= 1
            return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop at once: requests in flight are abandoned, `stats.pending` says how many."""
        self._closed.set()
        if self._stopping is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)

    # ------------------------------------------------------------ the sender's thread
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._queue = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._started.set()
        connector = aiohttp.TCPConnector(limit=self._concurrency, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            workers = [asyncio.create_task(self._work(session)) for _ in range(self._concurrency)]
            await self._stopping.wait()
            for w in workers:
                w.cancel()
            for w in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await w

    async def _work(self, session: aiohttp.ClientSession) -> None:
        assert self._queue is not None
        while True:
            hook, env = await self._queue.get()
            await self._deliver(session, hook, env)

    async def _deliver(
        self, session: aiohttp.ClientSession, hook: _Hook, env: dict[str, Any]
    ) -> None:
        """Post until answered 2xx, as a provider would; retries are counted."""
        payload = env["payload"]
        wait = BACKOFF_FIRST
        while True:
            try:
                req = provider_request(hook.source, payload, hook.keys, self._clock())
            except (ValueError, KeyError, TypeError) as e:  # no request the provider sends
                self.stats.last_failure = f"unsendable: {type(e).__name__}"
                log.warning("webhook %s: no provider request (%s); left pending", hook.url, e)
                return
            retry_after: float | None = None
            try:
                async with session.post(hook.url, data=req.body, headers=req.headers) as r:
                    answer = await r.read()
                    if 200 <= r.status < 300:
                        if _field(answer, "status") == "duplicate":
                            self.stats.duplicates += 1
                        else:
                            self.stats.accepted += 1
                        return
                    retry_after = _seconds(r.headers.get("Retry-After"))
                    self.stats.last_failure = f"{r.status} {_field(answer, 'error')}".rstrip()
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                self.stats.last_failure = type(e).__name__
            self.stats.retried += 1
            log.debug("webhook %s: %s; retrying", hook.url, self.stats.last_failure)
            await asyncio.sleep(min(BACKOFF_MAX, max(wait, retry_after or 0.0)))
            wait = min(BACKOFF_MAX, wait * 2)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _field(answer: bytes, name: str) -> str:
    """A field of the gateway's own JSON answer (`status`, `error`), else nothing (a
    provider's configured answer: text, or its own JSON)."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return ""
    return str(doc.get(name, "")) if isinstance(doc, dict) else ""
