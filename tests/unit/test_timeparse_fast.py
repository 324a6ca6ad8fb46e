"""The cached fast paths of schemas.timeparse give what the plain computation gives.

`iso` builds a second's text from its cached minute (the date from strftime, once a day)
and `parse_rfc3339` reads the ingestion stamp's ":SS.mmmZ" from two static tables; both
must agree with datetime, cached or not, and never answer by what the cache holds.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from schemas import timeparse
from schemas.timeparse import TimeParseError, iso, parse_rfc3339

MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def reference_iso(ms: int) -> str:
    """What iso() did before its caches: strftime of the second (years below 1000 as
    the platform's %Y writes them), then the milliseconds."""
    sec, milli = divmod(ms, 1000)
    return datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{milli:03d}Z"


def edges() -> list[int]:
    day = 86_400_000
    out = [MIN_MS, MAX_MS, 0, -1, 1, 999, 1000, 59_999, 60_000, day - 1, day, -day, -day - 1]
    out += [1_772_409_600_000 + k for k in (-1, 0, 1, 59_999, 60_000, 3_599_999, 3_600_000)]
    rng = random.Random(14)
    out += [rng.randrange(MIN_MS, MAX_MS) for _ in range(3000)]
    out += [rng.randrange(1_772_409_600_000, 1_772_409_600_000 + 3 * day) for _ in range(3000)]
    return out


def test_iso_matches_datetime_cold_and_warm() -> None:
    values = edges()
    for clear in (True, False):  # every call a miss, then (second pass) hits
        for ms in values:
            if clear:
                timeparse._SECONDS.clear()
                timeparse._MINUTES.clear()
            assert iso(ms) == reference_iso(ms), ms
    assert iso(None) is None


def test_iso_outside_datetime_raises_like_datetime() -> None:
    for ms in (MIN_MS - 1, MAX_MS + 1):
        with pytest.raises(ValueError):
            iso(ms)


def test_ingestion_stamp_cold_and_warm() -> None:
    rng = random.Random(3)
    base = 1_772_409_600_000
    for _ in range(2000):
        ms = base + rng.randrange(0, 86_400_000)
        stamp = reference_iso(ms)
        timeparse._utc_minutes.clear()
        assert parse_rfc3339(stamp) == ms  # the minute computed
        assert parse_rfc3339(stamp) == ms  # the minute cached: the static tables


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-03-02T00:00:0\u0663.191Z",  # an Arabic-Indic digit: isdigit() but not [0-9]
        "2026-03-02T00:00:05.1\u06691Z",
        "2026-03-02T00:00:60.000z",  # second 60 is a leap second: the regex path decides
        "2026-03-02T00:00:05,191Z",
    ],
)
def test_odd_stamps_do_not_depend_on_the_cache(stamp: str) -> None:
    """A stamp the cached path declines gets the same answer with its minute cached or
    not (the old fast path read non-ASCII digits once the minute was cached)."""

    def answer() -> object:
        try:
            return parse_rfc3339(stamp)
        except TimeParseError as e:
            return str(e)

    timeparse._utc_minutes.clear()
    cold = answer()
    parse_rfc3339(stamp[:16] + ":00Z")  # the minute now cached
    assert answer() == cold
