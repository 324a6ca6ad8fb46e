"""Output records as the JSON the topics and replay files carry, and the topic names.

Pure, in `state/` beside the record types it encodes: the sinks (`connectors/`) and the
wiring (`dataflows/`) both import it, and neither imports the other.

Each encoded record is (topic, key, sort_key, value bytes): the key is what Kafka
partitions by (order id, breaker key), the sort key gives replay files a stable
order whatever the worker count.

Every record is bounded by `limits` (schemas.config.Limits), whatever its values: a
dead letter embeds at most `dead_letter_raw` bytes of its input, free text is cut at
`free_text`, and a record still over `output_record` is replaced by a dead letter
`output_too_large`: one record never makes a batch Kafka refuses.
"""

from __future__ import annotations

import hashlib

import orjson

from schemas import errors
from schemas.config import Limits
from schemas.event import DeadLetter
from schemas.limits import clip, excerpt, over
from schemas.timeparse import iso, wall_clock_ms
from state.records import Alert, Correction, Decision, stable_id

Encoded = tuple[str, str, str, bytes]

CORRECTED, ALERTS, BREAKERS, DEAD_LETTERS = "corrected", "alerts", "breakers", "dead_letters"
TOPICS = (CORRECTED, ALERTS, BREAKERS, DEAD_LETTERS)
DEFAULT_LIMITS = Limits()


_last_now: tuple[int, str | None] = (-1, None)


def _now() -> str | None:
    """The wall clock as ISO text, formatted once per millisecond: every record has one."""
    global _last_now
    ms = wall_clock_ms()
    if ms != _last_now[0]:
        _last_now = (ms, iso(ms))
    return _last_now[1]


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
        "ids": c.ids,
        "emitted_at": _now(),
    }
    sort = f"{c.order_id}\x00{str(c.version).zfill(10)}"  # = :010d for an int, faster
    return CORRECTED, c.order_id, sort, orjson.dumps(doc)


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
        **({"ids": a.ids} if "order_id" in a.subject else {}),
        "message": a.message,
        "details": details,
        "first_seen": iso(a.first_seen_ms),
        "at": iso(a.at_ms),
        "emitted_at": _now(),
    }
    key = a.subject.get("order_id") or a.subject.get("source") or a.type
    sort = f"{a.at_ms:015d}\x00{a.type}\x00{a.alert_id}\x00{a.state}"
    return ALERTS, key, sort, orjson.dumps(doc)


def decision(d: Decision, limits: Limits = DEFAULT_LIMITS) -> Encoded:
    text = limits.free_text  # operator names and reasons come from commands
    doc = {
        "id": d.record_id,
        "breaker": d.breaker,
        "key": d.key,
        "state": d.state,
        "previous_state": d.previous_state,
        "reason": clip(d.reason, text),
        "action": d.action,
        "figures": {k: clip(v, text) if type(v) is str else v for k, v in d.figures.items()},
        "at": iso(d.at_ms),
        "emitted_at": _now(),
    }
    sort = f"{d.at_ms:015d}\x00{d.breaker}\x00{d.key}\x00{d.state}"
    return BREAKERS, d.key, sort, orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)


def dead_letter(dl: DeadLetter, limits: Limits = DEFAULT_LIMITS) -> Encoded:
    raw = dl.raw
    raw_text, encoding, truncated = excerpt(raw, limits.dead_letter_raw)
    text = limits.free_text
    doc = {
        "id": _dead_letter_id(dl),
        "stream": dl.stream,
        "source": dl.source and clip(dl.source, limits.id),
        "reason": dl.reason,
        "error": clip(dl.error, text),
        "value": dl.value and clip(dl.value, text),
        "raw": raw_text,
        "raw_encoding": encoding,
        "raw_truncated": truncated or dl.raw_size is not None,
        "raw_size": len(raw) if dl.raw_size is None else dl.raw_size,
        "raw_sha256": dl.raw_sha256 or hashlib.sha256(raw).hexdigest(),
        "origin": dl.origin,
        "received_at": iso(dl.received_ms),
        "at": _now(),
    }
    key = doc["source"] or dl.reason
    return DEAD_LETTERS, key, f"{dl.seq:015d}\x00{dl.reason}", orjson.dumps(doc)


def oversize(record: Encoded, limits: Limits, error: str) -> Encoded:
    """The bounded dead letter that replaces an output record Kafka would refuse."""
    topic, key, sort_key, value = record
    raw_text, encoding, truncated = excerpt(value, limits.dead_letter_raw)
    digest = hashlib.sha256(value).hexdigest()
    record_id = _record_id(value)
    doc = {
        # the replaced record's id keeps this one stable when a restart writes it again
        "id": stable_id("dead", errors.OUTPUT_TOO_LARGE, topic, record_id or digest),
        "stream": None,
        "source": None,
        "reason": errors.OUTPUT_TOO_LARGE,
        "error": clip(error, limits.free_text),
        "value": None,
        "record_topic": topic,
        "record_key": clip(key, limits.id),
        "record_id": record_id,
        "raw": raw_text,
        "raw_encoding": encoding,
        "raw_truncated": truncated,
        "raw_size": len(value),
        "raw_sha256": digest,
        "origin": {},
        "received_at": None,
        "at": _now(),
    }
    return DEAD_LETTERS, errors.OUTPUT_TOO_LARGE, sort_key, orjson.dumps(doc)


def _record_id(value: bytes) -> str | None:
    """The `id` of an encoded record (every output has one), if it is there to read."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    rid = doc.get("id") if type(doc) is dict else None
    return rid if type(rid) is str and len(rid) <= 64 else None


def is_replacement(record: Encoded) -> bool:
    """Whether an encoded record is the `oversize` dead letter standing in for another."""
    return record[0] == DEAD_LETTERS and record[1] == errors.OUTPUT_TOO_LARGE


def _dead_letter_id(dl: DeadLetter) -> str:
    origin = orjson.dumps(dl.origin, option=orjson.OPT_SORT_KEYS).decode()
    return stable_id("dead", dl.reason, origin, dl.seq)


def encode(item: object, limits: Limits = DEFAULT_LIMITS) -> Encoded:
    """One output record, never over `limits.output_record` (value) or `limits.id` (key)."""
    if isinstance(item, Correction):
        record = correction(item)
    elif isinstance(item, Alert):
        record = alert(item)
    elif isinstance(item, Decision):
        record = decision(item, limits)
    elif isinstance(item, DeadLetter):
        record = dead_letter(item, limits)
    else:
        raise TypeError(f"not an output record: {type(item).__name__}")
    key, value = record[1], record[3]
    id_max = limits.id
    if len(value) > limits.output_record or (len(key) * 4 > id_max and over(key, id_max)):
        return oversize(
            record,
            limits,
            f"{record[0]} record of {len(value)} bytes (key of {len(key)} characters) exceeds "
            f"limits.output_record ({limits.output_record}) or limits.id ({limits.id})",
        )
    return record
