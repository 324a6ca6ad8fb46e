"""Whatever arrives on a topic, normalize returns an Event or a DeadLetter and never raises.

And no input reaches the catch-all: `internal_error` would mean a bug, so it must not
appear for any bytes, any JSON, or any envelope of a real source.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import errors
from schemas.config import load_settings
from schemas.event import DeadLetter, Event
from schemas.normalize import Normalizer
from schemas.timeparse import (
    TimeParseError,
    parse_epoch_ms,
    parse_epoch_s,
    parse_naive,
    parse_rfc3339,
)

SETTINGS = load_settings()
NORMALIZER = Normalizer(SETTINGS)
SOURCES = sorted(SETTINGS.sources)
STREAMS = ["orders", "payments", "tracking"]
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "day-in-the-life.jsonl"
BASES = [orjson.loads(line) for line in SAMPLE.read_bytes().splitlines() if line.strip()]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    # strings that look like the real thing: ids, codes, times
    | st.sampled_from(
        [
            "TB2026012700123",
            "REF-TB2026012700124-01",
            "SF123456789012",
            "2026-01-27 10:00:00",
            "2026-02-11T18:44:22+01:00",
            "1769477460",
            "transit",
            "PICKED_UP",
            "Exception",
            "",
            " ",
        ]
    )
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def check(raw: bytes, **kw: Any) -> None:
    result = NORMALIZER.normalize(raw, origin={"test": True}, **kw)
    results = result if isinstance(result, tuple) else (result,)  # a push: several events
    assert results
    for r in results:
        assert isinstance(r, Event | DeadLetter)
        if isinstance(r, DeadLetter):
            assert r.reason in errors.REASONS
            assert r.reason != errors.INTERNAL_ERROR, r.error
            assert r.raw is raw


@FAST
@given(st.binary(max_size=300), st.sampled_from([None, *STREAMS]))
def test_arbitrary_bytes(raw: bytes, stream: str | None) -> None:
    check(raw, stream=stream)


@FAST
@given(json_values, st.sampled_from([None, *STREAMS]))
def test_arbitrary_json(value: Any, stream: str | None) -> None:
    check(orjson.dumps(value), stream=stream)


@FAST
@given(
    st.sampled_from(SOURCES),
    json_values,
    st.dictionaries(
        st.sampled_from(["stream", "received_at", "event_id", "source"]), json_values, max_size=4
    ),
    st.sampled_from([None, *STREAMS]),
    st.none() | st.integers(min_value=0, max_value=2**45),
)
def test_envelopes_of_real_sources_with_arbitrary_payloads(
    source: str, body: Any, extra: dict[str, Any], stream: str | None, fallback: int | None
) -> None:
    env = {"stream": SETTINGS.sources[source].stream, "source": source}
    env["received_at"] = "2026-01-27T05:31:22.000Z"
    env.update(extra)
    env["payload"] = body
    check(orjson.dumps(env), stream=stream, fallback_received_ms=fallback)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside a JSON value, for mutating one spot of a real payload."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_real_envelopes_with_one_value_replaced(data: st.DataObject) -> None:
    env = orjson.loads(orjson.dumps(data.draw(st.sampled_from(BASES))))
    path = data.draw(st.sampled_from(_paths(env)[1:]))
    *parents, leaf = path
    target = env
    for key in parents:
        target = target[key]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[leaf]
    else:
        target[leaf] = data.draw(json_values)
    check(orjson.dumps(env))


@FAST
@given(st.text(max_size=40) | st.integers() | st.floats() | st.none() | st.booleans())
def test_time_parsers_raise_only_their_own_error(value: Any) -> None:
    for parse in (
        parse_rfc3339,
        parse_epoch_s,
        parse_epoch_ms,
        lambda v: parse_naive(v, "Asia/Shanghai"),
    ):
        try:
            ms = parse(value)
        except TimeParseError:
            continue
        assert isinstance(ms, int)
        assert 0 <= ms <= 253_402_300_799_999


@FAST
@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
    )
)
def test_rfc3339_round_trips_any_aware_datetime(moment: datetime) -> None:
    text = moment.isoformat(timespec="milliseconds")  # truncates to the millisecond, as we do
    if len(text) > len("2026-01-01T00:00:00.000+00:00"):
        return  # historical offsets with seconds (LMT) are not RFC 3339
    whole_ms = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert parse_rfc3339(text) == (whole_ms - EPOCH) // timedelta(milliseconds=1)
