"""Compact snapshot forms: few large objects instead of millions of small ones.

A snapshot pickles the whole state at every epoch close. Pickle pays per object (a
memo entry, an opcode, a Python call for a dataclass), so a million strings or events
cost seconds; a few long strings and bytes cost a copy. These helpers turn the shapes
the state holds into such blobs and back, falling back to the plain value when a
string holds the separator (no id should, but nothing here assumes it).
"""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter
from typing import Any

from schemas.event import Event

SEP = "\x00"
"""Between the strings of a joined column (the NUL character)."""

PackedStrs = tuple[int, str] | list[str]


def pack_strs(items: list[str]) -> PackedStrs:
    """Strings as (count, one joined string); the list itself when one holds `SEP`."""
    joined = SEP.join(items)
    if items and joined.count(SEP) != len(items) - 1:
        return items
    return len(items), joined


def unpack_strs(packed: PackedStrs) -> list[str]:
    if isinstance(packed, list):
        return packed
    n, joined = packed
    return joined.split(SEP) if n else []


def pack_map(d: dict[str, str]) -> tuple[PackedStrs, PackedStrs]:
    """A str -> str dict as two joined columns (keys, values)."""
    return pack_strs(list(d)), pack_strs(list(d.values()))


def unpack_map(packed: tuple[PackedStrs, PackedStrs]) -> dict[str, str]:
    keys, values = packed
    return dict(zip(unpack_strs(keys), unpack_strs(values), strict=True))


_EVENT_FIELDS = tuple(f.name for f in fields(Event))
_event_row = attrgetter(*_EVENT_FIELDS)


def pack_events(events: list[Event]) -> list[tuple[Any, ...]]:
    """Events as plain tuples: pickling a slotted dataclass calls Python per event (~7 us)."""
    return [_event_row(e) for e in events]


def unpack_events(rows: list[tuple[Any, ...]]) -> list[Event]:
    return [Event(*row) for row in rows]
