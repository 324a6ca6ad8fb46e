"""`WebhookEndpoint.admit`: what one request becomes, with no I/O (the shipped configuration).

The gateway's contract with the pipeline is the envelope: these tests feed the envelopes
`admit` builds to the pipeline's own Normalizer, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import re

import orjson
import pytest
from multidict import CIMultiDict

from schemas import errors
from schemas.event import DeadLetter, Event
from schemas.normalize import Normalizer
from schemas.signatures import sign
from schemas.timeparse import iso
from schemas.webhooks import MAX_DELIVERY_ID, Accepted, Rejected, WebhookEndpoint, endpoints
from tests.helpers import T0, settings_of

SECRETS = {
    name: f"{name}-secret-Zq9!never-print" for name in ("stripe", "aftership", "zto", "shopify")
}
"""HMAC sources given a secret; the providers' own schemes: tests/unit/test_gateway_providers.py."""
ENV = {f"ORDERGUARD__GATEWAY__SOURCES__{k.upper()}__SECRET": v for k, v in SECRETS.items()}
SETTINGS = settings_of(ENV)
ENDPOINTS = endpoints(SETTINGS)
NORMALIZER = Normalizer(SETTINGS)
NOW_MS = T0 + 123
JSON = "application/json"

STRIPE = {
    "id": "evt_3QxB2L2eZvKYlo2C1Nq0aBcD",
    "type": "payment_intent.succeeded",
    "created": 1772438390,
    "data": {"object": {"id": "pi_1", "metadata": {"order_id": "WEB2026030200007"}}},
}
ZTO = {"billCode": "751234567890123", "scanType": "收件", "scanDate": "2026-03-02 16:00:00"}
AFTERSHIP = {
    "tracking_number": "1Z999AA10123456784",
    "slug": "ups",
    "order_id": "SH2026030200042",
    "tag": "InTransit",
    "checkpoint_time": "2026-03-02T07:59:00Z",
}


def body_of(payload: object) -> bytes:
    return orjson.dumps(payload)


def signed(
    source: str,
    body: bytes,
    ctype: str | None = JSON,
    now_ms: int = NOW_MS,
    **extra: str,
) -> CIMultiDict[str]:
    """The headers a provider sends: its signature with the right secret, and `extra`."""
    ep = ENDPOINTS[source]
    headers: CIMultiDict[str] = CIMultiDict(sign(ep.auth, ep.secret or b"", body, now_ms / 1000))
    if ctype is not None:
        headers["Content-Type"] = ctype
    for k, v in extra.items():
        headers[k.replace("_", "-")] = v
    return headers


def admit(source: str, payload: object, **extra: str) -> Accepted:
    body = payload if isinstance(payload, bytes) else body_of(payload)
    verdict = ENDPOINTS[source].admit(signed(source, body, **extra), body, NOW_MS)
    assert isinstance(verdict, Accepted), verdict
    return verdict


def envelope(accepted: Accepted) -> dict[str, object]:
    env = orjson.loads(accepted.envelope)
    assert isinstance(env, dict)
    return env


# ---------------------------------------------------------------- refusals
def test_a_source_without_a_secret_is_refused_whatever_it_sends() -> None:
    ep = ENDPOINTS["yto"]
    assert ep.secret is None
    body = body_of({"mailNo": "YT1234567890"})
    for headers in ({"Content-Type": JSON}, {}, {"X-YTO-Signature": "00" * 32}):
        verdict = ep.admit(headers, body, NOW_MS)
        assert isinstance(verdict, Rejected)
        assert (verdict.status, verdict.reason) == (503, "no_secret")
        assert "yto" in verdict.detail


@pytest.mark.parametrize(
    "ctype",
    [
        JSON,
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        " application/json ",
    ],
)
def test_json_content_types_are_accepted(ctype: str) -> None:
    admit("zto", {"billCode": "751234567890123"}, ctype=ctype)


@pytest.mark.parametrize(
    "ctype",
    [None, "", "text/plain", "application/x-www-form-urlencoded", "application/jsonx", "json"],
)
def test_other_content_types_are_415(ctype: str | None) -> None:
    body = body_of(STRIPE)
    verdict = ENDPOINTS["stripe"].admit(signed("stripe", body, ctype=ctype), body, NOW_MS)
    assert isinstance(verdict, Rejected)
    assert (verdict.status, verdict.reason) == (415, "unsupported_media_type")


def test_content_type_lookup_is_case_insensitive_with_the_servers_mapping() -> None:
    body = body_of(STRIPE)
    headers = signed("stripe", body, ctype=None)
    headers["content-type"] = JSON
    assert isinstance(ENDPOINTS["stripe"].admit(headers, body, NOW_MS), Accepted)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda h, name: h.pop(name), "unsigned"),
        (lambda h, name: h.__setitem__(name, ""), "unsigned"),
        (lambda h, name: h.__setitem__(name, "t=1,v1=" + "0" * 64), "bad_signature"),
        (lambda h, name: h.__setitem__(name, "nonsense"), "malformed_signature"),
    ],
    ids=["missing", "empty", "wrong", "malformed"],
)
def test_signature_refusals_are_401_with_the_reason(mangle, reason: str) -> None:
    body = body_of(STRIPE)
    headers = signed("stripe", body)
    mangle(headers, "Stripe-Signature")
    verdict = ENDPOINTS["stripe"].admit(headers, body, NOW_MS)
    assert isinstance(verdict, Rejected)
    assert (verdict.status, verdict.reason) == (401, reason)
    assert "Stripe-Signature" in verdict.detail


def test_a_stale_stripe_request_is_401_stale_timestamp() -> None:
    body = body_of(STRIPE)
    old = signed("stripe", body, now_ms=NOW_MS - 301_000)
    verdict = ENDPOINTS["stripe"].admit(old, body, NOW_MS)
    assert isinstance(verdict, Rejected) and (verdict.status, verdict.reason) == (
        401,
        "stale_timestamp",
    )
    recent = signed("stripe", body, now_ms=NOW_MS - 299_000)
    assert isinstance(ENDPOINTS["stripe"].admit(recent, body, NOW_MS), Accepted)


def test_another_sources_secret_does_not_authenticate() -> None:
    body = body_of({"tracking_number": "1Z999AA10123456784"})
    shopify_signed = signed("shopify", body)  # base64 HMAC with shopify's secret
    sig = shopify_signed["X-Shopify-Hmac-Sha256"]
    as_aftership = CIMultiDict({"Content-Type": JSON, "aftership-hmac-sha256": sig})
    verdict = ENDPOINTS["aftership"].admit(as_aftership, body, NOW_MS)
    assert isinstance(verdict, Rejected) and verdict.reason == "bad_signature"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"card": "4242424242424242", "cvc": 123',
        b"\xff\xfe{}",
        b'{"a": "\xed\xa0\x80"}',  # a lone surrogate: not UTF-8
        b"NaN",
        b"[" * 2000 + b"]" * 2000,
    ],
)
def test_authentic_bytes_that_are_not_json_are_400_without_echoing_them(body: bytes) -> None:
    verdict = ENDPOINTS["zto"].admit(signed("zto", body), body, NOW_MS)
    assert isinstance(verdict, Rejected)
    assert (verdict.status, verdict.reason) == (400, "not_json")
    assert "4242" not in verdict.detail
    assert SECRETS["zto"] not in verdict.detail
    assert len(verdict.detail) < 120


def test_not_json_is_only_said_to_a_signed_request() -> None:
    """The signature is checked first: an unsigned caller learns nothing about parsing."""
    verdict = ENDPOINTS["zto"].admit({"Content-Type": JSON}, b"{", NOW_MS)
    assert isinstance(verdict, Rejected) and verdict.status == 401


def test_refusals_never_quote_the_secret_or_signature() -> None:
    body = body_of(STRIPE)
    good = signed("stripe", body)["Stripe-Signature"]
    for headers in (
        {"Content-Type": JSON, "Stripe-Signature": good + "0"},
        {"Content-Type": JSON, "Stripe-Signature": good.replace("t=", "t=1")},
        {"Content-Type": "text/plain", "Stripe-Signature": good},
    ):
        verdict = ENDPOINTS["stripe"].admit(headers, body, NOW_MS)
        assert isinstance(verdict, Rejected)
        text = f"{verdict}"
        assert SECRETS["stripe"] not in text
        assert good.split("v1=")[1] not in text


# ---------------------------------------------------------------- the envelope
def test_the_envelope_wraps_the_providers_bytes_as_received() -> None:
    body = (
        b'{ "id" : "evt_1",\n  "type": "charge.refunded",'
        b' "amount": 1.50e2, "n": 10000000000000000000001 }'
    )
    accepted = admit("stripe", body)
    assert accepted.stream == "payments"
    assert accepted.envelope.endswith(b',"payload":' + body + b"}")
    env = envelope(accepted)
    assert list(env) == ["stream", "source", "received_at", "event_id", "payload"]
    assert env["stream"] == "payments" and env["source"] == "stripe"
    assert env["received_at"] == iso(NOW_MS) == "2026-03-02T08:00:00.123Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(env["received_at"]))
    assert env["event_id"] == "evt_1"
    assert env["payload"] == orjson.loads(body)


@pytest.mark.parametrize(
    "body",
    [b"[1, 2, 3]", b'"just a string"', b"42", b"null", b"true", b"{}", b"  {}  ", b"[]"],
)
def test_json_that_is_not_an_object_is_still_stored(body: bytes) -> None:
    """The pipeline dead-letters it with its reason; the gateway's job is to keep it."""
    accepted = admit("aftership", body)
    assert accepted.key is None
    env = envelope(accepted)
    assert "event_id" not in env
    assert env["payload"] == orjson.loads(body)
    assert accepted.delivery_id == "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("source", sorted(SECRETS))
def test_every_stream_is_the_registrys(source: str) -> None:
    accepted = admit(source, {"x": 1}, X_Delivery_Id="d-1")
    assert accepted.stream == SETTINGS.sources[source].stream
    assert envelope(accepted)["stream"] == accepted.stream


# ---------------------------------------------------------------- message keys
def test_stripe_key_is_the_metadata_order_id() -> None:
    assert admit("stripe", STRIPE).key == b"WEB2026030200007"
    assert admit("stripe", {"id": "evt_2", "type": "x"}).key is None


def test_zto_key_is_the_order_id_else_the_bill_code() -> None:
    assert admit("zto", ZTO).key == b"751234567890123"
    assert admit("zto", {**ZTO, "orderId": "PDD2026030200456"}).key == b"PDD2026030200456"
    assert admit("zto", {**ZTO, "orderId": ""}).key == b"751234567890123"
    assert admit("zto", {**ZTO, "orderId": None}).key == b"751234567890123"


def test_aftership_key_is_the_order_id_else_the_tracking_number() -> None:
    assert admit("aftership", AFTERSHIP).key == b"SH2026030200042"
    no_order = {k: v for k, v in AFTERSHIP.items() if k != "order_id"}
    assert admit("aftership", no_order).key == b"1Z999AA10123456784"
    assert admit("aftership", {"tag": "InTransit"}).key is None


# ---------------------------------------------------------------- delivery ids
def test_a_delivery_id_header_is_ignored_only_the_signed_body_counts() -> None:
    """No signature covers a header: a re-sent body under new ids is still one delivery."""
    payload = {"id": "EV-42", "type": "charge.succeeded"}
    accepted = admit("stripe", payload, X_Delivery_Id="wx-1")
    assert accepted.delivery_id == "EV-42"
    assert envelope(accepted)["event_id"] == "EV-42"
    assert admit("stripe", payload, X_Delivery_Id="wx-2").delivery_id == "EV-42"
    no_id = {"type": "charge.succeeded"}
    hashed = admit("stripe", no_id, X_Delivery_Id="wx-\udcff\udcfe-1")
    assert hashed.delivery_id == "sha256:" + hashlib.sha256(body_of(no_id)).hexdigest()
    assert "event_id" not in envelope(hashed)


def test_delivery_id_from_the_body_path_when_configured() -> None:
    assert admit("stripe", STRIPE).delivery_id == STRIPE["id"]
    assert admit("stripe", {"id": 12345}).delivery_id == "12345"
    assert envelope(admit("stripe", {"id": 12345}))["event_id"] == "12345"
    for missing in ({}, {"id": ""}, {"id": None}, {"id": {"nested": 1}}, {"id": [1]}):
        accepted = admit("stripe", missing)
        assert accepted.delivery_id.startswith("sha256:"), missing
        assert "event_id" not in envelope(accepted)


def test_sources_without_a_delivery_id_use_the_body_hash_and_no_event_id() -> None:
    body = body_of(AFTERSHIP)
    accepted = admit("aftership", body, X_Delivery_Id="ignored: not configured for aftership")
    assert accepted.delivery_id == "sha256:" + hashlib.sha256(body).hexdigest()
    assert "event_id" not in envelope(accepted)


def test_long_and_look_alike_ids_are_hashed_but_kept_in_the_envelope() -> None:
    exact = "e" * MAX_DELIVERY_ID
    assert admit("stripe", {"id": exact}).delivery_id == exact
    long_id = "e" * (MAX_DELIVERY_ID + 1)
    accepted = admit("stripe", {"id": long_id})
    assert accepted.delivery_id == "id-sha256:" + hashlib.sha256(long_id.encode()).hexdigest()
    assert envelope(accepted)["event_id"] == long_id
    # a provider id that looks like a body hash cannot collide with one
    fake = "sha256:" + hashlib.sha256(b"{}").hexdigest()
    assert admit("stripe", {"id": fake}).delivery_id.startswith("id-sha256:")


# ---------------------------------------------------------------- the pipeline reads them
def normalize(accepted: Accepted) -> Event | DeadLetter:
    return NORMALIZER.normalize(accepted.envelope, origin={"test": 1}, stream=accepted.stream)


def test_good_payloads_become_events_in_the_pipeline() -> None:
    stripe = normalize(admit("stripe", STRIPE))
    assert isinstance(stripe, Event), stripe
    assert (stripe.order_id, stripe.event_id) == ("WEB2026030200007", STRIPE["id"])
    assert stripe.received_ms == NOW_MS and stripe.claims == ("PAID",)

    zto = normalize(admit("zto", ZTO))
    assert isinstance(zto, Event), zto
    assert zto.tracking_no == "751234567890123" and zto.carrier == "zto"
    assert zto.event_id.startswith("h:")  # no provider id: the pipeline hashes the payload

    aftership = normalize(admit("aftership", AFTERSHIP))
    assert isinstance(aftership, Event), aftership
    assert aftership.order_id == "SH2026030200042"


@pytest.mark.parametrize(
    ("source", "payload", "reason"),
    [
        ("stripe", {**STRIPE, "type": "customer.created"}, errors.UNMAPPED_STATUS),
        # `type` says which kind of Event it is (payment_intent.*, charge.*): none, no kind
        ("stripe", {k: v for k, v in STRIPE.items() if k != "type"}, errors.UNMAPPED_STATUS),
        ("stripe", {k: v for k, v in STRIPE.items() if k != "data"}, errors.MISSING_ORDER_ID),
        ("zto", {**ZTO, "scanDate": "yesterday"}, errors.UNPARSEABLE_TIME),
        ("zto", {"scanType": "收件", "scanDate": "2026-03-02 16:00:00"}, errors.MISSING_ORDER_ID),
        # a carrier's order ref is the merchant's: unreadable, the tracking number finds the
        # order (identity.fallback); without one, nothing does
        (
            "aftership",
            {**AFTERSHIP, "order_id": "x", "tracking_number": None},
            errors.INVALID_ORDER_ID,
        ),
        ("aftership", [AFTERSHIP], errors.BAD_ENVELOPE),
        ("aftership", "a string", errors.BAD_ENVELOPE),
    ],
)
def test_authentic_but_unusable_payloads_are_dead_lettered_by_the_pipeline(
    source: str, payload: object, reason: str
) -> None:
    accepted = admit(source, payload)
    out = normalize(accepted)
    assert isinstance(out, DeadLetter), out
    assert out.reason == reason
    assert out.raw == accepted.envelope
    assert out.source == source


def test_endpoints_cover_exactly_the_configured_sources() -> None:
    assert set(ENDPOINTS) == set(SETTINGS.gateway.sources)
    for name, ep in ENDPOINTS.items():
        assert isinstance(ep, WebhookEndpoint)
        assert ep.stream == SETTINGS.sources[name].stream
        assert (ep.secret is not None) == (name in SECRETS)
