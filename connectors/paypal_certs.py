"""PayPal's signing certificates, fetched from PAYPAL-CERT-URL, chain-checked and cached.

Only URLs `schemas.provider_signatures.paypal_cert_url_allowed` passes are fetched (the
endpoint asks for nothing else), each within `timeout` on the event loop (aiohttp, no
thread blocked), at most `MAX_BYTES` read. A certificate is kept until it expires, so
PayPal's few signing certificates are fetched once each; concurrent requests for one
URL share one fetch. A certificate is trusted only once it chains to `trust_roots` and
is issued to PayPal's message-verification name (`check_paypal_certificate`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp
from cryptography import x509

from schemas.provider_signatures import SignatureRefused, check_paypal_certificate

log = logging.getLogger("orderguard.gateway.paypal")

MAX_BYTES = 64 * 1024
"""A PEM chain is a few KiB: more is not a certificate."""
MAX_CACHED = 64
"""PayPal signs with one certificate at a time (two across a rotation)."""

REFUSED_FOR_S = 600.0
"""A URL whose certificate did not check is refused without a fetch this long (forgers)."""

Fetch = Callable[[str], Awaitable[bytes]]


class CertificateUnavailable(RuntimeError):
    """The certificate could not be fetched now (timeout, network, HTTP error): retry later."""


class PayPalCertificates:
    def __init__(
        self,
        trust_roots_pem: bytes,
        timeout_s: float,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._roots = trust_roots_pem
        self._timeout = timeout_s
        self._fetch = fetch or self._http_get
        self._clock = clock
        self._cache: dict[str, tuple[x509.Certificate, float]] = {}
        self._refused: dict[str, float] = {}
        """URLs whose certificate did not check, until when: not fetched again meanwhile."""
        self._inflight: dict[str, asyncio.Future[x509.Certificate]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def get(self, url: str) -> x509.Certificate:
        """The checked certificate at `url`; `SignatureRefused` if it does not check,
        `CertificateUnavailable` if it cannot be had within the timeout."""
        now = self._clock()
        cached = self._cache.get(url)
        if cached is not None and cached[1] > now:
            return cached[0]
        if self._refused.get(url, 0.0) > now:
            raise SignatureRefused("bad_signature")
        pending = self._inflight.get(url)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[x509.Certificate] = asyncio.get_running_loop().create_future()
        self._inflight[url] = future
        try:
            cert = await self._load(url)
        except SignatureRefused as e:
            if len(self._refused) >= MAX_CACHED:
                self._refused.pop(next(iter(self._refused)))
            self._refused[url] = now + REFUSED_FOR_S
            future.set_exception(e)
            future.exception()
            raise
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._inflight[url]
        future.set_result(cert)
        if len(self._cache) >= MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[url] = (cert, cert.not_valid_after_utc.timestamp())
        return cert

    async def _load(self, url: str) -> x509.Certificate:
        try:
            async with asyncio.timeout(self._timeout):
                pem = await self._fetch(url)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            log.warning("PayPal certificate not fetched: %s", type(e).__name__)
            raise CertificateUnavailable("PayPal's certificate could not be fetched") from None
        now = datetime.fromtimestamp(self._clock(), UTC)
        cert = check_paypal_certificate(pem, self._roots, now)
        return cert

    async def _http_get(self, url: str) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        async with self._session.get(url, allow_redirects=False) as r:
            if 400 <= r.status < 500:  # no such certificate at PayPal: a forged URL
                raise SignatureRefused("bad_signature")
            if r.status != 200:
                raise aiohttp.ClientResponseError(r.request_info, (), status=r.status)
            body = await r.content.read(MAX_BYTES + 1)
            if len(body) > MAX_BYTES:
                raise SignatureRefused("bad_signature")
            return body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
