"""Time units and the payload time formats of the sources.

Formatting is the generator's hottest path, so every format caches its per-minute
prefix and only the seconds (and milliseconds) are formatted per event. All times are
integer UTC epoch milliseconds; payload times are floored to the second, which keeps
them at or before the instant they describe.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

SECOND = 1_000
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(dt: datetime) -> int:
    """Epoch milliseconds of a datetime; a naive one is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


_SEC = [f"{i:02d}" for i in range(60)]
_MS = [f"{i:03d}" for i in range(1000)]


class _Prefixes(dict[int, str]):
    """Wall-clock minute (epoch seconds + zone offset, // 60) -> "…HH:MM:", built on first use."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.fmt = fmt

    def __missing__(self, minute: int) -> str:
        p = self[minute] = datetime.fromtimestamp(minute * 60, UTC).strftime(self.fmt)
        return p


_ISO = "%Y-%m-%dT%H:%M:"
_UTC = _Prefixes(_ISO)
_CN = _Prefixes("%Y-%m-%d %H:%M:")
_OFFSET: dict[int, tuple[_Prefixes, str]] = {}
_CN_SHIFT = 8 * 3600


def utc_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds: received_at, PayPal create_time."""
    s, milli = divmod(ms, 1000)
    m, sec = divmod(s, 60)
    return f"{_UTC[m]}{_SEC[sec]}.{_MS[milli]}Z"


def utc_s(ms: int) -> str:
    """RFC 3339 UTC to the second: WMS `at`, carrier_api `at`, English OMS."""
    m, sec = divmod(ms // 1000, 60)
    return f"{_UTC[m]}{_SEC[sec]}Z"


def cn_naive(ms: int) -> str:
    """Naive `YYYY-MM-DD HH:MM:SS` Asia/Shanghai wall time (Chinese platforms, carriers)."""
    m, sec = divmod(ms // 1000 + _CN_SHIFT, 60)
    return f"{_CN[m]}{_SEC[sec]}"


def with_offset(ms: int, offset_min: int) -> str:
    """RFC 3339 wall time at a fixed offset, e.g. +08:00, -05:00, +01:00."""
    entry = _OFFSET.get(offset_min)
    if entry is None:
        sign = "+" if offset_min >= 0 else "-"
        h, m = divmod(abs(offset_min), 60)
        entry = _OFFSET[offset_min] = (_Prefixes(_ISO), f"{sign}{h:02d}:{m:02d}")
    prefixes, suffix = entry
    m, sec = divmod(ms // 1000 + offset_min * 60, 60)
    return f"{prefixes[m]}{_SEC[sec]}{suffix}"


def cn_date(ms: int) -> str:
    """yyyymmdd in Asia/Shanghai (order ids of Chinese channels)."""
    return cn_naive(ms)[:10].replace("-", "")


def utc_date(ms: int) -> str:
    return utc_s(ms)[:10].replace("-", "")


def cn_hour(ms: int) -> float:
    """Fractional Asia/Shanghai hour of the day, for the day curve."""
    return ((ms + 8 * HOUR) % DAY) / HOUR
