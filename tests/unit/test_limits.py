"""Byte bounds (`limits:`): no input, id or free text makes a record Kafka refuses.

Issue 11, finding 1: one 900 kB record of 0xff bytes made a 1.2 MB dead letter (base64)
that the producer refused, and the run died on it at every restart; finding 10: a
10 kB order id or a 100 kB customer id reached state and Redis as they were.
"""

from __future__ import annotations

import hashlib

import orjson
import pytest

from dataflows.messages import Records, ToIndex
from dataflows.router import Router
from schemas import errors
from schemas.config import ConfigError, Settings, load_settings
from schemas.event import DeadLetter
from schemas.limits import clip, excerpt, over
from schemas.normalize import Normalizer
from state.encode import encode
from state.records import Alert, Decision
from state.reference_index import ReferenceIndex
from tests.helpers import T0, ev, mark

SETTINGS = load_settings()
LIMITS = SETTINGS.limits
NORMALIZER = Normalizer(SETTINGS)
ORIGIN = {"topic": "orders", "partition": 0, "offset": 7}
POISONS = {
    "0xff": b"\xff" * 900_000,
    "quotes": b'"' * 600_000,
    "controls": b"\x01" * 600_000,  # JSON escapes each as \u0001: six bytes
    "5MB": b"x" * 5_000_000,
}


def envelope(payload: dict[str, object], **extra: object) -> bytes:
    env = {"source": "taobao", "stream": "orders", "received_at": "2026-01-27T05:31:22Z"}
    return orjson.dumps({**env, **extra, "payload": payload})


def taobao(**fields: object) -> dict[str, object]:
    base = {
        "tid": "TB2026012700123",
        "status": "WAIT_BUYER_CONFIRM_GOODS",
        "modified": "2026-01-27 13:31:20",
        "buyer_open_uid": "AAH3kQ7x1",
        "out_sid": "SF123456789012",
        "company_code": "SF",
    }
    return {**base, **fields}


def written(record: object) -> dict[str, object]:
    topic, key, _, value = encode(record, LIMITS)
    assert len(value) <= LIMITS.output_record, (topic, len(value))
    assert len(key.encode()) <= LIMITS.id
    return orjson.loads(value)


# ---------------------------------------------------------------- configuration
def test_defaults_leave_room_under_kafkas_message_max_bytes():
    lim = Settings().limits
    assert lim.id < lim.free_text < lim.dead_letter_raw < lim.output_record
    assert lim.output_record + lim.id < Settings().kafka.message_max_bytes()


def refusal(tmp_path, text: str) -> str:
    path = tmp_path / "orderguard.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    return str(e.value)


def test_an_output_bound_kafka_would_refuse_is_an_error_naming_both_keys(tmp_path):
    msg = refusal(tmp_path, "limits: {output_record: 2000000}\n")
    assert str(tmp_path / "orderguard.yaml") in msg
    assert "limits.output_record" in msg and "message.max.bytes" in msg
    msg = refusal(tmp_path, "kafka: {client: {message.max.bytes: '100000'}}\n")
    assert "limits.output_record" in msg and "message.max.bytes" in msg


def test_bounds_are_checked_against_each_other(tmp_path):
    msg = refusal(tmp_path, "limits: {dead_letter_raw: 600000}\n")
    assert "limits.dead_letter_raw" in msg and "limits.output_record" in msg
    msg = refusal(tmp_path, "limits: {id: 5000, free_text: 1000}\n")
    assert "limits.id" in msg and "limits.free_text" in msg
    msg = refusal(tmp_path, "retention: {pending_tracking_max_bytes: 1000}\n")
    assert "retention.pending_tracking_max_bytes" in msg and "limits.dead_letter_raw" in msg


# ---------------------------------------------------------------- oversize input
@pytest.mark.parametrize("name", list(POISONS))
def test_oversize_input_is_dead_lettered_too_large_with_prefix_size_and_hash(name):
    raw = POISONS[name]
    dl = NORMALIZER.normalize(raw, origin=ORIGIN, stream="orders", seq=3)
    assert isinstance(dl, DeadLetter)
    assert dl.reason == errors.TOO_LARGE
    assert len(dl.raw) <= LIMITS.dead_letter_raw  # never the whole record, even in memory
    doc = written(dl)
    assert doc["reason"] == "too_large"
    assert doc["raw_size"] == len(raw)
    assert doc["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert doc["origin"] == ORIGIN
    assert len(doc["raw"].encode()) <= LIMITS.dead_letter_raw


def test_an_input_at_the_bound_is_read():
    pad = "x" * (LIMITS.input_record - len(envelope(taobao(pad=""))))
    raw = envelope(taobao(pad=pad))
    assert len(raw) == LIMITS.input_record
    assert not isinstance(NORMALIZER.normalize(raw, origin=ORIGIN, stream="orders"), DeadLetter)
    dl = NORMALIZER.normalize(raw + b" ", origin=ORIGIN, stream="orders")
    assert isinstance(dl, DeadLetter) and dl.reason == errors.TOO_LARGE


def test_an_oversize_control_command_is_too_large_before_it_is_parsed():
    operator = "o" * 600_000
    raw = orjson.dumps(
        {
            "source": "operator",
            "stream": "control",
            "received_at": "2026-01-27T05:31:22Z",
            "payload": {"command": "hold_release", "customer_id": "C1", "operator": operator},
        }
    )
    out = Router(SETTINGS).route(mark("control:0"), [(1, raw, ORIGIN)], "control")
    dead = [d for m in out if isinstance(m, Records) for d in m.records]
    assert [d.reason for d in dead] == [errors.TOO_LARGE]
    assert written(dead[0])["raw_size"] == len(raw)


# ---------------------------------------------------------------- dead letters of any size
@pytest.mark.parametrize("raw", [b'"' * 300_000, b"\x01" * 300_000, b"\xff" * 300_000])
def test_a_dead_letter_embeds_a_bounded_prefix_of_its_raw(raw):
    dl = DeadLetter(reason=errors.NOT_JSON, error="not JSON", raw=raw, origin=ORIGIN, seq=1)
    doc = written(dl)
    assert len(doc["raw"].encode()) <= LIMITS.dead_letter_raw
    assert doc["raw_size"] == len(raw) and doc["raw_truncated"] is True
    assert doc["raw_sha256"] == hashlib.sha256(raw).hexdigest()


def test_a_small_dead_letter_keeps_its_raw_whole():
    doc = written(DeadLetter(reason=errors.NOT_JSON, error="x", raw=b"{oops", origin=ORIGIN))
    assert (doc["raw"], doc["raw_encoding"], doc["raw_truncated"]) == ("{oops", "utf-8", False)


def test_dead_letter_text_fields_are_bounded_whatever_the_producer_put_in_them():
    dl = DeadLetter(
        reason=errors.UNKNOWN_SOURCE,
        error="unknown source " + "s" * 700_000,
        raw=b"{}",
        source="s" * 700_000,
        value="v" * 700_000,
    )
    doc = written(dl)
    assert len(doc["error"].encode()) <= LIMITS.free_text


# ---------------------------------------------------------------- ids and free text
@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"tid": "TB20260127" + "1" * 10_000}, errors.INVALID_ORDER_ID),
        ({"buyer_open_uid": "u" * 100_000}, errors.INVALID_FIELD),
        ({"out_sid": "SF" + "1" * 10_000}, errors.INVALID_FIELD),
        ({"company_code": "c" * 10_000}, errors.INVALID_FIELD),
    ],
)
def test_over_long_ids_are_dead_lettered_before_they_reach_state(fields, reason):
    dl = NORMALIZER.normalize(envelope(taobao(**fields)), origin=ORIGIN, stream="orders")
    assert isinstance(dl, DeadLetter)
    assert dl.reason == reason
    assert len(dl.error.encode()) <= LIMITS.free_text
    assert dl.value is not None and len(dl.value.encode()) <= LIMITS.free_text


def test_an_over_long_event_id_is_a_bad_envelope():
    raw = envelope(taobao(), event_id="e" * 10_000)
    dl = NORMALIZER.normalize(raw, origin=ORIGIN, stream="orders")
    assert isinstance(dl, DeadLetter) and dl.reason == errors.BAD_ENVELOPE


def test_ids_at_the_bound_are_read():
    uid = "u" * LIMITS.id
    e = NORMALIZER.normalize(envelope(taobao(buyer_open_uid=uid)), origin=ORIGIN, stream="orders")
    assert not isinstance(e, DeadLetter) and e.customer_id == uid


def test_a_decision_carries_free_text_bounded():
    operator = "o" * 600_000
    d = Decision(
        "customer", "C1", "RELEASED", "HOLD", f"released by {operator}", "resume",
        {"operator": operator, "command_id": "c1"}, T0,
    )  # fmt: skip
    doc = written(d)
    assert doc["breaker"] == "customer" and doc["state"] == "RELEASED"
    assert len(doc["reason"].encode()) <= LIMITS.free_text
    assert len(doc["figures"]["operator"].encode()) <= LIMITS.free_text
    assert doc["figures"]["command_id"] == "c1"


def test_any_record_over_the_output_bound_becomes_a_bounded_dead_letter():
    a = Alert(
        type="SCHEMA_DRIFT", state="firing", subject={"source": "taobao"}, message="drift",
        first_seen_ms=T0, at_ms=T0,
        details={"keys": ["k" * 100 + str(i) for i in range(20_000)]},
    )  # fmt: skip
    topic, _, _, value = encode(a, LIMITS)
    assert topic == "dead_letters" and len(value) <= LIMITS.output_record
    doc = orjson.loads(value)
    assert doc["reason"] == errors.OUTPUT_TOO_LARGE
    assert doc["record_topic"] == "alerts" and doc["raw_size"] > LIMITS.output_record
    assert doc["record_id"] == a.record_id
    assert orjson.loads(encode(a, LIMITS)[3])["id"] == doc["id"]  # stable, emitted_at aside


# ---------------------------------------------------------------- pending scans
def _scan(tracking: str, at: int, size: int):
    return ev(
        "sf", "carrier", None, "IN_TRANSIT", at=at, tracking_no=tracking, tracking_valid=True,
        raw=b"x" * size, origin={"file": "f", "line": 1},
    )  # fmt: skip


def test_pending_scans_are_bounded_in_bytes_as_well_as_count():
    settings = Settings(retention={"pending_tracking_max_bytes": 3_000_000})
    idx = ReferenceIndex(settings)
    scans = [_scan(f"75123456789012{i}", T0 + i, 1_000_000) for i in range(4)]
    _, dead = idx.process(scans, T0 + 4)
    assert [(d.reason, d.value) for d in dead] == [
        ("pending_overflow", "751234567890120"),
        ("pending_overflow", "751234567890121"),
    ]
    assert idx.pending_count == 2
    assert 2_000_000 < idx.pending_bytes <= 3_000_000


def test_a_waiting_scan_keeps_only_the_prefix_its_dead_letter_embeds():
    """Finding 6: 200 unmatched 500 kB scans held 100 MB whole, in memory and snapshots."""
    scan = {
        "mailno": "SF123456789012",
        "opCode": "30",
        "acceptTime": "2026-01-27 22:41:00",
        "remark": "r" * 400_000,
    }
    env = {"source": "sf", "stream": "tracking", "received_at": "2026-01-27T14:41:22Z"}
    raw = orjson.dumps({**env, "payload": scan})
    out = Router(SETTINGS).route(mark("tracking:0"), [(1, raw, ORIGIN)], "tracking")
    [waiting] = [e for m in out if isinstance(m, ToIndex) for e in m.events]
    assert waiting.raw is not None and len(waiting.raw) <= LIMITS.dead_letter_raw
    idx = ReferenceIndex(SETTINGS)
    idx.process([waiting], waiting.received_ms)
    # the prefix and the event's other fields, frozen: not the 400 kB of the record
    assert idx.pending_bytes <= LIMITS.dead_letter_raw + idx.EVENT_BYTES + 1024
    _, [dl] = idx.process([], waiting.received_ms + SETTINGS.retention.pending_tracking)
    doc = written(dl)
    assert (doc["reason"], doc["raw_size"]) == ("unmatched_tracking", len(raw))
    assert doc["raw_sha256"] == hashlib.sha256(raw).hexdigest()


# ---------------------------------------------------------------- the helpers
def test_clip_and_excerpt_cut_between_characters_within_the_bound():
    text = "顺丰" * 10_000  # three bytes a character
    cut = clip(text, 1000)
    assert len(cut.encode()) <= 1000 and cut.endswith("…") and text.startswith(cut[:-1])
    assert clip("short", 1000) == "short" and not over("x" * 256, 256) and over("é" * 200, 256)
    shown, encoding, truncated = excerpt(text.encode(), 1000)
    assert (encoding, truncated) == ("utf-8", True) and text.startswith(shown)
    assert len(orjson.dumps(shown)) - 2 <= 1000
    shown, encoding, truncated = excerpt(b"\xff" * 5000, 1000)
    assert encoding == "base64" and truncated and len(shown) <= 1000
