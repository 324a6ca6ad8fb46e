"""Order ids, tracking numbers and the names of channels and carriers.

The channel sync service's rule: a global order id is a channel code, a date
(yyyymmdd) and a sequence (`TB2026012700123`); a refund order is
`REF-<global id>-<nn>` and belongs to its original order. Ids are case-sensitive;
surrounding whitespace is noise. Sources name carriers and channels loosely
("SF", "J&T", "UPS"), so names resolve through configured aliases,
case-insensitively. Everything is compiled once; lookups are cached because the
same ids and tracking numbers recur across an order's events.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

if TYPE_CHECKING:
    from schemas.config import CarrierSpec, ChannelSpec, Settings

__all__ = ["IdRules", "OrderRef"]

_CACHE_MAX = 1 << 12  # small: a cache must not cost memory per order
K = TypeVar("K")
V = TypeVar("V")
_DATE = r"[0-9]{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"


class OrderRef(NamedTuple):
    """A parsed order id: the global id state is keyed by, the refund id, the channel."""

    order_id: str
    refund_id: str | None
    channel: str


_UNKNOWN: Any = object()
_new = tuple.__new__


def _remember(cache: dict[K, V], key: K, value: V) -> V:
    """Bounded memo: cleared when full (the values are pure, so only speed changes)."""
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


def _names(key: str, aliases: list[str], *extra: str) -> dict[str, str]:
    """Each name as written (the common exact hit) and casefolded (the fallback)."""
    names = (key, *extra, *aliases)
    return {**{n: key for n in names}, **{n.casefold(): key for n in names}}


class IdRules:
    """The id rules for one configuration (channel codes, carrier patterns, aliases)."""

    def __init__(
        self, channels: Mapping[str, ChannelSpec], carriers: Mapping[str, CarrierSpec]
    ) -> None:
        self._channel_of_code = {spec.code: name for name, spec in channels.items()}
        self.channel_named = frozenset(
            name for name, spec in channels.items() if spec.canonical_id == "channel"
        )
        """The channels whose orders are named by their own ids (`canonical_id: channel`)."""
        codes = "|".join(re.escape(c) for c in sorted(self._channel_of_code, key=len, reverse=True))
        glob = f"({codes}){_DATE}[0-9]+" if codes else "(?!)"  # group: the channel code
        self._global = re.compile(glob + r"\Z")
        self._refund = re.compile(f"REF-({glob})-[0-9]{{2,}}\\Z")  # groups: original, code
        self._channels: dict[str, str] = {}
        for name, ch in channels.items():
            self._add_names(self._channels, _names(name, ch.aliases, ch.code), "channel")
        self._carriers: dict[str, str] = {}
        for name, ca in carriers.items():
            self._add_names(self._carriers, _names(name, ca.aliases), "carrier")
        self._patterns = {name: re.compile(spec.pattern) for name, spec in carriers.items()}
        self._order_cache: dict[str, OrderRef | None] = {}
        self._tracking_cache: dict[tuple[str, str | None], tuple[str | None, bool]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> IdRules:
        return cls(settings.channels, settings.carriers)

    @staticmethod
    def _add_names(into: dict[str, str], names: dict[str, str], what: str) -> None:
        for alias, key in names.items():
            other = into.setdefault(alias, key)
            if other != key:
                raise ValueError(f"{what} name {alias!r} is an alias of both {other} and {key}")

    # ------------------------------------------------------------------ orders
    def parse_order_id(self, value: str) -> OrderRef | None:
        """The global id (a refund id routed to its original), or None if not an id."""
        ref = self._order_cache.get(value, _UNKNOWN)
        if ref is _UNKNOWN:
            ref = _remember(self._order_cache, value, self._parse(value.strip()))
        return ref

    def _parse(self, value: str) -> OrderRef | None:
        # most ids are seen once in a cache's life: tuple.__new__ skips OrderRef's Python __new__
        m = self._global.match(value)
        if m is not None:
            return _new(OrderRef, (value, None, self._channel_of_code[m.group(1)]))
        m = self._refund.match(value)
        if m is not None:
            return _new(OrderRef, (m.group(1), value, self._channel_of_code[m.group(2)]))
        return None

    def channel_for_code(self, code: str) -> str | None:
        """`TB` -> `taobao` (codes are case-sensitive, like the ids)."""
        return self._channel_of_code.get(code)

    # ------------------------------------------------------------------ names
    def resolve_channel(self, name: str) -> str | None:
        """A channel key from its key, code or alias, any case; None if unknown."""
        return self._channels.get(name) or self._channels.get(name.strip().casefold())

    def resolve_carrier(self, name: str) -> str | None:
        """A carrier key from its key or alias, any case ("J&T" -> jt); None if unknown."""
        return self._carriers.get(name) or self._carriers.get(name.strip().casefold())

    # ------------------------------------------------------------------ tracking numbers
    @staticmethod
    def clean_tracking(value: str) -> str | None:
        """Whitespace stripped; an empty tracking number is no tracking number."""
        value = value.strip()
        return value or None

    def check_tracking(self, tracking: str, carrier: str | None) -> tuple[str | None, bool]:
        """(carrier, valid): the given carrier's pattern decides validity; without a
        known carrier, the one carrier whose pattern matches, if exactly one does."""
        key = (tracking, carrier)
        hit = self._tracking_cache.get(key)
        if hit is None:
            hit = _remember(self._tracking_cache, key, self._check(tracking, carrier))
        return hit

    def _check(self, tracking: str, carrier: str | None) -> tuple[str | None, bool]:
        pattern = self._patterns.get(carrier) if carrier is not None else None
        if pattern is not None:
            return carrier, pattern.fullmatch(tracking) is not None
        matching = [name for name, p in self._patterns.items() if p.fullmatch(tracking)]
        if len(matching) == 1:
            return matching[0], True
        return carrier, False

    def infer_carrier(self, tracking: str) -> str | None:
        """The only carrier whose pattern matches, or None (no match, or ambiguous)."""
        return self.check_tracking(tracking, None)[0]
