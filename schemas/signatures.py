"""Webhook signatures: HMAC-SHA256 over the raw body, in the two schemes providers use.

`verify` is what the gateway runs on every request; `sign` is the provider's side,
for the demo, the tests and the load benchmark (one implementation, so the two can
never drift apart). Comparisons are constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from schemas.config import WebhookAuth

UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad_signature"
MALFORMED_SIGNATURE = "malformed_signature"
STALE_TIMESTAMP = "stale_timestamp"
SCHEMES = frozenset({"hmac", "timestamped"})
"""The schemes `verify` and `sign` implement (the others: `schemas.provider_signatures`)."""
REASONS = (UNSIGNED, BAD_SIGNATURE, MALFORMED_SIGNATURE, STALE_TIMESTAMP)
"""Why a signature is refused (the 401's `error`); none of them says more than that."""


def _digest(secret: bytes, message: bytes, encoding: str) -> str:
    mac = hmac.digest(secret, message, hashlib.sha256)
    return mac.hex() if encoding == "hex" else base64.b64encode(mac).decode("ascii")


def _matches(expected: str, given: str, encoding: str) -> bool:
    if encoding == "hex":
        given = given.lower()
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace"))


def verify(
    auth: WebhookAuth, secret: bytes, headers: Mapping[str, str], body: bytes, now_s: float
) -> str | None:
    """None if `body` is signed with `secret` as `auth` says, else the refusal reason.

    `headers` must look names up case-insensitively (the HTTP server's mapping does).
    """
    value = headers.get(auth.header or "")
    if value is None or not value.strip():
        return UNSIGNED
    value = value.strip()
    if auth.scheme == "hmac":
        if not value.startswith(auth.prefix):
            return MALFORMED_SIGNATURE
        expected = _digest(secret, body, auth.encoding)
        return (
            None
            if _matches(expected, value[len(auth.prefix) :], auth.encoding)
            else (BAD_SIGNATURE)
        )
    # timestamped (Stripe): t=<unix seconds>,v1=<sig>[,v1=<sig> ...] (several during rotation)
    stamp: str | None = None
    signatures: list[str] = []
    for part in value.split(","):
        name, sep, item = part.strip().partition("=")
        if not sep:
            return MALFORMED_SIGNATURE
        if name == "t":
            stamp = item
        elif name == "v1":
            signatures.append(item)
    if stamp is None or not stamp.isascii() or not stamp.isdigit() or not signatures:
        return MALFORMED_SIGNATURE
    expected = _digest(secret, stamp.encode("ascii") + b"." + body, auth.encoding)
    if not any(_matches(expected, s, auth.encoding) for s in signatures):
        return BAD_SIGNATURE
    # Checked after the signature: only a genuine but old request is "stale".
    # (More than 15 digits is no time at all, and int() or float() of it would raise.)
    if len(stamp) > 15 or abs(now_s - int(stamp)) * 1000 > auth.tolerance:
        return STALE_TIMESTAMP
    return None


def sign(auth: WebhookAuth, secret: bytes, body: bytes, now_s: float) -> dict[str, str]:
    """The header a provider would send with `body` at `now_s`."""
    if auth.header is None or auth.scheme not in SCHEMES:
        raise ValueError(f"scheme {auth.scheme}: schemas.provider_requests signs it")
    if auth.scheme == "hmac":
        return {auth.header: auth.prefix + _digest(secret, body, auth.encoding)}
    stamp = str(int(now_s))
    signature = _digest(secret, stamp.encode("ascii") + b"." + body, auth.encoding)
    return {auth.header: f"t={stamp},v1={signature}"}
