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


class IdTable:
    """One string per id while a process restores its steps.

    Live, an order's references and tracking numbers are the very strings the reference
    index keys them by, and most index entries name their order with the shard's string.
    Unpacked apart, each step would hold its own copy (~200 bytes an open order more after
    a restart). So the wiring hands every step it resumes one table (`dataflows.flow`) and
    empties it at the first epoch close, when the state alone holds the strings. An unpack
    given no table shares ids within itself only.
    """

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item: str) -> bool:
        return item in self._ids

    def strs(self, items: list[str]) -> list[str]:
        """The table's string for each of `items` (an item new to it becomes it)."""
        return list(map(self._ids.setdefault, items, items))

    def field(self, value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
        """`strs` for an order's id field: one id, a tuple of them, or None."""
        if value is None:
            return None
        table = self._ids
        if isinstance(value, str):
            return table.setdefault(value, value)
        return tuple(map(table.setdefault, value, value))

    def clear(self) -> None:
        """Restoring is over: the state holds the strings, the table need not. Every step's
        every snapshot calls it: an empty table is left as it is, not replaced."""
        if self._ids:
            self._ids = {}


def pack_map(d: dict[str, str]) -> tuple[PackedStrs, PackedStrs]:
    """A str -> str dict as two joined columns (keys, values)."""
    return pack_strs(list(d)), pack_strs(list(d.values()))


def unpack_map(packed: tuple[PackedStrs, PackedStrs], ids: IdTable | None = None) -> dict[str, str]:
    """`pack_map`'s dict, its keys and values through `ids` (a table of its own if none)."""
    keys, values = packed
    table = IdTable() if ids is None else ids
    return dict(zip(table.strs(unpack_strs(keys)), table.strs(unpack_strs(values)), strict=True))


_EVENT_FIELDS = tuple(f.name for f in fields(Event))
_event_row = attrgetter(*_EVENT_FIELDS)


def pack_events(events: list[Event]) -> list[tuple[Any, ...]]:
    """Events as plain tuples: pickling a slotted dataclass calls Python per event (~7 us)."""
    return [_event_row(e) for e in events]


def unpack_events(rows: list[tuple[Any, ...]]) -> list[Event]:
    return [Event(*row) for row in rows]
