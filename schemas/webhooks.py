"""What the gateway makes of one webhook request, with no I/O: an envelope or a refusal.

The gateway checks only what it must to store a request safely: who sent it (the
signature), that it is JSON, and what the provider calls the delivery. Whether the
payload is usable is the pipeline's business: an authentic payload the pipeline
cannot read is still stored, and the dataflow dead-letters it with its reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.config import Settings, SourceSpec, WebhookSource
from schemas.keys import MessageKeys
from schemas.normalize import _MISSING, _compile_path, _get
from schemas.signatures import verify
from schemas.timeparse import iso

MAX_DELIVERY_ID = 200
"""Longer provider ids are hashed: they become Redis keys."""

JSON_TYPES = frozenset({"application/json"})


@dataclass(frozen=True, slots=True)
class Accepted:
    """An envelope ready for its input topic."""

    stream: str
    key: bytes | None
    delivery_id: str
    """What redeliveries are known by: the provider's id (hashed if long), else the body hash."""
    envelope: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """A refusal: the HTTP status, a machine-readable reason and a sentence for a person.

    The sentence never quotes the secret, a signature or the body.
    """

    status: int
    reason: str
    detail: str


def _text(value: object) -> str | None:
    if value is _MISSING or value is None or value == "" or isinstance(value, dict | list):
        return None
    return str(value)


class WebhookEndpoint:
    """One source's `POST /webhooks/<source>`, compiled from the configuration."""

    def __init__(
        self, name: str, source: SourceSpec, hook: WebhookSource, keys: MessageKeys
    ) -> None:
        self.name = name
        self.stream = source.stream
        self.auth = hook.auth
        self.secret = hook.secret.get_secret_value().encode() if hook.secret else None
        self.retry_horizon_ms = hook.retry_horizon
        self._id_path = _compile_path(hook.delivery_id.body) if hook.delivery_id.body else None
        self._keys = keys
        self._prefix = b'{"stream":%s,"source":%s' % (
            orjson.dumps(self.stream),
            orjson.dumps(name),
        )

    def admit(self, headers: Mapping[str, str], body: bytes, now_ms: int) -> Accepted | Rejected:
        """Check a request whose body was read in full (its size was checked before)."""
        if self.secret is None:
            return Rejected(
                503,
                "no_secret",
                f"no secret is configured for {self.name}: nothing is accepted unsigned",
            )
        ctype = headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if ctype not in JSON_TYPES:
            return Rejected(415, "unsupported_media_type", "the body must be application/json")
        refused = verify(self.auth, self.secret, headers, body, now_ms / 1000)
        if refused is not None:
            return Rejected(401, refused, f"the {self.auth.header} header does not authenticate")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            return Rejected(400, "not_json", f"the body is not JSON: {e.msg} at byte {e.pos}")
        given = self._given_id(payload)
        received_at = iso(now_ms) or ""
        envelope = [self._prefix, b',"received_at":"', received_at.encode(), b'"']
        if given is None:
            delivery_id = "sha256:" + hashlib.sha256(body).hexdigest()
        else:
            envelope += [b',"event_id":', orjson.dumps(given)]
            delivery_id = given
            if len(given) > MAX_DELIVERY_ID or given.startswith("sha256:"):
                delivery_id = "id-sha256:" + hashlib.sha256(given.encode()).hexdigest()
        # The provider's bytes, as received: the spec's envelope wraps the native payload.
        envelope += [b',"payload":', body, b"}"]
        key = self._keys.for_payload(self.name, payload)
        return Accepted(self.stream, key, delivery_id, b"".join(envelope))

    def _given_id(self, payload: Any) -> str | None:
        """The provider's own id for the delivery, if its signed body has one where configured."""
        if self._id_path is not None and isinstance(payload, dict):
            return _text(_get(payload, self._id_path))
        return None


def endpoints(settings: Settings) -> dict[str, WebhookEndpoint]:
    """Every configured webhook source, by name."""
    keys = MessageKeys(settings)
    return {
        name: WebhookEndpoint(name, settings.sources[name], hook, keys)
        for name, hook in settings.gateway.sources.items()
    }
