"""Providers' own webhook signatures: RSA, HMAC over url and body, MD5 digests, static keys.

Each `verify_*` has the same shape, so a source's configuration picks one by name
(`VERIFIERS`) and the gateway calls it the same way whatever the provider:
`verify(body, headers, key, now_s)` with the raw body, a case-insensitive header
mapping, the scheme's key material (a frozen dataclass) and the gateway's clock.
It returns what the provider meant when the scheme transforms the body (WeChat Pay's
decrypted `resource`, Alipay's form fields), else None, or raises `SignatureRefused`
whose `reason` is one of `schemas.signatures.REASONS` and says nothing more (no key,
no expected signature). The `sign_*` functions are the provider's side, for the tests,
the demo and the benchmark: one implementation, so the two cannot drift apart.

Primitives come from `cryptography` (RSA PKCS#1 v1.5, AES-GCM, X.509 path validation);
secrets are compared with `hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from schemas.signatures import BAD_SIGNATURE, MALFORMED_SIGNATURE, STALE_TIMESTAMP, UNSIGNED


class SignatureRefused(ValueError):
    """A request the scheme does not authenticate; `reason` is the 401's `error`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise SignatureRefused(UNSIGNED)
    return value.strip()


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error included
        raise SignatureRefused(MALFORMED_SIGNATURE) from None


def _rsa_verify(key: rsa.RSAPublicKey, signature: bytes, message: bytes) -> None:
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignatureRefused(BAD_SIGNATURE) from None


def _rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM file's bytes: a `PUBLIC KEY` or a `CERTIFICATE`.

    Providers hand out either (WeChat Pay platform certificates, then platform public
    keys; Alipay a bare key), so configuration names a file and need not say which.
    """
    if b"-----BEGIN CERTIFICATE-----" in pem:
        key = x509.load_pem_x509_certificate(pem).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


# --- hmac_url_body (Shopee push) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UrlBodyKey:
    """Shopee's partner key and the callback URL exactly as Shopee calls it.

    The URL is configured, not read from the request: behind a proxy the gateway sees
    another scheme, host or path than the one Shopee signed.
    """

    secret: bytes
    url: str
    header: str = "Authorization"


def _url_body_mac(key: UrlBodyKey, body: bytes) -> str:
    return hmac.digest(key.secret, key.url.encode() + b"|" + body, hashlib.sha256).hex()


def verify_hmac_url_body(
    body: bytes, headers: Mapping[str, str], key: UrlBodyKey, now_s: float
) -> None:
    """Hex HMAC-SHA256 of `url|body` in the `Authorization` header (no timestamp)."""
    given = _header(headers, key.header).lower()
    if not hmac.compare_digest(_url_body_mac(key, body).encode(), given.encode("utf-8", "replace")):
        raise SignatureRefused(BAD_SIGNATURE)


def sign_hmac_url_body(body: bytes, key: UrlBodyKey) -> dict[str, str]:
    return {key.header: _url_body_mac(key, body)}


# --- wechatpay_v3 -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WechatPayKeys:
    """The platform keys by serial (several are valid while WeChat Pay rotates them)
    and the merchant's 32-byte APIv3 key that encrypts each notification's `resource`."""

    platform_keys: Mapping[str, rsa.RSAPublicKey]
    api_v3_key: bytes
    tolerance_s: float = 300.0

    def __post_init__(self) -> None:
        if len(self.api_v3_key) != 32:
            raise ValueError("the APIv3 key is 32 bytes")


def _wechat_message(stamp: str, nonce: str, body: bytes) -> bytes:
    return stamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"


def verify_wechatpay_v3(
    body: bytes, headers: Mapping[str, str], keys: WechatPayKeys, now_s: float
) -> dict[str, Any]:
    """The notification with `resource` replaced by its decrypted JSON object.

    Signature (SHA256-with-RSA over `timestamp\\nnonce\\nbody\\n`) first, under the key
    `Wechatpay-Serial` names; then the timestamp, so only a genuine old request is
    stale; then AES-256-GCM with `nonce` and `associated_data` as AAD (the tag also
    proves the ciphertext came from someone holding the APIv3 key).
    """
    stamp = _header(headers, "Wechatpay-Timestamp")
    nonce = _header(headers, "Wechatpay-Nonce")
    serial = _header(headers, "Wechatpay-Serial")
    signature = _b64(_header(headers, "Wechatpay-Signature"))
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 15 or not nonce.isascii():
        raise SignatureRefused(MALFORMED_SIGNATURE)
    key = keys.platform_keys.get(serial) or keys.platform_keys.get(serial.upper())
    if key is None:
        raise SignatureRefused(BAD_SIGNATURE)
    _rsa_verify(key, signature, _wechat_message(stamp, nonce, body))
    if abs(now_s - int(stamp)) >= keys.tolerance_s:  # as WeChat Pay's Go SDK: 300 s is stale
        raise SignatureRefused(STALE_TIMESTAMP)
    try:
        notification = orjson.loads(body)
        resource = notification["resource"]
        if resource["algorithm"] != "AEAD_AES_256_GCM":
            raise SignatureRefused(MALFORMED_SIGNATURE)
        plain = AESGCM(keys.api_v3_key).decrypt(
            resource["nonce"].encode(),
            base64.b64decode(resource["ciphertext"], validate=True),
            resource.get("associated_data", "").encode(),
        )
        notification["resource"] = orjson.loads(plain)
    except InvalidTag:
        raise SignatureRefused(BAD_SIGNATURE) from None
    except (ValueError, KeyError, TypeError, AttributeError):  # JSON, base64, nonce length
        raise SignatureRefused(MALFORMED_SIGNATURE) from None
    if not isinstance(notification["resource"], dict):
        raise SignatureRefused(MALFORMED_SIGNATURE)
    return notification


def encrypt_wechatpay_resource(
    plain: Mapping[str, Any],
    api_v3_key: bytes,
    nonce: str,
    associated_data: str = "transaction",
    original_type: str = "transaction",
) -> dict[str, str]:
    """The provider's side: `plain` as WeChat Pay's encrypted `resource` object."""
    ciphertext = AESGCM(api_v3_key).encrypt(
        nonce.encode(), orjson.dumps(plain), associated_data.encode()
    )
    return {
        "original_type": original_type,
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(ciphertext).decode(),
        "associated_data": associated_data,
        "nonce": nonce,
    }


def sign_wechatpay_v3(
    body: bytes, private_key: rsa.RSAPrivateKey, serial: str, nonce: str, now_s: float
) -> dict[str, str]:
    """The provider's side: the four headers WeChat Pay sends with `body` at `now_s`."""
    stamp = str(int(now_s))
    return {
        "Wechatpay-Timestamp": stamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature": _rsa_sign(private_key, _wechat_message(stamp, nonce, body)),
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }


# --- alipay_rsa2 --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlipayKey:
    public_key: rsa.RSAPublicKey


def decode_form(body: bytes, default_charset: str = "utf-8") -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body as fields, in the charset it names.

    Alipay says its charset in the form itself (`charset=gbk` exists), so the field is
    read first (its value is ASCII) and the body decoded again with it. A name given
    twice is refused: which of the two would the signature have covered?
    """
    try:
        text = body.decode("ascii")
        charset = default_charset
        for name, value in parse_qsl(text, keep_blank_values=True, encoding="latin-1"):
            if name == "charset" and value:
                charset = value
        "".encode(charset)  # LookupError unless a text encoding Python knows
        pairs = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict")
    except (UnicodeError, LookupError, ValueError):
        raise SignatureRefused(MALFORMED_SIGNATURE) from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise SignatureRefused(MALFORMED_SIGNATURE)
    return fields


def alipay_sign_content(fields: Mapping[str, str]) -> str:
    """What Alipay signs: every field but `sign` and `sign_type`, sorted, `k=v&...`.

    Empty values stay in, as in Alipay's SDKs' check (`getSignCheckContentV1`).
    """
    return "&".join(
        f"{name}={fields[name]}" for name in sorted(fields) if name not in ("sign", "sign_type")
    )


def verify_alipay_rsa2(
    body: bytes, headers: Mapping[str, str], key: AlipayKey, now_s: float
) -> dict[str, str]:
    """The form's fields, once `sign` verifies (SHA256-with-RSA, base64) over them."""
    fields = decode_form(body)
    sign = fields.get("sign", "").strip()
    if not sign:
        raise SignatureRefused(UNSIGNED)
    if fields.get("sign_type", "RSA2") != "RSA2":
        raise SignatureRefused(MALFORMED_SIGNATURE)
    charset = fields.get("charset") or "utf-8"
    _rsa_verify(key.public_key, _b64(sign), alipay_sign_content(fields).encode(charset))
    return fields


def sign_alipay_rsa2(fields: Mapping[str, str], private_key: rsa.RSAPrivateKey) -> bytes:
    """The provider's side: the form body Alipay posts, `sign` and `sign_type` added."""
    charset = fields.get("charset") or "utf-8"
    signature = _rsa_sign(private_key, alipay_sign_content(fields).encode(charset))
    signed = {**fields, "sign_type": "RSA2", "sign": signature}
    return urlencode(signed, encoding=charset).encode("ascii")


# --- paypal -------------------------------------------------------------------------

PAYPAL_CERT_HOSTS = frozenset(
    {"api.paypal.com", "api-m.paypal.com", "api.sandbox.paypal.com", "api-m.sandbox.paypal.com"}
)
"""Where PayPal serves its signing certificates (`/v1/notifications/certs/CERT-...`)."""
PAYPAL_CERT_NAMES = (
    "messageverificationcerts.paypal.com",
    "messageverificationcerts.sandbox.paypal.com",
)
"""The names PayPal's signing certificate is issued to (live, sandbox)."""


def paypal_cert_url_allowed(url: str) -> bool:
    """True if `url` is https on one of PayPal's certificate hosts, under its cert path.

    The header names the key the signature is checked with, so a URL anywhere else
    would let the sender sign with a key of their own. Nothing is fetched here.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and parts.hostname in PAYPAL_CERT_HOSTS
        and port in (None, 443)
        and parts.username is None
        and parts.password is None
        and not parts.query
        and not parts.fragment
        and parts.path.startswith("/v1/notifications/certs/")
    )


def check_paypal_certificate(
    chain_pem: bytes, trust_roots_pem: bytes, now: datetime, name: str = PAYPAL_CERT_NAMES[0]
) -> x509.Certificate:
    """The signing certificate of a PEM chain (leaf first), once it chains to a trusted
    root, is valid at `now` and is issued to `name`; else `SignatureRefused`.

    A certificate fetched from a URL proves nothing by itself (anyone can make one in
    PayPal's name): the chain to a root the operator trusts is what does.
    """
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
        roots = x509.load_pem_x509_certificates(trust_roots_pem)
    except ValueError:
        raise SignatureRefused(MALFORMED_SIGNATURE) from None
    verifier = (
        PolicyBuilder().store(Store(roots)).time(now).build_server_verifier(x509.DNSName(name))
    )
    try:
        verifier.verify(chain[0], chain[1:])
    except VerificationError:
        raise SignatureRefused(BAD_SIGNATURE) from None
    return chain[0]


@dataclass(frozen=True, slots=True)
class PayPalKey:
    """The webhook's id (part of what PayPal signs) and the certificate to verify with:
    a pinned one for offline deployments, or one fetched and checked by
    `check_paypal_certificate`. `tolerance_s`, if set, bounds the transmission time."""

    webhook_id: str
    certificate: x509.Certificate
    tolerance_s: float | None = None


def _paypal_message(transmission_id: str, stamp: str, webhook_id: str, body: bytes) -> bytes:
    return f"{transmission_id}|{stamp}|{webhook_id}|{zlib.crc32(body)}".encode()


def verify_paypal(body: bytes, headers: Mapping[str, str], key: PayPalKey, now_s: float) -> None:
    """SHA256-with-RSA over `transmission_id|transmission_time|webhook_id|crc32(body)`."""
    transmission_id = _header(headers, "PAYPAL-TRANSMISSION-ID")
    stamp = _header(headers, "PAYPAL-TRANSMISSION-TIME")
    signature = _b64(_header(headers, "PAYPAL-TRANSMISSION-SIG"))
    if _header(headers, "PAYPAL-AUTH-ALGO").lower() != "sha256withrsa":
        raise SignatureRefused(MALFORMED_SIGNATURE)
    if not paypal_cert_url_allowed(_header(headers, "PAYPAL-CERT-URL")):
        raise SignatureRefused(BAD_SIGNATURE)
    public_key = key.certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SignatureRefused(BAD_SIGNATURE)
    _rsa_verify(
        public_key, signature, _paypal_message(transmission_id, stamp, key.webhook_id, body)
    )
    if key.tolerance_s is not None:
        try:
            sent = datetime.fromisoformat(stamp)
        except ValueError:
            raise SignatureRefused(MALFORMED_SIGNATURE) from None
        if sent.tzinfo is None or abs(now_s - sent.timestamp()) > key.tolerance_s:
            raise SignatureRefused(STALE_TIMESTAMP)


def sign_paypal(
    body: bytes,
    private_key: rsa.RSAPrivateKey,
    webhook_id: str,
    transmission_id: str,
    now_s: float,
    cert_url: str = "https://api.paypal.com/v1/notifications/certs/CERT-test",
) -> dict[str, str]:
    """The provider's side: the headers PayPal sends with `body` at `now_s`."""
    stamp = datetime.fromtimestamp(int(now_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "PAYPAL-TRANSMISSION-ID": transmission_id,
        "PAYPAL-TRANSMISSION-TIME": stamp,
        "PAYPAL-TRANSMISSION-SIG": _rsa_sign(
            private_key, _paypal_message(transmission_id, stamp, webhook_id, body)
        ),
        "PAYPAL-CERT-URL": cert_url,
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
    }


# --- digest_md5 (SF Express, J&T and alike) -----------------------------------------


@dataclass(frozen=True, slots=True)
class DigestKey:
    """base64(md5(parts joined)), compared with the digest found at `digest`.

    Places are `body` (the raw body), `key` (the secret: SF's checkword, J&T's private
    key), `header:<name>` or `field:<name>` (a form field, decoded). SF's API signs
    `field:msgData`, `field:timestamp`, `key`, URL-encoded first (`urlencode`, as Java's
    `URLEncoder`); ZTO and Cainiao sign the body then the key, not encoded.
    """

    secret: bytes
    digest: str
    parts: tuple[str, ...] = ("body", "key")
    urlencode: bool = False
    form_charset: str = "utf-8"

    def __post_init__(self) -> None:
        for place in (self.digest, *self.parts):
            if place not in ("body", "key") and not place.startswith(("header:", "field:")):
                raise ValueError(f"unknown digest place {place!r}")


def _java_urlencode(text: str, charset: str) -> str:
    # java.net.URLEncoder leaves `.-*_` alone and encodes `~`; quote_plus the reverse
    return quote_plus(text, safe="*", encoding=charset).replace("~", "%7E")


def _digest_md5(key: DigestKey, body: bytes, headers: Mapping[str, str]) -> tuple[bytes, str]:
    """The digest expected for this request, and the one it carries."""
    fields: dict[str, str] | None = None

    def place(name: str) -> bytes:
        nonlocal fields
        if name == "body":
            return body
        if name == "key":
            return key.secret
        if name.startswith("header:"):
            return headers.get(name[7:], "").encode(key.form_charset)
        if fields is None:
            fields = decode_form(body, key.form_charset)
        return fields.get(name[6:], "").encode(key.form_charset)

    try:
        data = b"".join(place(part) for part in key.parts)
        if key.urlencode:
            data = _java_urlencode(data.decode(key.form_charset), key.form_charset).encode()
        given = place(key.digest).decode(key.form_charset).strip()
    except UnicodeError:
        raise SignatureRefused(MALFORMED_SIGNATURE) from None
    return base64.b64encode(hashlib.md5(data).digest()), given


def verify_digest_md5(
    body: bytes, headers: Mapping[str, str], key: DigestKey, now_s: float
) -> None:
    expected, given = _digest_md5(key, body, headers)
    if not given:
        raise SignatureRefused(UNSIGNED)
    if not hmac.compare_digest(expected, given.encode("utf-8", "replace")):
        raise SignatureRefused(BAD_SIGNATURE)


def sign_digest_md5(body: bytes, headers: Mapping[str, str], key: DigestKey) -> str:
    """The provider's side: the digest to put at `key.digest` (header or form field)."""
    return _digest_md5(key, body, headers)[0].decode()


# --- static_key (DHL) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StaticKey:
    """A secret chosen at subscription, sent as is in `header` with every push."""

    secret: bytes
    header: str


def verify_static_key(
    body: bytes, headers: Mapping[str, str], key: StaticKey, now_s: float
) -> None:
    given = _header(headers, key.header)
    if not hmac.compare_digest(key.secret, given.encode("utf-8", "replace")):
        raise SignatureRefused(BAD_SIGNATURE)


Verifier = Callable[[bytes, Mapping[str, str], Any, float], "dict[str, Any] | None"]
VERIFIERS: Mapping[str, Verifier] = {
    "hmac_url_body": verify_hmac_url_body,
    "wechatpay_v3": verify_wechatpay_v3,
    "alipay_rsa2": verify_alipay_rsa2,
    "paypal": verify_paypal,
    "digest_md5": verify_digest_md5,
    "static_key": verify_static_key,
}
"""Scheme name (a source's configuration) -> verifier; all share one signature."""
