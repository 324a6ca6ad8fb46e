"""Time units and the payload time formats of the sources.

Formatting is the generator's hottest path, so every format caches its per-minute
prefix and only the seconds (and milliseconds) are formatted per event. All times are
integer UTC epoch milliseconds; payload times are floored to the second, which keeps
them at or before the instant they describe.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

SECOND = 1_000
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Prefixer = Callable[[int], tuple[str, int]]


def to_ms(dt: datetime) -> int:
    """Epoch milliseconds of a datetime; a naive one is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _prefixer(fmt: str, offset_min: int) -> Prefixer:
    """ms -> (cached "…HH:MM:" prefix of the wall time at offset_min, seconds)."""
    cache: dict[int, str] = {}
    shift = offset_min * 60

    def prefix(ms: int) -> tuple[str, int]:
        minute, sec = divmod(ms // 1000 + shift, 60)
        p = cache.get(minute)
        if p is None:
            p = cache[minute] = datetime.fromtimestamp(minute * 60, UTC).strftime(fmt)
        return p, sec

    return prefix


_ISO = "%Y-%m-%dT%H:%M:"
_utc = _prefixer(_ISO, 0)
_cn = _prefixer("%Y-%m-%d %H:%M:", 480)
_offset: dict[int, tuple[Prefixer, str]] = {}


def utc_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds: received_at, PayPal create_time."""
    p, s = _utc(ms)
    return f"{p}{s:02d}.{ms % 1000:03d}Z"


def utc_s(ms: int) -> str:
    """RFC 3339 UTC to the second: WMS `at`, carrier_api `at`, English OMS."""
    p, s = _utc(ms)
    return f"{p}{s:02d}Z"


def cn_naive(ms: int) -> str:
    """Naive `YYYY-MM-DD HH:MM:SS` Asia/Shanghai wall time (Chinese platforms, carriers)."""
    p, s = _cn(ms)
    return f"{p}{s:02d}"


def with_offset(ms: int, offset_min: int) -> str:
    """RFC 3339 wall time at a fixed offset, e.g. +08:00, -05:00, +01:00."""
    entry = _offset.get(offset_min)
    if entry is None:
        sign = "+" if offset_min >= 0 else "-"
        h, m = divmod(abs(offset_min), 60)
        entry = _offset[offset_min] = (_prefixer(_ISO, offset_min), f"{sign}{h:02d}:{m:02d}")
    prefix, suffix = entry
    p, s = prefix(ms)
    return f"{p}{s:02d}{suffix}"


def cn_date(ms: int) -> str:
    """yyyymmdd in Asia/Shanghai (order ids of Chinese channels)."""
    return cn_naive(ms)[:10].replace("-", "")


def utc_date(ms: int) -> str:
    return utc_s(ms)[:10].replace("-", "")


def cn_hour(ms: int) -> float:
    """Fractional Asia/Shanghai hour of the day, for the day curve."""
    return ((ms + 8 * HOUR) % DAY) / HOUR
