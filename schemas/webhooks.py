"""What the gateway makes of one webhook request, with no I/O: an envelope or a refusal.

The gateway checks only what it must to store a request safely: who sent it (the
source's signature scheme), that the body is what the source sends (JSON or a form),
and what the provider calls the delivery. Whether the payload is usable is the
pipeline's business: an authentic payload the pipeline cannot read is still stored,
and the dataflow dead-letters it with its reason. How each outcome is answered is the
source's configuration too (`reply`): providers retry, or give up on an endpoint,
unless they read the answer they expect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from schemas.config import Settings, SourceSpec, WebhookAnswer, WebhookSource
from schemas.keys import MessageKeys
from schemas.normalize import _MISSING, _compile_path, _get
from schemas.provider_signatures import (
    VERIFIERS,
    AlipayKey,
    DigestKey,
    PayPalKey,
    SignatureRefused,
    StaticKey,
    UrlBodyKey,
    WechatPayKeys,
    decode_form,
    load_public_key,
    paypal_cert_url_allowed,
)
from schemas.signatures import BAD_SIGNATURE, UNSIGNED, verify
from schemas.timeparse import iso

MAX_DELIVERY_ID = 200
"""Longer provider ids are hashed: they become Redis keys."""

JSON_TYPES = frozenset({"application/json"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})
RETRY_STATUSES = frozenset({408, 409, 429})
"""Refusals that ask for a retry (with 5xx): answered in the provider's retry-later form."""

Kind = Literal["accepted", "duplicate", "refused", "retry_later"]


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


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, content type (None: no body at all) and body."""

    status: int
    content_type: str | None
    body: bytes


def _text(value: object) -> str | None:
    if value is _MISSING or value is None or value == "" or isinstance(value, dict | list):
        return None
    return str(value)


def _media(headers: Mapping[str, str]) -> tuple[str, str | None]:
    """The Content-Type's media type and its charset parameter."""
    ctype, _, params = headers.get("Content-Type", "").partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    return ctype.strip().lower(), charset


def _fill(template: str, error: str, detail: str) -> str:
    return template.replace("{error}", error).replace("{detail}", detail)


class WebhookEndpoint:
    """One source's `POST /webhooks/<source>`, compiled from the configuration.

    Key files are read once, here; secrets stay bytes in this object only.
    """

    def __init__(
        self, name: str, source: SourceSpec, hook: WebhookSource, keys: MessageKeys
    ) -> None:
        self.name = name
        self.stream = source.stream
        self.hook = hook
        self.auth = hook.auth
        self.secret = hook.secret.get_secret_value().encode() if hook.secret else None
        self.missing = hook.missing()
        self.retry_horizon_ms = hook.retry_horizon
        self._id_path = _compile_path(hook.delivery_id.body) if hook.delivery_id.body else None
        self._id_header = hook.delivery_id.header
        self._keys = keys
        self._prefix = b'{"stream":%s,"source":%s' % (
            orjson.dumps(self.stream),
            orjson.dumps(name),
        )
        self._material = None if self.missing else self._key_material()
        self.pinned: x509.Certificate | None = None
        if self.auth.scheme == "paypal" and self.auth.certificate is not None:
            self.pinned = x509.load_pem_x509_certificate(self.auth.certificate.read_bytes())

    def _key_material(self) -> Any:
        auth, secret = self.auth, self.secret or b""
        if auth.scheme == "hmac_url_body":
            return UrlBodyKey(secret, auth.url or "", auth.header or "Authorization")
        if auth.scheme == "wechatpay_v3":
            keys = {s: _public_key(p) for s, p in auth.public_keys.items()}
            return WechatPayKeys(keys, secret, auth.tolerance / 1000)
        if auth.scheme == "alipay_rsa2":
            assert auth.public_key is not None
            return AlipayKey(_public_key(auth.public_key))
        if auth.scheme == "digest_md5":
            assert auth.digest is not None
            return DigestKey(secret, auth.digest, auth.parts, auth.urlencode)
        if auth.scheme == "static_key":
            assert auth.header is not None
            return StaticKey(secret, auth.header)
        return None  # hmac, timestamped (the secret), paypal (a certificate per request)

    def cert_url(self, headers: Mapping[str, str]) -> str | None:
        """PayPal without a pinned certificate: the PAYPAL-CERT-URL to fetch the signing
        certificate from, only if it is on PayPal's hosts (else nothing is fetched and
        `admit` refuses the request)."""
        if self.auth.scheme != "paypal" or self.pinned is not None or self.missing:
            return None
        url = (headers.get("PAYPAL-CERT-URL") or "").strip()
        return url if paypal_cert_url_allowed(url) else None

    def admit(
        self,
        headers: Mapping[str, str],
        body: bytes,
        now_ms: int,
        certificate: x509.Certificate | None = None,
    ) -> Accepted | Rejected:
        """Check a request whose body was read in full (its size was checked before).

        `certificate`: PayPal's signing certificate fetched (and chain-checked) from the
        request's PAYPAL-CERT-URL, when none is pinned.
        """
        if self.missing is not None:
            return Rejected(
                503,
                "no_secret",
                f"no {self.missing} is configured for {self.name}: nothing is accepted unsigned",
            )
        ctype, charset = _media(headers)
        form = self.hook.body == "form"
        if ctype not in (FORM_TYPES if form else JSON_TYPES):
            wanted = "application/x-www-form-urlencoded" if form else "application/json"
            return Rejected(415, "unsupported_media_type", f"the body must be {wanted}")
        try:
            payload = self._verify(headers, body, now_ms / 1000, certificate)
        except SignatureRefused as e:
            what = "the signature" if self.auth.header is None else f"the {self.auth.header} header"
            return Rejected(401, e.reason, f"{what} does not authenticate")
        raw: bytes | None = None  # the provider's bytes go into the envelope as they came
        if payload is None and form:
            try:
                payload = decode_form(body, charset or "utf-8")
            except SignatureRefused:
                return Rejected(400, "not_form", "the body is not a form in the charset it names")
        elif payload is None:
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                return Rejected(400, "not_json", f"the body is not JSON: {e.msg} at byte {e.pos}")
            raw = body
        given = self._given_id(payload, headers)
        received_at = iso(now_ms) or ""
        envelope = [self._prefix, b',"received_at":"', received_at.encode(), b'"']
        if given is None:
            delivery_id = "sha256:" + hashlib.sha256(body).hexdigest()
        else:
            envelope += [b',"event_id":', orjson.dumps(given)]
            delivery_id = given
            if len(given) > MAX_DELIVERY_ID or given.startswith("sha256:"):
                delivery_id = "id-sha256:" + hashlib.sha256(given.encode()).hexdigest()
        envelope += [b',"payload":', orjson.dumps(payload) if raw is None else raw, b"}"]
        key = self._keys.for_payload(self.name, payload)
        return Accepted(self.stream, key, delivery_id, b"".join(envelope))

    def _verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        now_s: float,
        certificate: x509.Certificate | None,
    ) -> Any:
        """What the signature scheme makes of the body (None: the body as sent)."""
        scheme = self.auth.scheme
        if scheme in ("hmac", "timestamped"):
            refused = verify(self.auth, self.secret or b"", headers, body, now_s)
            if refused is not None:
                raise SignatureRefused(refused)
            return None
        material = self._material
        if scheme == "paypal":
            cert = self.pinned or certificate
            if cert is None:  # a URL off PayPal's hosts, or none: nothing was fetched
                if "PAYPAL-CERT-URL" in headers:
                    raise SignatureRefused(BAD_SIGNATURE)
                raise SignatureRefused(UNSIGNED)
            material = PayPalKey(self.auth.webhook_id or "", cert)
        return VERIFIERS[scheme](body, headers, material, now_s)

    def _given_id(self, payload: Any, headers: Mapping[str, str]) -> str | None:
        """The provider's own id for the delivery, from signed material where configured."""
        if self._id_header is not None:  # only a header the scheme signs (config checks)
            return _text(headers.get(self._id_header))
        if self._id_path is not None and isinstance(payload, dict):
            return _text(_get(payload, self._id_path))
        return None

    def reply(self, kind: Kind, status: int, error: str = "", detail: str = "") -> Reply:
        """The answer for an outcome, in the provider's form if configured, else the
        gateway's JSON (`{"status": ...}` for acknowledgements, `{error, detail}`)."""
        answer: WebhookAnswer | None = getattr(self.hook.answers, kind)
        if answer is not None and answer.status is not None:
            status = answer.status
        if answer is None or answer.body is None:
            gateway: dict[str, str] = (
                {"status": "accepted" if kind == "accepted" else "duplicate"}
                if kind in ("accepted", "duplicate")
                else {"error": error, "detail": detail}
            )
            content = orjson.dumps(gateway)
            return Reply(status, "application/json", b"" if status == 204 else content)
        if isinstance(answer.body, dict):
            filled = {k: _fill(v, error, detail) for k, v in answer.body.items()}
            content = orjson.dumps(filled)
        else:
            content = _fill(answer.body, error, detail).encode()
        if status == 204:
            return Reply(status, None, b"")
        return Reply(status, answer.content_type, content)


def refusal_kind(status: int) -> Kind:
    """A refusal asking for a retry (nothing stored, try again) or a permanent one."""
    return "retry_later" if status >= 500 or status in RETRY_STATUSES else "refused"


def _public_key(path: Path) -> rsa.RSAPublicKey:
    return load_public_key(path.read_bytes())


def signature_headers(hook: WebhookSource) -> tuple[str, ...]:
    """The request headers a source's scheme reads (for the OpenAPI description)."""
    auth = hook.auth
    by_scheme: dict[str, tuple[str, ...]] = {
        "wechatpay_v3": (
            "Wechatpay-Timestamp",
            "Wechatpay-Nonce",
            "Wechatpay-Signature",
            "Wechatpay-Serial",
        ),
        "paypal": (
            "PAYPAL-TRANSMISSION-ID",
            "PAYPAL-TRANSMISSION-TIME",
            "PAYPAL-TRANSMISSION-SIG",
            "PAYPAL-CERT-URL",
            "PAYPAL-AUTH-ALGO",
        ),
        "alipay_rsa2": (),
        "hmac_url_body": (auth.header or "Authorization",),
    }
    if auth.scheme in by_scheme:
        return by_scheme[auth.scheme]
    if auth.scheme == "digest_md5":
        places = (auth.digest or "", *auth.parts)
        return tuple(p[7:] for p in places if p.startswith("header:"))
    return (auth.header,) if auth.header else ()


def endpoints(settings: Settings) -> dict[str, WebhookEndpoint]:
    """Every configured webhook source, by name."""
    keys = MessageKeys(settings)
    return {
        name: WebhookEndpoint(name, settings.sources[name], hook, keys)
        for name, hook in settings.gateway.sources.items()
    }
