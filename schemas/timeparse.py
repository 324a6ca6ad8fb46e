"""Every time format the sources send, to UTC epoch milliseconds.

Formats: RFC 3339 with an offset or `Z` (the offset is applied, never cut off),
naive `YYYY-MM-DD HH:MM:SS` in a configured zone, ISO 8601 whose offset is
optional (with one: RFC 3339; without: naive in the configured zone; a date
alone: the start of that day there), epoch seconds, epoch milliseconds. The
parser runs once or twice per event, so it works from caches: an RFC 3339
string is split into its minute ("2026-01-27T02:00") and its tail (":02.000Z"),
a naive one into its local hour and ":MM:SS"; each part is validated and
converted once, then looked up. Fractions below a millisecond are truncated.

Naive local times that a daylight-saving change makes ambiguous or impossible
resolve deterministically with PEP 495 `fold=0`: a repeated time is the first
(earlier) instant; a skipped time is read with the offset in force before the
change (02:30 in a spring-forward gap lands at 03:30 new time).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "TimeParseError",
    "parse_epoch_ms",
    "parse_epoch_s",
    "parse_naive",
    "parse_rfc3339",
    "parse_time",
    "parser_for",
]


class TimeParseError(ValueError):
    """A time value that is not in the expected format (the message says which)."""


_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
_MS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_CACHE_MAX = 1 << 12  # per cache; cleared when full (values are pure, so only speed changes)

_MINUTE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})\Z")
_RFC_TAIL = re.compile(r":([0-9]{2})(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))\Z")
_HOUR = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2})\Z")
_NAIVE_TAIL = re.compile(r":([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?\Z")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_NUMBER = re.compile(r"([0-9]{1,20})(?:\.([0-9]{1,20}))?\Z")


def wall_clock_ms() -> int:
    """Epoch ms now. Nothing can have been received after it: the bound of every
    `received_at`, and the instant the Redis view's times to live count from."""
    return int(time.time() * 1000)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _frac_ms(digits: str | None) -> int:
    return int(digits[:3].ljust(3, "0")) if digits else 0


def _put(cache: dict[str, int | None], key: str, value: int | None) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


# ------------------------------------------------------------------ RFC 3339
_utc_minutes: dict[str, int | None] = {}
_rfc_tails: dict[str, int | None] = {}


def _rfc_error(s: str) -> TimeParseError:
    return TimeParseError(
        f"{_show(s)} is not an RFC 3339 time with an offset (like 2026-02-11T18:44:22+01:00)"
    )


def _utc_minute(key: str) -> int:
    m = _MINUTE.match(key)
    if m is None:
        raise TimeParseError("no date and time")
    y, mo, d, h, mi = map(int, m.groups())
    try:
        dt = datetime(y, mo, d, h, mi)
    except ValueError as e:
        raise TimeParseError(str(e)) from None
    ms = (dt - _EPOCH) // _MS
    _put(_utc_minutes, key, ms)
    return ms


def _rfc_tail(tail: str) -> int:
    """Milliseconds to add to the minute: seconds and fraction, minus the offset."""
    m = _RFC_TAIL.match(tail)
    if m is None:
        raise TimeParseError("no seconds, or no offset (Z or ±HH:MM)")
    sec, frac, sign, oh, om = m.groups()
    if int(sec) > 60:  # 60: a leap second, counted into the next minute
        raise TimeParseError(f"second {sec} out of range")
    off = 0
    if sign is not None:
        if int(oh) > 23 or int(om) > 59:
            raise TimeParseError(f"offset {sign}{oh}:{om} out of range")
        off = (int(oh) * 60 + int(om)) * 60_000
        if sign == "-":
            off = -off
    ms = int(sec) * 1000 + _frac_ms(frac) - off
    _put(_rfc_tails, tail, ms)
    return ms


_SECOND_HEADS = {f":{sec:02d}": sec * 1000 for sec in range(60)}
_MILLI_Z_TAILS = {f".{milli:03d}Z": milli for milli in range(1000)}
"""The ingestion stamp's ":SS" and ".mmmZ", whole tables built once: no regex, no churn."""


def parse_rfc3339(s: str) -> int:
    """`2026-02-11T18:44:22.5+01:00` or `...Z` to UTC epoch ms; an offset is required."""
    if type(s) is not str:
        raise TimeParseError(f"expected an RFC 3339 string, got {_show(s)}")
    key = s[:16]
    tail = s[16:]
    base = _utc_minutes.get(key)
    if base is not None:
        if len(tail) == 8:  # the ingestion stamp's own shape, ":SS.mmmZ"
            sec = _SECOND_HEADS.get(tail[:3])
            milli = _MILLI_Z_TAILS.get(tail[3:])
            if sec is not None and milli is not None:
                return base + sec + milli
        delta = _rfc_tails.get(tail)
        if delta is not None:
            ms = base + delta
            if not 0 <= ms <= _MS_MAX:
                raise TimeParseError(f"{_show(s)} is out of range")
            return ms
    else:
        delta = _rfc_tails.get(tail)
    try:
        if base is None:
            base = _utc_minute(key)
        if delta is None:
            delta = _rfc_tail(tail)
    except TimeParseError as e:
        raise TimeParseError(f"{_rfc_error(s)}: {e}") from None
    ms = base + delta
    if not 0 <= ms <= _MS_MAX:
        raise TimeParseError(f"{_show(s)} is out of range")
    return ms


# ------------------------------------------------------------------ naive local time
_naive_tails: dict[str, int | None] = {}
_TRANSITION = -1  # an hour containing an offset change: computed per call, never cached


def _naive_tail(tail: str) -> int:
    """Milliseconds into the hour of ":MM:SS(.fff)"."""
    m = _NAIVE_TAIL.match(tail)
    if m is None:
        raise TimeParseError("no minutes and seconds")
    mi, sec, frac = m.groups()
    if int(mi) > 59 or int(sec) > 60:
        raise TimeParseError(f"minute {mi} or second {sec} out of range")
    ms = (int(mi) * 60 + int(sec)) * 1000 + _frac_ms(frac)
    _put(_naive_tails, tail, ms)
    return ms


def _local_hour(zone: ZoneInfo, key: str) -> datetime:
    m = _HOUR.match(key)
    if m is None:
        raise TimeParseError("no date and hour")
    y, mo, d, h = map(int, m.groups())
    try:
        return datetime(y, mo, d, h)
    except ValueError as e:
        raise TimeParseError(str(e)) from None


def _offset_ms(zone: ZoneInfo, local: datetime) -> int:
    off = local.replace(tzinfo=zone, fold=0).utcoffset()
    return (off or timedelta(0)) // _MS


def _naive_parser(zone_name: str) -> Callable[[str], int]:
    """A parser for one zone, with its own cache of local hour -> UTC ms of its start."""
    zone = ZoneInfo(zone_name)
    hours: dict[str, int | None] = {}
    last_ms = timedelta(minutes=59, seconds=59, milliseconds=999)

    def hour_start(key: str) -> int:
        local = _local_hour(zone, key)
        off = _offset_ms(zone, local)
        constant = off == _offset_ms(zone, local + last_ms)
        ms = (local - _EPOCH) // _MS - off
        _put(hours, key, ms if constant else _TRANSITION)
        return ms if constant else _TRANSITION

    def parse(s: str) -> int:
        if type(s) is not str:
            raise TimeParseError(f"expected a 'YYYY-MM-DD HH:MM:SS' string, got {_show(s)}")
        key = s[:13]
        tail = s[13:]
        base = hours.get(key)
        delta = _naive_tails.get(tail)
        try:
            if base is None:
                base = hour_start(key)
            if delta is None:
                delta = _naive_tail(tail)
        except TimeParseError as e:
            try:  # an explicit offset is unambiguous: honour it rather than reject it
                return parse_rfc3339(s)
            except TimeParseError:
                pass
            raise TimeParseError(
                f"{_show(s)} is not a 'YYYY-MM-DD HH:MM:SS' time in {zone_name}: {e}"
            ) from None
        if base == _TRANSITION:
            local = _local_hour(zone, key) + timedelta(milliseconds=delta)
            ms = (local - _EPOCH) // _MS - _offset_ms(zone, local)
        else:
            ms = base + delta
        if not 0 <= ms <= _MS_MAX:
            raise TimeParseError(f"{_show(s)} is out of range")
        return ms

    return parse


_naive_parsers: dict[str, Callable[[str], int]] = {}


def _naive_for(zone: str) -> Callable[[str], int]:
    parser = _naive_parsers.get(zone)
    if parser is None:
        try:
            parser = _naive_parser(zone)
        except (KeyError, ValueError, OSError, TypeError):  # ZoneInfoNotFoundError: KeyError
            raise TimeParseError(f"unknown time zone {_show(zone)}") from None
        _naive_parsers[zone] = parser
    return parser


def parse_naive(s: str, zone: str) -> int:
    """`2026-01-27 10:00:00` read as local time in `zone` (an IANA name) to UTC epoch ms."""
    return _naive_for(zone)(s)


# ------------------------------------------------------------------ ISO 8601, offset optional
def _iso8601_parser(zone_name: str) -> Callable[[str], int]:
    """RFC 3339 first (the common case costs what it did); then the local forms.

    A date alone is read as the start of that day: the earliest instant the fact can
    be true, so it never lands ahead of the ingestion clock or after a later scan.
    """
    naive = _naive_for(zone_name)

    def parse(s: str) -> int:
        if type(s) is not str:
            raise TimeParseError(f"expected an ISO 8601 string, got {_show(s)}")
        try:
            return parse_rfc3339(s)
        except TimeParseError:
            pass
        try:
            return naive(s + "T00:00:00" if _DATE.match(s) else s)
        except TimeParseError as e:
            raise TimeParseError(
                f"{_show(s)} is not an ISO 8601 time (with an offset; local to {zone_name}, "
                f"like 2021-01-14T00:52:00; or a date, like 2026-12-06): {e}"
            ) from None

    return parse


_iso8601_parsers: dict[str, Callable[[str], int]] = {}


def _iso8601_for(zone: str) -> Callable[[str], int]:
    parser = _iso8601_parsers.get(zone)
    if parser is None:
        parser = _iso8601_parsers[zone] = _iso8601_parser(zone)
    return parser


# ------------------------------------------------------------------ epoch numbers
def _epoch(value: object, scale: int, unit: str) -> int:
    t = type(value)
    if t is int:
        ms = value * scale  # type: ignore[operator]
    elif t is float:
        scaled = value * scale  # type: ignore[operator]
        if not 0 <= scaled <= _MS_MAX:  # also refuses NaN and the infinities
            raise TimeParseError(f"{_show(value)} epoch {unit} is out of range")
        ms = round(scaled)
    elif t is str:
        m = _NUMBER.match(value)  # type: ignore[arg-type]
        if m is None:
            raise TimeParseError(f"{_show(value)} is not a number of epoch {unit}")
        whole, frac = m.groups()
        ms = int(whole) * scale
        if frac:
            ms += int(frac[:6].ljust(6, "0")) * scale // 1_000_000
    else:
        raise TimeParseError(f"{_show(value)} is not a number of epoch {unit}")
    if not 0 <= ms <= _MS_MAX:
        raise TimeParseError(f"{_show(value)} epoch {unit} is out of range")
    return ms


def parse_epoch_s(value: int | float | str) -> int:
    """Epoch seconds (int, float or numeric string) to epoch ms."""
    return _epoch(value, 1000, "seconds")


def parse_epoch_ms(value: int | float | str) -> int:
    """Epoch milliseconds (int, float or numeric string) to epoch ms."""
    return _epoch(value, 1, "milliseconds")


# ------------------------------------------------------------------ by configured format
def parser_for(fmt: str, zone: str = "UTC") -> Callable[[object], int]:
    """The parser for a source's `time_format` (built once per source, called per event)."""
    if fmt == "rfc3339":
        return parse_rfc3339  # type: ignore[return-value]
    if fmt == "naive":
        return _naive_for(zone)  # type: ignore[return-value]
    if fmt == "iso8601":
        return _iso8601_for(zone)  # type: ignore[return-value]
    if fmt == "epoch_s":
        return parse_epoch_s  # type: ignore[return-value]
    if fmt == "epoch_ms":
        return parse_epoch_ms  # type: ignore[return-value]
    raise TimeParseError(f"unknown time format {_show(fmt)}")


def parse_time(value: object, fmt: str, zone: str = "UTC") -> int:
    """Parse one value in a configured format: rfc3339, naive, iso8601, epoch_s or epoch_ms."""
    return parser_for(fmt, zone)(value)


_SECONDS: dict[int, str] = {}
_MINUTES: dict[int, str] = {}
_DAYS: dict[int, str] = {}
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))
_MILLIS_Z = tuple(f"{n:03d}Z" for n in range(1000))


def _second_prefix(sec: int) -> str:
    """`2026-03-02T04:25:17.` of an epoch second; the date from strftime, once a day."""
    minute, s = divmod(sec, 60)
    prefix = _MINUTES.get(minute)
    if prefix is None:
        day, rest = divmod(minute, 1440)
        date = _DAYS.get(day)
        if date is None:
            date = datetime.fromtimestamp(day * 86400, tz=UTC).strftime("%Y-%m-%dT")
            _put_text(_DAYS, day, date)
        hour, mi = divmod(rest, 60)
        prefix = f"{date}{_TWO_DIGITS[hour]}:{_TWO_DIGITS[mi]}:"
        _put_text(_MINUTES, minute, prefix)
    prefix = f"{prefix}{_TWO_DIGITS[s]}."
    _put_text(_SECONDS, sec, prefix)
    return prefix


def _put_text(cache: dict[int, str], key: int, value: str) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


def iso(ms: int | None) -> str | None:
    """UTC RFC 3339 with milliseconds and Z. Hot (every output record's times): a
    second's text is cached, built from its minute's (a day of minutes fits the cache)."""
    if ms is None:
        return None
    sec, milli = divmod(ms, 1000)
    prefix = _SECONDS.get(sec)
    if prefix is None:
        prefix = _second_prefix(sec)
    return prefix + _MILLIS_Z[milli]


def implausible_received(received_ms: int, not_after: int | None) -> str | None:
    """Why a `received_at` is implausible, or None: after `not_after`, the latest the
    ingestion clock allows (`pipeline.max_clock_ahead` ahead of it). Such a time is an
    input error, not a clock: taken, it would carry every deadline and breaker with it."""
    if not_after is None or received_ms <= not_after:
        return None
    return (
        f"envelope received_at is {(received_ms - not_after) / 1000:g} s after {iso(not_after)}, "
        "the latest the ingestion clock allows: too far ahead of the ingestion clock"
    )
