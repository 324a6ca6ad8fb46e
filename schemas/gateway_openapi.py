"""The OpenAPI 3.0 description of the webhook gateway, built from the configuration.

Served at `GET /openapi.json` and printed by `orderguard gateway --openapi`; the
fuzz test drives the running gateway from it. Built, not written by hand, so each
source's path names its own signature headers, body content type and answers (a
provider's answer is part of its configuration: Alipay's `success`, WeChat Pay's 204).
"""

from __future__ import annotations

from typing import Any

from schemas.config import Gateway, Settings, WebhookAnswer, WebhookSource
from schemas.webhooks import RETRY_STATUSES, signature_headers

_ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}
_STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
_RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}

_SCHEMES = {
    "hmac": "HMAC-SHA256 of the raw body",
    "timestamped": "Stripe's t=<unix s>,v1=<HMAC-SHA256 of '<t>.<body>'>",
    "hmac_url_body": "hex HMAC-SHA256 of '<url>|<body>' with the partner key (Shopee)",
    "wechatpay_v3": (
        "SHA256-with-RSA over 'timestamp\\nnonce\\nbody\\n' by the platform key named by "
        "Wechatpay-Serial; resource decrypted with the APIv3 key (AES-256-GCM)"
    ),
    "alipay_rsa2": "the form's sign: SHA256-with-RSA over its other fields sorted, k=v&...",
    "paypal": (
        "SHA256-with-RSA over 'transmission_id|time|webhook_id|crc32(body)' by the "
        "certificate at PAYPAL-CERT-URL (PayPal's hosts only, chain checked) or pinned"
    ),
    "digest_md5": "base64(md5(the configured parts)) (SF, J&T)",
    "static_key": "a static key chosen at subscription (DHL)",
}

_REFUSALS = {
    400: "the body is not JSON (not_json) or not a form (not_form), or the request is not "
    "valid HTTP/1.1: a line or header over 8190 bytes, or malformed (bad_request, JSON)",
    401: "unsigned, wrongly signed or stale (timestamp)",
    408: "the body did not arrive within body_timeout; the connection is closed",
    409: "the same delivery is being stored right now",
    413: "the body is over max_body, or with its envelope and id would exceed what Kafka "
    "accepts: permanent, do not retry",
    415: "the body is not the source's content type",
    429: "rate limit of the source",
    503: "not stored (Kafka unavailable, the PayPal certificate not fetched, no secret or key "
    "configured): retry",
}


def _content(answer: WebhookAnswer | None, gateway_schema: dict[str, Any]) -> dict[str, Any]:
    if answer is None or answer.body is None:
        return {"application/json": {"schema": gateway_schema}}
    if isinstance(answer.body, dict):
        props = {k: {"type": "string"} for k in answer.body}
        schema = {"type": "object", "required": sorted(props), "properties": props}
        return {answer.content_type: {"schema": schema}}
    example = answer.body if "{" not in answer.body else None
    schema: dict[str, Any] = {"type": "string"}
    if example is not None:
        schema["example"] = example
    return {answer.content_type: {"schema": schema}}


def _responses(hook: WebhookSource) -> dict[str, Any]:
    answers = hook.answers
    out: dict[str, Any] = {}
    for kind, default, what in (
        ("accepted", 202, "stored: Kafka acknowledged the envelope"),
        ("duplicate", 200, "a redelivery of a stored webhook: nothing produced"),
    ):
        answer: WebhookAnswer | None = getattr(answers, kind)
        status = str(answer.status if answer is not None and answer.status else default)
        if status in out:
            out[status]["description"] += f"; or {what}"
            continue
        entry: dict[str, Any] = {"description": what}
        if status != "204":
            entry["content"] = _content(answer, _STATUS)
        out[status] = entry
    for status, what in _REFUSALS.items():
        kind = "retry_later" if status >= 500 or status in RETRY_STATUSES else "refused"
        answer = getattr(answers, kind)
        content = _content(answer, _ERROR)
        if status == 400 and "application/json" not in content:  # the HTTP layer's: JSON
            content = {**content, **_content(None, _ERROR)}
        elif status == 400 and answer is not None and isinstance(answer.body, dict):
            provider = content["application/json"]["schema"]
            content = {"application/json": {"schema": {"anyOf": [provider, _ERROR]}}}
        if answer is not None and answer.status is not None:
            status = answer.status
        entry = {"description": what, "content": content}
        if kind == "retry_later" and status != 408:
            entry["headers"] = _RETRY
        out.setdefault(str(status), entry)
    return out


def _operation(name: str, hook: WebhookSource, gw: Gateway, schemes: list[str]) -> dict[str, Any]:
    auth = hook.auth
    how = _SCHEMES[auth.scheme]
    if auth.scheme == "hmac":
        how = f"{auth.prefix}<{how}, {auth.encoding}>"
    elif auth.scheme == "digest_md5":
        parts = " + ".join(auth.parts)
        how = f"base64(md5({parts}{', URL-encoded' if auth.urlencode else ''})) at {auth.digest}"
    form = hook.body == "form"
    media = "application/x-www-form-urlencoded" if form else "application/json"
    schema: dict[str, Any] = (
        {"type": "object", "additionalProperties": {"type": "string"}} if form else {}
    )
    delivery = (
        f"the signed header {hook.delivery_id.header}"
        if hook.delivery_id.header
        else f"the payload's {hook.delivery_id.body}"
        if hook.delivery_id.body
        else "a hash of the body"
    )
    return {
        "summary": f"Store one {name} webhook in the {name} input topic",
        "description": (
            f"Signature: {how}. Redeliveries are known by {delivery}. Answered only after "
            "Kafka acknowledged the envelope {stream, source, received_at, event_id?, "
            "payload}; a redelivery of a stored delivery produces nothing. The signature is "
            "checked before the source's rate limit. A connection that sends no complete "
            f"request head within {gw.idle_timeout / 1000:g} s is closed, as are the "
            f"longest-idle ones when the process has {gw.max_connections} open. No answer "
            "quotes a header or the body."
        ),
        "operationId": f"post_{name}",
        "requestBody": {
            "required": True,
            "content": {media: {"schema": schema}},
            "description": (
                f"the provider's {'form' if form else 'JSON'} payload, at most "
                f"{gw.max_body} bytes"
                + (" (charset: the form's charset field, else the Content-Type's)" if form else "")
            ),
        },
        "security": [{s: [] for s in schemes}] if schemes else [],
        "responses": _responses(hook),
    }


def openapi(settings: Settings) -> dict[str, Any]:
    gw = settings.gateway
    security: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for name in sorted(gw.sources):
        hook = gw.sources[name]
        names = []
        for header in signature_headers(hook):
            scheme = f"{name}_{header.lower().replace('-', '_')}"
            security[scheme] = {
                "type": "apiKey",
                "in": "header",
                "name": header,
                "description": f"{name} ({hook.auth.scheme}): {_SCHEMES[hook.auth.scheme]}",
            }
            names.append(scheme)
        paths[f"/webhooks/{name}"] = {"post": _operation(name, hook, gw, names)}
    paths["/healthz"] = {
        "get": {
            "summary": "The process is up",
            "operationId": "healthz",
            "responses": {
                "200": {"description": "up", "content": {"application/json": {"schema": _STATUS}}}
            },
        }
    }
    paths["/readyz"] = {
        "get": {
            "summary": "A Kafka broker answers",
            "operationId": "readyz",
            "responses": {
                code: {"description": what, "content": {"application/json": {"schema": _STATUS}}}
                for code, what in (("200", "ready"), ("503", "no broker answers"))
            },
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "orderguard webhook gateway",
            "version": "2",
            "description": (
                "Signed carrier, channel and payment webhooks into the orderguard input "
                "topics: one path per source, with the provider's own signature headers, "
                "body content type and answers. Unknown sources and paths get JSON 404."
            ),
        },
        "paths": paths,
        "components": {"securitySchemes": security},
    }
