"""`openapi(settings)`: a valid OpenAPI 3.0 document that documents every answer the gateway gives.

The status codes are taken from the code (every `Rejected(...)` and `_json(...)` in the
gateway and `schemas.webhooks`), and each is also provoked from the real aiohttp app,
in-process: a real producer whose broker does not exist, no Redis. The answers that need
a broker (202) or Redis (200, 409) are the fuzz test's (tests/integration).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

import connectors.gateway
import schemas.webhooks
from connectors.acked_producer import AckedProducer
from connectors.broker import free_port
from connectors.gateway import Gateway
from schemas.config import Settings
from schemas.gateway_openapi import openapi
from schemas.signatures import sign
from schemas.webhooks import signature_headers
from tests.helpers import settings_of

SECRETS = {"aftership": "as-secret-openapi", "stripe": "whsec_openapi", "zto": "zto-secret-openapi"}
ENV = {f"ORDERGUARD__GATEWAY__SOURCES__{k.upper()}__SECRET": v for k, v in SECRETS.items()}
ENV |= {
    "ORDERGUARD__KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens
    "ORDERGUARD__GATEWAY__PRODUCE_TIMEOUT": "200ms",
    "ORDERGUARD__GATEWAY__MAX_BODY": "4096",
    "ORDERGUARD__GATEWAY__SOURCES__ZTO__RATE_LIMIT__RATE": "0.001",
    "ORDERGUARD__GATEWAY__SOURCES__ZTO__RATE_LIMIT__BURST": "2",
}
SETTINGS = settings_of(ENV)
SPEC = openapi(SETTINGS)
OPS = {name: SPEC["paths"][f"/webhooks/{name}"]["post"] for name in SETTINGS.gateway.sources}
DOCUMENTED = {int(code) for op in OPS.values() for code in op["responses"]}


def test_it_is_a_valid_openapi_3_0_document() -> None:
    assert SPEC["openapi"].startswith("3.0.")
    validate(SPEC)  # raises on any violation of the OpenAPI 3.0 schema
    validate(orjson.loads(orjson.dumps(SPEC)))  # and as served (JSON)
    validate(openapi(settings_of({})))  # the shipped configuration, no secrets


def test_every_configured_source_has_its_own_path() -> None:
    webhooks = {p for p in SPEC["paths"] if p.startswith("/webhooks/")}
    assert webhooks == {f"/webhooks/{name}" for name in SETTINGS.gateway.sources}


def test_no_sources_still_gives_a_valid_document() -> None:
    empty = Settings(gateway={"sources": {}})
    spec = openapi(empty)
    validate(spec)
    assert not [p for p in spec["paths"] if p.startswith("/webhooks/")]


def test_every_sources_signature_headers_are_described() -> None:
    schemes = SPEC["components"]["securitySchemes"]
    for name, hook in SETTINGS.gateway.sources.items():
        (required,) = OPS[name]["security"] or [{}]
        named = {schemes[s]["name"] for s in required}
        assert all(schemes[s]["in"] == "header" for s in required)
        assert named == set(signature_headers(hook)), name
    wechat = {schemes[s]["name"] for s in OPS["wechatpay"]["security"][0]}
    assert wechat == {
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Signature",
        "Wechatpay-Serial",
    }
    assert {schemes[s]["name"] for s in OPS["shopify"]["security"][0]} == {"X-Shopify-Hmac-Sha256"}
    assert {schemes[s]["name"] for s in OPS["shopee"]["security"][0]} == {"Authorization"}
    assert OPS["alipay"]["security"] == []  # the signature is a form field
    assert all(SECRETS[name] not in orjson.dumps(SPEC).decode() for name in SECRETS)


def test_each_providers_content_type_and_answers_are_described() -> None:
    assert list(OPS["alipay"]["requestBody"]["content"]) == ["application/x-www-form-urlencoded"]
    assert list(OPS["stripe"]["requestBody"]["content"]) == ["application/json"]
    alipay = OPS["alipay"]["responses"]
    assert alipay["200"]["content"]["text/plain"]["schema"]["example"] == "success"
    assert "202" not in alipay
    wechat = OPS["wechatpay"]["responses"]
    assert "content" not in wechat["204"] and "202" not in wechat
    assert wechat["401"]["content"]["application/json"]["schema"]["required"] == ["code", "message"]
    assert "content" in OPS["shopee"]["responses"]["200"]
    assert OPS["shopee"]["responses"]["200"]["content"]["text/plain"]["schema"].get("example") == ""
    sf = OPS["sf"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert sf["required"] == ["return_code", "return_msg"]
    assert set(OPS["stripe"]["responses"]) >= {"200", "202", "401", "503"}


def test_retry_after_is_documented_where_it_is_sent() -> None:
    for op in OPS.values():
        for code in ("409", "429", "503"):
            assert "Retry-After" in op["responses"][code]["headers"], code


def test_the_request_body_is_the_providers() -> None:
    for name, op in OPS.items():
        body = op["requestBody"]
        assert body["required"] is True
        assert str(SETTINGS.gateway.max_body) in body["description"]
        form = SETTINGS.gateway.sources[name].body == "form"
        assert list(body["content"]) == [
            "application/x-www-form-urlencoded" if form else "application/json"
        ]


# ---------------------------------------------------------------- codes from the code
def _literal_statuses(module: object) -> set[int]:
    """First integer arguments of `Rejected(...)` and `_json(...)` calls in a module's source."""
    tree = ast.parse(inspect.getsource(module))  # type: ignore[arg-type]
    codes: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("Rejected", "_json")
            and node.args
        ):
            first = node.args[0]
            if isinstance(first, ast.Attribute) and first.attr == "status":
                continue  # `_refuse` passing a Rejected's status on: counted at the Rejected
            assert isinstance(first, ast.Constant) and isinstance(first.value, int), (
                f"a status that is not a literal at line {node.lineno}: the test cannot see it"
            )
            codes.add(first.value)
    return codes


ROUTER_CODES = {404, 405}
"""What the catch-all routes answer outside the documented operations (JSON too)."""
NEVER_SENT = {499}
"""client_aborted: the client left before its body was read, there is nobody to answer."""
WEBHOOK_CODES = _literal_statuses(connectors.gateway) | _literal_statuses(schemas.webhooks)


def test_every_status_in_the_code_is_documented() -> None:
    assert {400, 401, 404, 415, 503} <= WEBHOOK_CODES  # the scan does find them
    readyz = {int(c) for c in SPEC["paths"]["/readyz"]["get"]["responses"]}
    assert WEBHOOK_CODES - {200, 503} <= DOCUMENTED | ROUTER_CODES | NEVER_SENT
    assert not WEBHOOK_CODES - (DOCUMENTED | readyz | ROUTER_CODES | NEVER_SENT)
    assert 500 not in DOCUMENTED and 500 not in WEBHOOK_CODES


# ---------------------------------------------------------------- codes from the app
def with_client(test: Callable[[TestClient, Gateway], Awaitable[None]]) -> None:
    """Run `test` against the real app on a loopback port, with a real (brokerless) producer."""

    async def main() -> None:
        producer = AckedProducer(SETTINGS.kafka, SETTINGS.gateway.produce_timeout)
        producer.start(asyncio.get_running_loop())
        gateway = Gateway(SETTINGS, producer, ledger=None)
        try:
            async with TestClient(TestServer(gateway.app())) as client:
                await test(client, gateway)
        finally:
            producer.close()

    asyncio.run(main())


def signed(source: str, body: bytes) -> dict[str, str]:
    auth = SETTINGS.gateway.sources[source].auth
    headers = sign(auth, SECRETS[source].encode(), body, time.time())
    return {**headers, "Content-Type": "application/json"}


async def answer(resp: Any) -> tuple[int, dict[str, Any]]:
    """The status and the JSON body: every answer of the gateway's own handlers is JSON."""
    assert resp.content_type == "application/json", (resp.status, await resp.text())
    return resp.status, orjson.loads(await resp.read())


def check_documented(op: dict[str, Any], status: int, body: dict[str, Any]) -> None:
    assert str(status) in op["responses"], status
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    for key in schema["required"]:
        assert isinstance(body[key], str), (status, body)


def test_the_handlers_answers_are_documented_and_json() -> None:
    body = b'{"mailno": "SF123456789012", "opCode": "50"}'
    seen: dict[int, set[str]] = {}

    async def drive(client: TestClient, gateway: Gateway) -> None:
        async def post(source: str, data: bytes, headers: dict[str, str], **kw: Any) -> None:
            resp = await client.post(f"/webhooks/{source}", data=data, headers=headers, **kw)
            status, out = await answer(resp)
            if source in OPS:
                check_documented(OPS[source], status, out)
            seen.setdefault(status, set()).add(out.get("error", out.get("status")))
            if status in (409, 429, 503) and out["error"] != "no_secret":  # a config matter
                assert int(resp.headers["Retry-After"]) >= 1

        await post("fedex", body, signed("aftership", body))  # 404 unknown source
        await post("yto", body, {"Content-Type": "application/json"})  # 503 no secret
        text = {**signed("aftership", body), "Content-Type": "text/plain"}
        await post("aftership", body, text)  # 415
        await post("aftership", body, {"Content-Type": "application/json"})  # 401 unsigned
        await post("aftership", b"{", signed("aftership", b"{"))  # 400 not JSON
        big = b'{"x": "' + b"a" * 5000 + b'"}'
        await post("aftership", big, signed("aftership", big))  # 413 by Content-Length

        async def chunks() -> Any:
            for _ in range(10):
                yield b"a" * 1000

        await post("aftership", chunks(), {"Content-Type": "application/json"})  # 413, chunked
        await post("aftership", body, signed("aftership", body))  # 503: no broker in time
        for n in range(3):  # zto: burst 2, then 429 (signed: unsigned ones never use it up)
            await post("zto", b"[%d]" % n, signed("zto", b"[%d]" % n))

        for path, op in (("/healthz", "/healthz"), ("/readyz", "/readyz")):
            resp = await client.get(path)
            status, out = await answer(resp)
            check_documented(SPEC["paths"][op]["get"], status, out)
            seen.setdefault(status, set()).add(f"{path}:{out['status']}")
        resp = await client.get("/openapi.json")
        assert resp.status == 200 and orjson.loads(await resp.read()) == SPEC

    with_client(drive)
    assert seen == {
        400: {"not_json"},
        401: {"unsigned"},
        404: {"unknown_source"},
        413: {"too_large"},
        415: {"unsupported_media_type"},
        429: {"rate_limited"},
        503: {"no_secret", "kafka_unavailable", "/readyz:unready"},
        200: {"/healthz:ok"},
    }
    # 200/202/409 need Kafka and Redis; 405 is the router's (the next test); 408 and 499 a
    # client that stalls or leaves mid-body (tests/integration/test_gateway_defence.py)
    missing = WEBHOOK_CODES - set(seen) - {200, 202, 405, 409, 408, 499}
    assert not missing, f"codes in the code this test did not provoke: {missing}"


def test_what_the_router_answers_outside_the_handlers() -> None:
    """Other methods and paths: 405 and 404, in JSON like every other answer."""
    answers: list[tuple[int, str, str | None]] = []

    async def drive(client: TestClient, gateway: Gateway) -> None:
        for method, path in (("GET", "/webhooks/zto"), ("PUT", "/webhooks/zto"), ("GET", "/nope")):
            resp = await client.request(method, path)
            status, out = await answer(resp)
            answers.append((status, out["error"], resp.headers.get("Allow")))
        resp = await client.post("/webhooks/a/b", data=b"{}")
        status, out = await answer(resp)
        answers.append((status, out["error"], resp.headers.get("Allow")))

    with_client(drive)
    assert answers == [
        (405, "method_not_allowed", "POST"),
        (405, "method_not_allowed", "POST"),
        (404, "not_found", None),
        (404, "not_found", None),
    ]


@pytest.mark.parametrize("source", sorted(SECRETS))
def test_every_configured_source_is_routed(source: str) -> None:
    async def drive(client: TestClient, gateway: Gateway) -> None:
        resp = await client.post(f"/webhooks/{source}", data=b"{}", headers={})
        status, out = await answer(resp)
        assert status in (401, 415) and out["error"] != "unknown_source"

    with_client(drive)
