"""Webhook signatures: what `verify` accepts is exactly what `sign` (the provider) produces.

A gateway that accepts one forged request has no signatures at all, so the properties
below flip every byte of the body and of the signature and try other secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from schemas.config import WebhookAuth
from schemas.signatures import (
    BAD_SIGNATURE,
    MALFORMED_SIGNATURE,
    REASONS,
    STALE_TIMESTAMP,
    UNSIGNED,
    sign,
    verify,
)

SECRET = b"whsec_test-secret-0123456789"
NOW = 1_772_438_400.0  # 2026-03-02T08:00:00Z
BODY = b'{"id":"evt_1","type":"payment_intent.succeeded"}'

HEX = WebhookAuth(scheme="hmac", header="X-Sig")
B64 = WebhookAuth(scheme="hmac", header="X-Sig", encoding="base64")
PREFIXED = WebhookAuth(scheme="hmac", header="X-DHL-Signature", prefix="sha256=")
PREFIXED_B64 = WebhookAuth(scheme="hmac", header="X-Sig", prefix="v0:", encoding="base64")
STRIPE = WebhookAuth(scheme="timestamped", header="Stripe-Signature", tolerance="300s")
STRIPE_B64 = WebhookAuth(scheme="timestamped", header="W-Sig", encoding="base64")
SCHEMES = [HEX, B64, PREFIXED, PREFIXED_B64, STRIPE, STRIPE_B64]
IDS = ["hmac-hex", "hmac-base64", "hmac-prefix", "hmac-prefix-base64", "stripe", "stamp-b64"]

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mac(message: bytes, secret: bytes = SECRET) -> bytes:
    return hmac.digest(secret, message, hashlib.sha256)


def stripe_header(body: bytes, t: int | str, *extra: str, secret: bytes = SECRET) -> str:
    """Stripe's header for `body` at `t`, built here by hand (not with `sign`)."""
    sig = mac(f"{t}.".encode() + body, secret).hex()
    return ",".join([f"t={t}", f"v1={sig}", *extra])


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("auth", SCHEMES, ids=IDS)
def test_sign_then_verify_round_trips(auth: WebhookAuth) -> None:
    headers = sign(auth, SECRET, BODY, NOW)
    assert list(headers) == [auth.header]
    assert verify(auth, SECRET, headers, BODY, NOW) is None


def test_signatures_are_what_providers_send() -> None:
    """`sign` is checked against hand-computed headers: a wrong `sign` cannot vouch for `verify`."""
    digest = mac(BODY)
    assert sign(HEX, SECRET, BODY, NOW) == {"X-Sig": digest.hex()}
    assert sign(B64, SECRET, BODY, NOW) == {"X-Sig": base64.b64encode(digest).decode()}
    assert sign(PREFIXED, SECRET, BODY, NOW) == {"X-DHL-Signature": "sha256=" + digest.hex()}
    assert sign(STRIPE, SECRET, BODY, NOW) == {"Stripe-Signature": stripe_header(BODY, int(NOW))}
    # and verify takes the hand-made ones
    assert verify(HEX, SECRET, {"X-Sig": digest.hex()}, BODY, NOW) is None
    assert verify(STRIPE, SECRET, {"Stripe-Signature": stripe_header(BODY, 1)}, BODY, 1.0) is None


@pytest.mark.parametrize("auth", SCHEMES, ids=IDS)
@FAST
@given(body=st.binary(max_size=2048), secret=st.binary(min_size=1, max_size=64), data=st.data())
def test_only_the_signed_body_with_the_secret_verifies(
    auth: WebhookAuth, body: bytes, secret: bytes, data: st.DataObject
) -> None:
    headers = sign(auth, secret, body, NOW)
    assert verify(auth, secret, headers, body, NOW) is None
    value = headers[auth.header]

    other = data.draw(st.binary(min_size=1, max_size=64).filter(lambda s: s != secret))
    assert verify(auth, other, headers, body, NOW) == BAD_SIGNATURE

    if body:
        i = data.draw(st.integers(0, len(body) - 1), label="body byte")
        flip = data.draw(st.integers(1, 255), label="xor")
        tampered = body[:i] + bytes([body[i] ^ flip]) + body[i + 1 :]
        assert verify(auth, secret, headers, tampered, NOW) == BAD_SIGNATURE
    appended = body + data.draw(st.binary(min_size=1, max_size=8), label="appended")
    assert verify(auth, secret, headers, appended, NOW) == BAD_SIGNATURE

    # a different character anywhere in the signature itself
    start = value.index("v1=") + 3 if auth.scheme == "timestamped" else len(auth.prefix)
    j = data.draw(st.integers(start, len(value) - 1), label="signature char")
    alphabet = "0123456789abcdef" if auth.encoding == "hex" else "ABCXYZabcxyz0189+/"
    swap = data.draw(st.sampled_from([c for c in alphabet if c.lower() != value[j].lower()]))
    forged = value[:j] + swap + value[j + 1 :]
    assert verify(auth, secret, {auth.header: forged}, body, NOW) == BAD_SIGNATURE


@pytest.mark.parametrize("auth", [B64, PREFIXED_B64], ids=["hmac-base64", "prefix-base64"])
def test_base64_signature_is_case_sensitive(auth: WebhookAuth) -> None:
    value = sign(auth, SECRET, BODY, NOW)["X-Sig"]
    swapped = value[: len(auth.prefix)] + value[len(auth.prefix) :].swapcase()
    assert swapped != value
    assert verify(auth, SECRET, {"X-Sig": swapped}, BODY, NOW) == BAD_SIGNATURE


@pytest.mark.parametrize("auth", [HEX, PREFIXED, STRIPE], ids=["hmac", "prefix", "stripe"])
def test_hex_signatures_are_case_insensitive(auth: WebhookAuth) -> None:
    value = sign(auth, SECRET, BODY, NOW)[auth.header]
    if auth.scheme == "timestamped":
        t, v1 = value.split(",")
        upper = f"{t},{v1[:3]}{v1[3:].upper()}"
    else:
        upper = auth.prefix + value[len(auth.prefix) :].upper()
    assert upper != value
    assert verify(auth, SECRET, {auth.header: upper}, BODY, NOW) is None


# ---------------------------------------------------------------- header lookup, shape
@pytest.mark.parametrize("auth", SCHEMES, ids=IDS)
def test_header_lookup_is_case_insensitive_with_a_ci_mapping(auth: WebhookAuth) -> None:
    value = sign(auth, SECRET, BODY, NOW)[auth.header]
    for name in (auth.header.lower(), auth.header.upper(), auth.header):
        headers = CIMultiDict({name: value, "Content-Type": "application/json"})
        assert verify(auth, SECRET, headers, BODY, NOW) is None


@pytest.mark.parametrize("auth", SCHEMES, ids=IDS)
@pytest.mark.parametrize("value", [None, "", "   ", "\t"])
def test_missing_or_blank_header_is_unsigned(auth: WebhookAuth, value: str | None) -> None:
    headers = {"Other": "x"} if value is None else {auth.header: value}
    assert verify(auth, SECRET, headers, BODY, NOW) == UNSIGNED


def test_surrounding_whitespace_is_ignored() -> None:
    for auth in (HEX, PREFIXED, STRIPE):
        value = sign(auth, SECRET, BODY, NOW)[auth.header]
        assert verify(auth, SECRET, {auth.header: f"  {value}\t"}, BODY, NOW) is None


def test_prefix_is_required() -> None:
    bare = mac(BODY).hex()
    assert verify(PREFIXED, SECRET, {"X-DHL-Signature": bare}, BODY, NOW) == MALFORMED_SIGNATURE
    wrong = "sha1=" + bare
    assert verify(PREFIXED, SECRET, {"X-DHL-Signature": wrong}, BODY, NOW) == MALFORMED_SIGNATURE


def test_non_ascii_signature_is_refused_not_raised() -> None:
    for auth in (HEX, B64, STRIPE):
        value = "t=1772438400,v1=é☃" if auth.scheme == "timestamped" else "é☃\udcff"
        assert verify(auth, SECRET, {auth.header: value}, BODY, NOW) == BAD_SIGNATURE


# ---------------------------------------------------------------- Stripe's header
T = int(NOW)


def check(value: str, now: float = NOW, body: bytes = BODY) -> str | None:
    return verify(STRIPE, SECRET, {"Stripe-Signature": value}, body, now)


def test_stripe_rotation_any_v1_may_match() -> None:
    good = mac(f"{T}.".encode() + BODY).hex()
    old = mac(f"{T}.".encode() + BODY, b"the-old-secret").hex()
    assert check(f"t={T},v1={old},v1={good}") is None
    assert check(f"t={T},v1={good},v1={old}") is None
    assert check(f"t={T},v1={old},v1={'0' * 64}") == BAD_SIGNATURE


def test_stripe_v0_and_unknown_schemes_are_ignored() -> None:
    good = mac(f"{T}.".encode() + BODY).hex()
    assert check(f"t={T},v0={'f' * 64},v1={good}") is None
    assert check(f"v0=abc,t={T},v1={good},x=1") is None
    # a v0 that would match is not a v1: schemes other than v1 never authenticate
    assert check(f"t={T},v0={good}") == MALFORMED_SIGNATURE


@pytest.mark.parametrize(
    "value",
    [
        "v1=" + "a" * 64,  # no t
        f"t=,v1={'a' * 64}",  # empty t
        f"t=12a4,v1={'a' * 64}",  # not digits
        f"t=-{T},v1={'a' * 64}",  # negative
        f"t={T}.5,v1={'a' * 64}",  # fractional
        f"t=١٢٣,v1={'a' * 64}",  # non-ASCII digits
        f"t={T}",  # no v1
        f"t={T},v0={'a' * 64}",  # only v0
        f"t={T},v1",  # a part without "="
        f"t={T},,v1={'a' * 64}",  # an empty part
        f"{T},{'a' * 64}",  # no names at all
        "garbage",
    ],
)
def test_stripe_malformed_headers(value: str) -> None:
    assert check(value) == MALFORMED_SIGNATURE


def test_stripe_whitespace_around_parts_is_tolerated() -> None:
    good = mac(f"{T}.".encode() + BODY).hex()
    assert check(f"t={T}, v1={good}") is None
    assert check(f" t={T} ,  v1={good} ") is None


def test_stripe_timestamp_is_signed() -> None:
    """Moving t (to dodge the tolerance) breaks the signature."""
    genuine = stripe_header(BODY, T - 3600)
    moved = genuine.replace(f"t={T - 3600}", f"t={T}")
    assert check(genuine) == STALE_TIMESTAMP
    assert check(moved) == BAD_SIGNATURE


@pytest.mark.parametrize(
    ("skew", "expected"),
    [
        (0, None),
        (299, None),
        (-299, None),
        (300, None),  # exactly the tolerance is still inside
        (-300, None),
        (301, STALE_TIMESTAMP),  # older than the tolerance: a replay
        (-301, STALE_TIMESTAMP),  # from the future beyond the tolerance
        (86_400 * 365, STALE_TIMESTAMP),
        (-86_400 * 365, STALE_TIMESTAMP),
    ],
)
def test_stripe_tolerance(skew: int, expected: str | None) -> None:
    """`skew`: how far the gateway's clock is past the request's timestamp, in seconds."""
    assert check(stripe_header(BODY, T), now=T + skew) == expected


def test_stripe_tolerance_is_configurable() -> None:
    tight = WebhookAuth(scheme="timestamped", header="Stripe-Signature", tolerance="1s")
    value = {"Stripe-Signature": stripe_header(BODY, T)}
    assert verify(tight, SECRET, value, BODY, T + 1) is None
    assert verify(tight, SECRET, value, BODY, T + 1.5) == STALE_TIMESTAMP


def test_stale_is_only_said_of_genuine_requests() -> None:
    """A forged old request is bad_signature: "stale" would confirm the signature was right."""
    forged = f"t={T - 86_400},v1={'ab' * 32}"
    assert check(forged) == BAD_SIGNATURE
    other_secret = stripe_header(BODY, T - 86_400, secret=b"not-the-secret")
    assert check(other_secret) == BAD_SIGNATURE
    assert check(stripe_header(BODY, T - 86_400)) == STALE_TIMESTAMP


def test_absurd_genuine_timestamps_are_stale_not_errors() -> None:
    """A timestamp of hundreds of digits (signed with the secret) must not raise."""
    for t in ("0", "0000000001", "9" * 20, "9" * 400, "9" * 5000):
        assert check(stripe_header(BODY, t)) == STALE_TIMESTAMP, t[:20]


def test_reasons_are_the_documented_set() -> None:
    assert set(REASONS) == {UNSIGNED, BAD_SIGNATURE, MALFORMED_SIGNATURE, STALE_TIMESTAMP}
