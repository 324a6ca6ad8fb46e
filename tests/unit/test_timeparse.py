"""Every time format the sources send ends as UTC epoch ms, offsets applied, garbage refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.timeparse import (
    TimeParseError,
    parse_epoch_ms,
    parse_epoch_s,
    parse_naive,
    parse_rfc3339,
    parse_time,
    parser_for,
)


def utc_ms(*args: int, ms: int = 0) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1000 + ms


# ---------------------------------------------------------------- RFC 3339
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-02-11T18:44:22+01:00", utc_ms(2026, 2, 11, 17, 44, 22)),  # the offset is kept
        ("2026-02-11T17:44:22Z", utc_ms(2026, 2, 11, 17, 44, 22)),
        ("2026-02-11T17:44:22z", utc_ms(2026, 2, 11, 17, 44, 22)),
        ("2026-01-27T10:05:09+08:00", utc_ms(2026, 1, 27, 2, 5, 9)),
        ("2026-01-15T09:00:00-05:00", utc_ms(2026, 1, 15, 14, 0, 0)),
        ("2026-01-15T23:30:00-05:00", utc_ms(2026, 1, 16, 4, 30, 0)),  # crosses midnight
        ("2026-03-01T00:30:00+05:45", utc_ms(2026, 2, 28, 18, 45, 0)),  # Kathmandu
        ("2026-01-15T14:02:00.000Z", utc_ms(2026, 1, 15, 14, 2, 0)),
        ("2026-02-11T17:44:30.120Z", utc_ms(2026, 2, 11, 17, 44, 30, ms=120)),
        ("2026-02-11T17:44:30.5Z", utc_ms(2026, 2, 11, 17, 44, 30, ms=500)),
        ("2026-02-11T17:44:30.123999+00:00", utc_ms(2026, 2, 11, 17, 44, 30, ms=123)),
        ("2026-02-11 17:44:30+00:00", utc_ms(2026, 2, 11, 17, 44, 30)),  # RFC 3339 allows a space
        ("2024-02-29T00:00:00Z", utc_ms(2024, 2, 29)),
        ("2016-12-31T23:59:60Z", utc_ms(2017, 1, 1)),  # a leap second runs into the next minute
    ],
)
def test_rfc3339(text: str, expected: int) -> None:
    assert parse_rfc3339(text) == expected
    assert parse_rfc3339(text) == expected  # a second time, from the caches


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "2026-02-11T18:44:22",  # no offset: ambiguous, refused
        "2026-02-11 18:44:22",
        "2026-02-11",
        "2026-02-11T18:44Z",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-02-11T24:00:00Z",
        "2026-02-11T18:60:00Z",
        "2026-02-11T18:44:61Z",
        "2026-02-11T18:44:22+24:00",
        "2026-02-11T18:44:22+01:60",
        "2026-02-11T18:44:22+0100",
        "2026-02-11T18:44:22.Z",
        "2026-02-11T18:44:22Z ",
        " 2026-02-11T18:44:22Z",
        "2026-02-11T18:44:22ZZ",
        "２０２６-02-11T18:44:22Z",  # full-width digits are not digits here
        "2026-1_-11T18:44:22Z",
        "0000-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",  # before the epoch: out of range
    ],
)
def test_rfc3339_garbage(text: str) -> None:
    with pytest.raises(TimeParseError) as info:
        parse_rfc3339(text)
    assert repr(text)[:20] in str(info.value) or "out of range" in str(info.value)


@pytest.mark.parametrize("value", [None, 1770831862, 1.5, b"2026-02-11T17:44:22Z", ["x"]])
def test_rfc3339_refuses_non_strings(value: object) -> None:
    with pytest.raises(TimeParseError, match="expected an RFC 3339 string"):
        parse_rfc3339(value)  # type: ignore[arg-type]


def test_time_parse_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_rfc3339("nope")


# ---------------------------------------------------------------- naive local times
@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2026-01-27 10:00:00", "Asia/Shanghai", utc_ms(2026, 1, 27, 2, 0, 0)),
        ("2026-01-27 15:02:00", "Asia/Shanghai", utc_ms(2026, 1, 27, 7, 2, 0)),
        ("2026-01-28 04:20:00", "Asia/Shanghai", utc_ms(2026, 1, 27, 20, 20, 0)),
        ("2026-01-27T10:00:00", "Asia/Shanghai", utc_ms(2026, 1, 27, 2, 0, 0)),
        ("2026-01-27 10:00:00.250", "Asia/Shanghai", utc_ms(2026, 1, 27, 2, 0, 0, ms=250)),
        ("2026-01-27 10:00:00", "UTC", utc_ms(2026, 1, 27, 10, 0, 0)),
        ("2026-07-01 12:00:00", "Europe/Berlin", utc_ms(2026, 7, 1, 10, 0, 0)),
        ("2026-01-01 12:00:00", "Europe/Berlin", utc_ms(2026, 1, 1, 11, 0, 0)),
        # an explicit offset in a naive field is unambiguous and honoured
        ("2026-01-27T10:00:00+08:00", "Europe/Berlin", utc_ms(2026, 1, 27, 2, 0, 0)),
    ],
)
def test_naive(text: str, zone: str, expected: int) -> None:
    assert parse_naive(text, zone) == expected
    assert parse_naive(text, zone) == expected


def test_naive_dst_gap_reads_the_offset_before_the_change() -> None:
    # 02:30 does not exist in New York on 2026-03-08; fold=0 reads it as EST (-05:00)
    assert parse_naive("2026-03-08 02:30:00", "America/New_York") == utc_ms(2026, 3, 8, 7, 30)
    # the hours around it are plain
    assert parse_naive("2026-03-08 01:59:59", "America/New_York") == utc_ms(2026, 3, 8, 6, 59, 59)
    assert parse_naive("2026-03-08 03:00:00", "America/New_York") == utc_ms(2026, 3, 8, 7, 0)


def test_naive_dst_fold_is_the_earlier_instant() -> None:
    # 01:30 happens twice in New York on 2026-11-01; the first (EDT, -04:00) wins
    assert parse_naive("2026-11-01 01:30:00", "America/New_York") == utc_ms(2026, 11, 1, 5, 30)
    assert parse_naive("2026-11-01 02:30:00", "America/New_York") == utc_ms(2026, 11, 1, 7, 30)


def test_naive_half_hour_gap_inside_an_hour() -> None:
    # Lord Howe Island skips 02:00-02:30 on 2026-10-04 (+10:30 -> +11:00): the offset changes
    # inside the local hour 02, so that hour must not be read with one cached offset.
    zone = "Australia/Lord_Howe"
    assert parse_naive("2026-10-04 01:50:00", zone) == utc_ms(2026, 10, 3, 15, 20)
    assert parse_naive("2026-10-04 02:10:00", zone) == utc_ms(2026, 10, 3, 15, 40)  # in the gap
    assert parse_naive("2026-10-04 02:50:00", zone) == utc_ms(2026, 10, 3, 15, 50)
    assert parse_naive("2026-10-04 02:10:00", zone) == utc_ms(2026, 10, 3, 15, 40)  # repeatable
    assert parse_naive("2026-10-04 03:10:00", zone) == utc_ms(2026, 10, 3, 16, 10)


def test_naive_same_string_differs_by_zone() -> None:
    a = parse_naive("2026-01-27 10:00:00", "Asia/Shanghai")
    b = parse_naive("2026-01-27 10:00:00", "Europe/London")
    assert b - a == 8 * 3_600_000


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "2026-01-27",
        "2026-01-27 10:00",
        "2026-01-27 1:00:00",
        "2026-01-27 10:00:0",
        "2026-02-30 10:00:00",
        "2026-01-27 25:00:00",
        "2026-01-27 10:60:00",
        "27/01/2026 10:00:00",
        "2026-01-27 10:00:00 +0800",
    ],
)
def test_naive_garbage(text: str) -> None:
    with pytest.raises(TimeParseError, match=r"Asia/Shanghai|out of range"):
        parse_naive(text, "Asia/Shanghai")


@pytest.mark.parametrize("value", [None, 1769479200, 1.0])
def test_naive_refuses_non_strings(value: object) -> None:
    with pytest.raises(TimeParseError, match="expected a 'YYYY-MM-DD HH:MM:SS' string"):
        parse_naive(value, "Asia/Shanghai")  # type: ignore[arg-type]


def test_unknown_zone() -> None:
    with pytest.raises(TimeParseError, match="unknown time zone 'Mars/Olympus'"):
        parse_naive("2026-01-27 10:00:00", "Mars/Olympus")


# ---------------------------------------------------------------- epoch numbers
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1769477460, 1769477460_000),
        (1769477460.25, 1769477460_250),
        ("1769477460", 1769477460_000),
        ("1769477460.123", 1769477460_123),
        ("1769477460.1239", 1769477460_123),
        (0, 0),
    ],
)
def test_epoch_seconds(value: object, expected: int) -> None:
    assert parse_epoch_s(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1769477460123, 1769477460123),
        (1769477460123.0, 1769477460123),
        ("1769477460123", 1769477460123),
        ("1769477460123.9", 1769477460123),
    ],
)
def test_epoch_milliseconds(value: object, expected: int) -> None:
    assert parse_epoch_ms(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        True,
        None,
        "",
        "abc",
        "1e9",
        "-5",
        " 1769477460",
        "1_769_477_460",
        "١٢٣",  # Arabic-Indic digits
        float("nan"),
        float("inf"),
        -1,
        10**17,  # milliseconds sent as seconds: far out of range
        [1769477460],
    ],
)
def test_epoch_garbage(value: object) -> None:
    with pytest.raises(TimeParseError, match="epoch seconds"):
        parse_epoch_s(value)  # type: ignore[arg-type]


# ---------------------------------------------------------------- by configured format
def test_parse_time_dispatches_on_the_configured_format() -> None:
    expected = utc_ms(2026, 1, 27, 2, 0, 0)
    assert parse_time("2026-01-27T02:00:00Z", "rfc3339") == expected
    assert parse_time("2026-01-27 10:00:00", "naive", "Asia/Shanghai") == expected
    assert parse_time(expected // 1000, "epoch_s") == expected
    assert parse_time(expected, "epoch_ms") == expected
    assert parser_for("naive", "Asia/Shanghai") is parser_for("naive", "Asia/Shanghai")


def test_unknown_format() -> None:
    with pytest.raises(TimeParseError, match="unknown time format 'iso'"):
        parser_for("iso")


# ---------------------------------------------------------------- ISO 8601 (offset optional)
@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        # with an offset: exactly RFC 3339, whatever the configured zone
        ("2026-02-11T18:44:22+01:00", "Asia/Shanghai", utc_ms(2026, 2, 11, 17, 44, 22)),
        ("2026-01-15T14:02:00.250Z", "Europe/Berlin", utc_ms(2026, 1, 15, 14, 2, 0, ms=250)),
        # without one (AfterShip's `2021-01-14T00:52:00`): local time in the configured zone
        ("2021-01-14T00:52:00", "UTC", utc_ms(2021, 1, 14, 0, 52, 0)),
        ("2021-01-14T00:52:00", "Asia/Shanghai", utc_ms(2021, 1, 13, 16, 52, 0)),
        ("2026-12-05 10:00:00.123", "Asia/Shanghai", utc_ms(2026, 12, 5, 2, 0, 0, ms=123)),
        ("2026-07-01T12:00:00.5", "Europe/Berlin", utc_ms(2026, 7, 1, 10, 0, 0, ms=500)),
        # date only: the start of that day in the configured zone (never later than the fact)
        ("2026-12-06", "UTC", utc_ms(2026, 12, 6)),
        ("2026-12-06", "Asia/Shanghai", utc_ms(2026, 12, 5, 16, 0, 0)),
        ("2026-03-29", "Europe/Berlin", utc_ms(2026, 3, 28, 23, 0, 0)),  # the day DST starts
    ],
)
def test_iso8601(text: str, zone: str, expected: int) -> None:
    parse = parser_for("iso8601", zone)
    assert parse(text) == expected
    assert parse(text) == expected  # cached
    assert parse_time(text, "iso8601", zone) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "2026-12",
        "2026-12-6",
        "2026-02-30",
        "2026-12-06T",
        "2026-12-06 10:00",
        "2026-12-06T25:00:00",
        "2026-12-06T10:00:00+0800",
        "06/12/2026",
        "2026-12-06garbage",
    ],
)
def test_iso8601_garbage(text: str) -> None:
    with pytest.raises(TimeParseError, match=r"ISO 8601|out of range"):
        parser_for("iso8601", "Asia/Shanghai")(text)


@pytest.mark.parametrize("value", [None, 1769479200, 1.0])
def test_iso8601_refuses_non_strings(value: object) -> None:
    with pytest.raises(TimeParseError, match="expected an ISO 8601 string"):
        parser_for("iso8601", "UTC")(value)


def test_rfc3339_still_requires_an_offset() -> None:
    # the strict format stays strict: offset-less times are accepted only where configured
    with pytest.raises(TimeParseError):
        parser_for("rfc3339", "Asia/Shanghai")("2021-01-14T00:52:00")
    with pytest.raises(TimeParseError):
        parser_for("rfc3339", "Asia/Shanghai")("2026-12-06")
