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


_RESTORED: dict[str, str] = {}
"""Each id restored since the run began, once. Live, an order's references and tracking
numbers are the very strings the reference index keys them by, and most index entries
name their order with the shard's string; unpacked apart, each step would hold its own
copy (~200 bytes an open order more after a restart). The steps of a process restore in
turn, through this table; `forget_restored` empties it at the first epoch close."""


def shared_strs(items: list[str]) -> list[str]:
    """The restored table's string for each of `items` (an item new to it becomes it)."""
    return list(map(_RESTORED.setdefault, items, items))


def shared_ids(value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
    """`shared_strs` for an order's id field: one id, a tuple of them, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return _RESTORED.setdefault(value, value)
    return tuple(map(_RESTORED.setdefault, value, value))


def forget_restored() -> None:
    """Restoring is over: the state holds the strings, the table need not."""
    if _RESTORED:
        _RESTORED.clear()


def pack_map(d: dict[str, str]) -> tuple[PackedStrs, PackedStrs]:
    """A str -> str dict as two joined columns (keys, values)."""
    return pack_strs(list(d)), pack_strs(list(d.values()))


def unpack_map(packed: tuple[PackedStrs, PackedStrs]) -> dict[str, str]:
    keys, values = packed
    return dict(zip(shared_strs(unpack_strs(keys)), shared_strs(unpack_strs(values)), strict=True))


_EVENT_FIELDS = tuple(f.name for f in fields(Event))
_event_row = attrgetter(*_EVENT_FIELDS)


def pack_events(events: list[Event]) -> list[tuple[Any, ...]]:
    """Events as plain tuples: pickling a slotted dataclass calls Python per event (~7 us)."""
    return [_event_row(e) for e in events]


def unpack_events(rows: list[tuple[Any, ...]]) -> list[Event]:
    return [Event(*row) for row in rows]
