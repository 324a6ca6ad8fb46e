"""The OpenAPI 3.0 description of the webhook gateway, built from the configuration.

Served at `GET /openapi.json` and printed by `orderguard gateway --openapi`; the
fuzz test drives the running gateway from it. Built, not written by hand, so the
source list and the signature headers are always the configured ones.
"""

from __future__ import annotations

from typing import Any

from schemas.config import Settings

_ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}
_STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}


def _answer(description: str, schema: dict[str, Any], retry: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if retry:
        out["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        }
    return out


def openapi(settings: Settings) -> dict[str, Any]:
    gw = settings.gateway
    sources = sorted(gw.sources)
    schemes: dict[str, Any] = {}
    for name in sources:
        auth = gw.sources[name].auth
        how = (
            "Stripe style: t=<unix seconds>,v1=<HMAC-SHA256 of '<t>.<body>'>, "
            f"within {auth.tolerance // 1000} s of the gateway's clock"
            if auth.scheme == "timestamped"
            else f"{auth.prefix}<HMAC-SHA256 of the raw body, {auth.encoding}>"
        )
        schemes[f"{name}_signature"] = {
            "type": "apiKey",
            "in": "header",
            "name": auth.header,
            "description": f"{name}: {how}, with the source's secret",
        }
    webhook = {
        "summary": "Store one provider webhook in the source's input topic",
        "description": (
            "202 only after Kafka acknowledged the envelope "
            "{stream, source, received_at, event_id?, payload}; a redelivery of a stored "
            "delivery is 200 and produces nothing. The signature is checked before the "
            "source's rate limit, so unsigned requests never use it up. A connection that "
            f"sends no complete request head within {gw.idle_timeout / 1000:g} s of opening "
            "or of its last answer is closed, as are the longest-idle ones when the process "
            f"has {gw.max_connections} open. Every answer, the HTTP layer's own included, "
            "is JSON {error, detail} that never quotes a header."
        ),
        "operationId": "postWebhook",
        "parameters": [
            {
                "name": "source",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": sources} if sources else {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {}}},
            "description": f"the provider's JSON payload, at most {gw.max_body} bytes",
        },
        "security": [{scheme: []} for scheme in schemes],
        "responses": {
            "200": _answer("a redelivery of a stored webhook: nothing produced", _STATUS),
            "202": _answer("stored: Kafka acknowledged the envelope", _STATUS),
            "400": _answer(
                "the body is not JSON (not_json), or the request is not valid HTTP/1.1: "
                "a line or header over 8190 bytes, or malformed (bad_request)",
                _ERROR,
            ),
            "401": _answer("unsigned, wrongly signed or stale (timestamp)", _ERROR),
            "404": _answer("no such source", _ERROR),
            "408": _answer(
                f"the body did not arrive within {gw.body_timeout / 1000:g} s (body_timeout); "
                "the connection is closed",
                _ERROR,
            ),
            "409": _answer("the same delivery is being stored right now", _ERROR, retry=True),
            "413": _answer(
                f"the body is over {gw.max_body} bytes, or with its envelope and id would "
                "exceed what Kafka accepts: permanent, do not retry",
                _ERROR,
            ),
            "415": _answer("the body is not application/json", _ERROR),
            "429": _answer("rate limit of the source", _ERROR, retry=True),
            "503": _answer("not stored (Kafka unavailable, no secret configured)", _ERROR, True),
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "orderguard webhook gateway",
            "version": "1",
            "description": "Signed carrier and payment webhooks into the orderguard input topics.",
        },
        "paths": {
            "/webhooks/{source}": {"post": webhook},
            "/healthz": {
                "get": {
                    "summary": "The process is up",
                    "operationId": "healthz",
                    "responses": {"200": _answer("up", _STATUS)},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "A Kafka broker answers",
                    "operationId": "readyz",
                    "responses": {
                        "200": _answer("ready", _STATUS),
                        "503": _answer("no broker answers", _STATUS),
                    },
                }
            },
        },
        "components": {"securitySchemes": schemes},
    }
