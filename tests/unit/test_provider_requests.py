"""The simulator's envelopes turned back into the providers' real requests
(`provider_request`), verified and stored by the gateway's own `admit`: what is stored
is the simulator's payload again, for every webhook source, with keys made here."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl

import orjson
import pytest
from multidict import CIMultiDict

from schemas.provider_requests import provider_request
from schemas.webhooks import Accepted, Rejected, endpoints
from sim.generator import generate
from tests.helpers import settings_of
from tests.provider_keys import provider_setup

KEYS, ENV = provider_setup(Path(tempfile.mkdtemp(prefix="og-sim-keys-")))
SETTINGS = settings_of(ENV)
ENDPOINTS = endpoints(SETTINGS)
HOOKS = SETTINGS.gateway.sources
START = datetime(2026, 3, 2, tzinfo=UTC)
ENVELOPES = [
    e
    for e in generate(orders=400, seed=7, start=START, hours=24)
    if e.get("source") in HOOKS and e.get("stream") == SETTINGS.sources[e["source"]].stream
]


def as_simulated(source: str, stored: dict) -> dict:
    """What the gateway legitimately adds or re-wraps, undone: Alipay's signature
    fields; SF's form (the document is the `msgData` JSON text)."""
    if source == "alipay":
        assert {"sign", "sign_type"} <= stored.keys()
        return {k: v for k, v in stored.items() if k not in ("sign", "sign_type")}
    if source == "sf":
        assert set(stored) == {"msgData", "timestamp", "msgDigest"}
        return orjson.loads(stored["msgData"])
    return stored


def _admit(source: str, payload: dict, at_s: float) -> Accepted | Rejected:
    req = provider_request(HOOKS[source], payload, KEYS[source], at_s)
    return ENDPOINTS[source].admit(CIMultiDict(req.headers), req.body, int(at_s * 1000))


def test_the_day_covers_every_webhook_source_with_a_real_scheme() -> None:
    seen = {e["source"] for e in ENVELOPES}
    schemes = {HOOKS[s].auth.scheme for s in seen}
    assert {"wechatpay", "alipay", "paypal", "stripe", "sf", "jt", "dhl", "shopee"} <= seen
    assert {"wechatpay_v3", "alipay_rsa2", "paypal", "digest_md5", "static_key"} <= schemes


@pytest.mark.parametrize("source", sorted({e["source"] for e in ENVELOPES}))
def test_a_simulated_webhook_is_stored_as_the_simulator_made_it(source: str) -> None:
    mine = [e for e in ENVELOPES if e["source"] == source][:25]
    for env in mine:
        at = datetime.fromisoformat(env["received_at"]).timestamp()
        verdict = _admit(source, env["payload"], at)
        assert isinstance(verdict, Accepted), (source, verdict)
        stored = orjson.loads(verdict.envelope)
        assert stored["source"] == source and stored["stream"] == env["stream"]
        assert as_simulated(source, stored["payload"]) == env["payload"]


def test_wechatpay_resource_travels_encrypted_and_alipay_as_a_signed_form() -> None:
    wechat = next(e for e in ENVELOPES if e["source"] == "wechatpay")
    req = provider_request(HOOKS["wechatpay"], wechat["payload"], KEYS["wechatpay"], 1e9)
    sent = orjson.loads(req.body)
    assert set(sent["resource"]) == {
        "algorithm", "ciphertext", "nonce", "associated_data", "original_type",
    }  # fmt: skip
    assert wechat["payload"]["resource"]["out_trade_no"].encode() not in req.body
    assert req.headers["Wechatpay-Serial"] == KEYS["wechatpay"].serial
    alipay = next(e for e in ENVELOPES if e["source"] == "alipay")
    req = provider_request(HOOKS["alipay"], alipay["payload"], KEYS["alipay"], 1e9)
    form = dict(parse_qsl(req.body.decode()))
    assert form["sign_type"] == "RSA2" and form["out_trade_no"] == alipay["payload"]["out_trade_no"]


def test_a_tampered_simulated_request_is_refused() -> None:
    for source in ("wechatpay", "alipay", "paypal", "sf", "jt"):
        env = next(e for e in ENVELOPES if e["source"] == source)
        at = datetime.fromisoformat(env["received_at"]).timestamp()
        req = provider_request(HOOKS[source], env["payload"], KEYS[source], at)
        body = req.body.replace(b"0", b"1", 1) if b"0" in req.body else req.body + b" "
        verdict = ENDPOINTS[source].admit(CIMultiDict(req.headers), body, int(at * 1000))
        assert isinstance(verdict, Rejected) and verdict.status in (400, 401), (source, verdict)


def test_a_redelivered_payload_keeps_its_provider_ids() -> None:
    """PayPal's transmission id (the delivery id) and WeChat Pay's nonce repeat for the
    same payload, as a provider's retry of one notification does; the gateway then
    stores it once."""
    paypal = [e for e in ENVELOPES if e["source"] == "paypal"][:2]
    first = provider_request(HOOKS["paypal"], paypal[0]["payload"], KEYS["paypal"], 1e9)
    again = provider_request(HOOKS["paypal"], paypal[0]["payload"], KEYS["paypal"], 1e9 + 60)
    other = provider_request(HOOKS["paypal"], paypal[1]["payload"], KEYS["paypal"], 1e9)
    tid = "PAYPAL-TRANSMISSION-ID"
    assert first.headers[tid] == again.headers[tid] != other.headers[tid]
