"""Output records as the JSON the topics and replay files carry.

Each encoded record is (topic, key, sort_key, value bytes): the key is what Kafka
partitions by (order id, breaker key), the sort key gives replay files a stable
order whatever the worker count.
"""

from __future__ import annotations

import time

import orjson

from schemas.event import DeadLetter
from schemas.timeparse import iso
from state.records import Alert, Correction, Decision

Encoded = tuple[str, str, str, bytes]

CORRECTED, ALERTS, BREAKERS, DEAD_LETTERS = "corrected", "alerts", "breakers", "dead_letters"
TOPICS = (CORRECTED, ALERTS, BREAKERS, DEAD_LETTERS)


def _now() -> str | None:
    return iso(int(time.time() * 1000))


def correction(c: Correction) -> Encoded:
    doc = {
        "id": c.record_id,
        "order_id": c.order_id,
        "status": c.status,
        "standard_status": c.standard_status,
        "previous_status": c.previous_status,
        "reported_status": c.reported_status,
        "mismatch": c.mismatch,
        "reason": c.reason,
        "evidence": c.evidence,
        "event_time": iso(c.event_ms),
        "version": c.version,
        "emitted_at": _now(),
    }
    return CORRECTED, c.order_id, f"{c.order_id}\x00{c.version:010d}", orjson.dumps(doc)


def alert(a: Alert) -> Encoded:
    details = dict(a.details)
    since = details.pop("since_ms", None)
    if since is not None:
        details["since"] = iso(since)  # type: ignore[arg-type]
    doc = {
        "id": a.record_id,
        "alert_id": a.alert_id,
        "type": a.type,
        "severity": a.severity,
        "state": a.state,
        **a.subject,
        "message": a.message,
        "details": details,
        "first_seen": iso(a.first_seen_ms),
        "at": iso(a.at_ms),
        "emitted_at": _now(),
    }
    key = a.subject.get("order_id") or a.subject.get("source") or a.type
    sort = f"{a.at_ms:015d}\x00{a.type}\x00{a.alert_id}\x00{a.state}"
    return ALERTS, key, sort, orjson.dumps(doc)


def decision(d: Decision) -> Encoded:
    doc = {
        "id": d.record_id,
        "breaker": d.breaker,
        "key": d.key,
        "state": d.state,
        "previous_state": d.previous_state,
        "reason": d.reason,
        "action": d.action,
        "figures": d.figures,
        "at": iso(d.at_ms),
        "emitted_at": _now(),
    }
    sort = f"{d.at_ms:015d}\x00{d.breaker}\x00{d.key}\x00{d.state}"
    return BREAKERS, d.key, sort, orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)


def dead_letter(dl: DeadLetter) -> Encoded:
    raw = dl.raw
    try:
        raw_text: str = raw.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        import base64

        raw_text = base64.b64encode(raw).decode("ascii")
        encoding = "base64"
    doc = {
        "id": _dead_letter_id(dl),
        "stream": dl.stream,
        "source": dl.source,
        "reason": dl.reason,
        "error": dl.error,
        "value": dl.value,
        "raw": raw_text,
        "raw_encoding": encoding,
        "origin": dl.origin,
        "received_at": iso(dl.received_ms),
        "at": _now(),
    }
    key = dl.source or dl.reason
    return DEAD_LETTERS, key, f"{dl.seq:015d}\x00{dl.reason}", orjson.dumps(doc)


def _dead_letter_id(dl: DeadLetter) -> str:
    from state.records import stable_id

    origin = orjson.dumps(dl.origin, option=orjson.OPT_SORT_KEYS).decode()
    return stable_id("dead", dl.reason, origin, dl.seq)


def encode(item: object) -> Encoded:
    if isinstance(item, Correction):
        return correction(item)
    if isinstance(item, Alert):
        return alert(item)
    if isinstance(item, Decision):
        return decision(item)
    if isinstance(item, DeadLetter):
        return dead_letter(item)
    raise TypeError(f"not an output record: {type(item).__name__}")
