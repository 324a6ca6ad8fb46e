"""The providers' side: a webhook request signed as each scheme's provider signs it.

For the tests, the load benchmark and (later) the simulator: given a source's
configuration and the provider's keys, `signed_request` makes the body and headers a
real provider would send (WeChat Pay's encrypted `resource`, Alipay's signed form,
PayPal's transmission headers...). `ProviderKeys.generate` makes a fresh set of test
keys (RSA pairs standing in for WeChat Pay's platform key, Alipay's key and PayPal's
certificate, issued by a test CA); `gateway_files` is what the gateway must be given
for them (PEM files and environment variables). Pure: nothing is written or sent here.
The signing primitives are `schemas.provider_signatures`' `sign_*`, the verifiers'
other half, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from schemas.config import ENV_PREFIX, SECRET_SCHEMES, WebhookSource
from schemas.provider_signatures import (
    PAYPAL_CERT_NAMES,
    DigestKey,
    UrlBodyKey,
    encrypt_wechatpay_resource,
    sign_alipay_rsa2,
    sign_digest_md5,
    sign_hmac_url_body,
    sign_paypal,
    sign_wechatpay_v3,
)
from schemas.signatures import sign

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
PAYPAL_CERT_URL = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-test"
RSA_BITS = 2048
"""What WeChat Pay, Alipay and PayPal sign with."""


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_certificate(
    key: rsa.RSAPrivateKey,
    name: str,
    issuer_key: rsa.RSAPrivateKey,
    issuer: str,
    now: datetime,
    *,
    ca: bool,
    days: int = 365,
) -> x509.Certificate:
    """A certificate for tests and the demo: a CA's, or a server's for `name`, valid `days`."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        usage = dict.fromkeys(
            (
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "encipher_only",
                "decipher_only",
            ),
            False,
        )
        builder = builder.add_extension(
            x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class ProviderKeys:
    """What one provider holds to sign a source's webhooks: a shared secret (HMAC key,
    APIv3 key, checkword, static key) or a private key; WeChat Pay's platform serial,
    PayPal's certificate chain (leaf, then the test CA that issued it)."""

    secret: bytes | None = None
    private_key: rsa.RSAPrivateKey | None = None
    serial: str = ""
    chain: tuple[x509.Certificate, ...] = ()
    webhook_id: str = ""

    @classmethod
    def generate(cls, hook: WebhookSource) -> ProviderKeys:
        """Fresh keys for `hook`'s scheme (never committed: made when needed)."""
        scheme = hook.auth.scheme
        if scheme == "wechatpay_v3":  # the APIv3 key is 32 bytes; the serial 40 hex digits
            return cls(
                secrets.token_hex(16).encode(),
                rsa.generate_private_key(65537, RSA_BITS),
                secrets.token_hex(20).upper(),
            )
        if scheme == "alipay_rsa2":
            return cls(private_key=rsa.generate_private_key(65537, RSA_BITS))
        if scheme == "paypal":
            now = datetime.now(UTC)
            root_key = rsa.generate_private_key(65537, RSA_BITS)
            leaf_key = rsa.generate_private_key(65537, RSA_BITS)
            ca_name = "orderguard test CA"
            root = make_certificate(root_key, ca_name, root_key, ca_name, now, ca=True)
            name = PAYPAL_CERT_NAMES[0]
            leaf = make_certificate(leaf_key, name, root_key, ca_name, now, ca=False)
            webhook_id = hook.auth.webhook_id or secrets.token_hex(8).upper()
            return cls(private_key=leaf_key, chain=(leaf, root), webhook_id=webhook_id)
        return cls(secret=secrets.token_hex(32).encode())

    def for_gateway(
        self, source: str, directory: str, pinned: bool = True
    ) -> tuple[dict[str, bytes], dict[str, str]]:
        """What the gateway needs to verify these keys: the PEM files to write (by path,
        in `directory`) and the ORDERGUARD__... variables carrying the secret and naming
        the files. `pinned`: PayPal's certificate pinned, else only the test CA as
        trust roots (the certificate is then fetched from PAYPAL-CERT-URL)."""
        base = f"{ENV_PREFIX}GATEWAY__SOURCES__{source.upper()}__"
        files: dict[str, bytes] = {}
        env: dict[str, str] = {}
        if self.secret is not None:
            env[base + "SECRET"] = self.secret.decode()
        if self.chain:
            cert, roots = f"{directory}/{source}-cert.pem", f"{directory}/{source}-roots.pem"
            files[cert], files[roots] = _pem(self.chain[0]), _pem(self.chain[-1])
            env[base + "AUTH__WEBHOOK_ID"] = self.webhook_id
            env[base + ("AUTH__CERTIFICATE" if pinned else "AUTH__TRUST_ROOTS")] = (
                cert if pinned else roots
            )
        elif self.private_key is not None:
            public = self.private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            path = f"{directory}/{source}-{self.serial or 'public'}.pem"
            files[path] = public
            if self.serial:
                env[base + "AUTH__PUBLIC_KEYS"] = orjson.dumps({self.serial: path}).decode()
            else:
                env[base + "AUTH__PUBLIC_KEY"] = path
        return files, env


@dataclass(frozen=True)
class Request:
    """One webhook request as the provider sends it."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def signed_request(
    hook: WebhookSource,
    payload: Mapping[str, Any] | bytes,
    keys: ProviderKeys,
    now_s: float | None = None,
    *,
    nonce: str | None = None,
    transmission_id: str | None = None,
    cert_url: str = PAYPAL_CERT_URL,
    headers: Mapping[str, str] | None = None,
) -> Request:
    """`payload` as `hook`'s provider sends it, signed with `keys` at `now_s`.

    `payload`: JSON sources take the object (or its bytes, signed as they are); WeChat Pay
    the notification with `resource` in plain (encrypted here), or bytes signed as they
    are; form sources the fields
    (strings), the signature field added here. `headers`: more headers the provider
    sends (J&T's `apiAccount`, `timestamp`); a digest over a header reads them.
    """
    now = time.time() if now_s is None else now_s
    auth = hook.auth
    scheme = auth.scheme
    extra = dict(headers or {})
    if scheme in SECRET_SCHEMES and keys.secret is None:
        raise ValueError(f"scheme {scheme} signs with a secret")
    secret = keys.secret or b""
    if scheme == "alipay_rsa2":
        assert isinstance(payload, Mapping) and keys.private_key is not None
        charset = str(payload.get("charset") or "utf-8")
        body = sign_alipay_rsa2({k: str(v) for k, v in payload.items()}, keys.private_key)
        return Request(body, {**extra, "Content-Type": f"{FORM}; charset={charset}"})
    if scheme == "digest_md5" and hook.body == "form":
        assert isinstance(payload, Mapping)
        fields = {k: str(v) for k, v in payload.items()}
        key = DigestKey(secret, auth.digest or "", auth.parts, auth.urlencode)
        body = urlencode(fields).encode()
        digest = sign_digest_md5(body, extra, key)
        if key.digest.startswith("field:"):
            body = urlencode({**fields, key.digest[6:]: digest}).encode()
        else:
            extra[key.digest[7:]] = digest
        return Request(body, {**extra, "Content-Type": f"{FORM}; charset=UTF-8"})
    if scheme == "wechatpay_v3":
        assert keys.private_key is not None
        nonce = nonce or secrets.token_hex(16)
        if isinstance(payload, bytes):  # signed as it is (the fuzz test's arbitrary bytes)
            body = payload
        else:
            resource = payload["resource"]
            # what the plain text is: `transaction` or `refund` (REFUND.SUCCESS ...)
            kind = "refund" if str(payload.get("event_type", "")).startswith("REFUND") else None
            encrypted = encrypt_wechatpay_resource(
                resource, secret, secrets.token_hex(6), *((kind, kind) if kind else ())
            )
            body = orjson.dumps({**payload, "resource": encrypted})
        signed = sign_wechatpay_v3(body, keys.private_key, keys.serial, nonce, now)
        return Request(body, {**extra, **signed, "Content-Type": JSON})
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    if scheme in ("hmac", "timestamped"):
        signed = sign(auth, secret, body, now)
    elif scheme == "hmac_url_body":
        signed = sign_hmac_url_body(
            body, UrlBodyKey(secret, auth.url or "", auth.header or "Authorization")
        )
    elif scheme == "paypal":
        assert keys.private_key is not None
        transmission_id = transmission_id or str(uuid.uuid4())
        signed = sign_paypal(
            body, keys.private_key, keys.webhook_id, transmission_id, now, cert_url
        )
    elif scheme == "static_key":
        signed = {auth.header or "": secret.decode()}
    else:  # digest_md5 over a JSON body (header digest)
        key = DigestKey(secret, auth.digest or "", auth.parts, auth.urlencode)
        signed = {key.digest[7:]: sign_digest_md5(body, extra, key)}
    return Request(body, {**extra, **signed, "Content-Type": JSON})


def provider_request(
    hook: WebhookSource, payload: Mapping[str, Any], keys: ProviderKeys, now_s: float
) -> Request:
    """The request a provider sends for an envelope payload as the gateway stores it
    (the simulator's): `signed_request`'s input made from it, with a delivery's
    provider-chosen ids (WeChat Pay's nonce, PayPal's transmission id) derived from the
    payload, so that a redelivery of the same payload carries the same ids.

    A form source whose payload is a document rather than the form's fields (SF's
    route push `{"Body": ...}`) sends it as JSON text in the first form field its digest
    covers (`msgData`), with the digest's other fields (`timestamp`, ms) made here.
    """
    digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    auth = hook.auth
    fields: Mapping[str, Any] = payload
    if hook.body == "form" and not all(isinstance(v, str) for v in payload.values()):
        named = [p[6:] for p in auth.parts if p.startswith("field:")]
        if not named:
            raise ValueError(f"a {auth.scheme} form names no field to carry the document")
        fields = {named[0]: orjson.dumps(payload).decode()}
        fields |= {name: str(int(now_s * 1000)) for name in named[1:]}
    return signed_request(
        hook,
        fields,
        keys,
        now_s,
        nonce=digest[:32],
        transmission_id=str(uuid.UUID(digest[:32])),
    )


def gateway_keys(
    hooks: Mapping[str, WebhookSource], directory: str, pinned: bool = True
) -> tuple[dict[str, ProviderKeys], dict[str, bytes], dict[str, str]]:
    """Fresh keys for each of `hooks`, and what the gateway needs to verify them: the
    public PEM files to write (by path, in `directory`) and the environment."""
    keys: dict[str, ProviderKeys] = {}
    files: dict[str, bytes] = {}
    env: dict[str, str] = {}
    for name, hook in hooks.items():
        keys[name] = ProviderKeys.generate(hook)
        more_files, more_env = keys[name].for_gateway(name, directory, pinned)
        files |= more_files
        env |= more_env
    return keys, files, env
