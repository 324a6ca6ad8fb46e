"""The evidence rules: how one normalized event moves an order's derived status.

Rules, each named so a reader finds it here in one hop:

- MAIN PATH ADVANCES ONLY: the derived main-path status is the furthest one any
  source has evidenced; a late or stale claim stays in the timeline only.
- TRACKING LOCK: a valid tracking number puts the order at LABEL_CREATED or later.
- SIDE STATES are facts beside the main path (cancelled, refund, exception, ...).
  A newer side claim replaces the current one when it weighs at least as much
  (`SIDE_WEIGHT`), or when the current one is transient (hold, exception).
- LOGISTICS SIDE CLAIMS MUST BE NEWER than the latest main-path evidence: an old
  "exception" scan does not undo a later "in transit".
- PROGRESS CLEARS TRANSIENT SIDES: a later main-path claim ends ON_HOLD; a later
  carrier-or-better scan (PICKED_UP or further) ends DELIVERY_EXCEPTION.
- PRECEDENCE: a transient side set by a source can only be cleared by a source of
  the same or higher precedence tier (gateway/carrier 4, wms 3, channel 2, oms 1).
- The OMS status is also recorded as the *reported* status being checked.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from itertools import accumulate, chain, compress, count
from operator import attrgetter

from schemas.event import Event
from schemas.statuses import RANK, conditional
from state.packing import IdTable, pack_strs, unpack_strs
from state.reference_index import TRACKING

TIER: dict[str, int] = {"gateway": 4, "carrier": 4, "wms": 3, "channel": 2, "oms": 1}
"""Precedence: payment gateway over channel over OMS; carrier over WMS over channel over OMS."""

SIDE_WEIGHT: dict[str, int] = {
    "ON_HOLD": 1,
    "DELIVERY_EXCEPTION": 2,
    "RETURNING": 3,
    "REFUND_REQUESTED": 4,
    "RETURNED": 5,
    "CANCELLED": 6,
    "CLOSED_UNPAID": 6,
    "REFUNDED": 7,
}
TRANSIENT_SIDES = frozenset({"ON_HOLD", "DELIVERY_EXCEPTION"})
LOGISTICS_SIDES = frozenset({"DELIVERY_EXCEPTION", "RETURNING", "RETURNED"})
CLOSED_SIDES = frozenset({"CANCELLED", "CLOSED_UNPAID"})
TERMINAL = frozenset({"COMPLETED", "CANCELLED", "CLOSED_UNPAID", "REFUNDED", "RETURNED"})

PAID_RANK = RANK["PAID"]
LABEL_RANK = RANK["LABEL_CREATED"]
PICKUP_RANK = RANK["PICKED_UP"]
DELIVERED_RANK = RANK["DELIVERED"]

REF_SEP = "\x1f"
"""Between the references of a joined `Order.refs`, as snapshots before tuples held them
(the ASCII unit separator: no id holds one)."""

# Order.flags bits: event-triggered conditions the alert rules read.
F_REGRESSION = 1  # the OMS reported a status behind the evidence
F_DUP_RISK = 2  # reship / second tracking number after the carrier delivered
F_PAID_AFTER_CLOSE = 4  # a gateway payment succeeded after the order was closed
F_POST_DELIVERY = 8  # a returning/exception scan after delivered


# Order indexes: every time an order keeps, packed in the Order itself (an `array` of
# 8-byte ints: a 32-byte int object per field, or a separate array object, would cost
# more, and memory per open order is the budget).
MAIN_MS = 0  # event ms of the claim that set `main`
SIDE_MS = 1  # event ms of the side claim
SINCE = 2  # ingestion ms the current status (or the PAID band) began
PAID_AT = 3  # ingestion ms of the first gateway payment success
PAID_EV_MS = 4  # event ms of the latest gateway payment success
CLOSED_EV_MS = 5  # event ms of the latest cancel/close
DELIVERED_AT = 6  # ingestion ms of the carrier's delivered scan
DELIVERED_MS = 7  # event ms of that scan
CARRIER_MS = 8  # ingestion ms of the last carrier event
LAST_AT = 9  # ingestion ms of the last event
DUE = 10  # next deadline registered with the shard's timer wheel
LABEL_MS = 11  # earliest event ms that evidenced a tracking number
LABEL_AT = 12  # ingestion ms the main path reached LABEL_CREATED (state.stages)
PICKUP_AT = 13  # ingestion ms the main path reached PICKED_UP (state.stages)
_TIMES = 14
_TIMES_BYTES = 8 * _TIMES
_ZEROS = array("q", bytes(_TIMES_BYTES))
"""An order's times start as a copy of this: an array built from an array of its type is
allocated to size, one built from bytes with room to grow (24 bytes more an order)."""
_new_array = array.__new__


class Order(array):
    """Per-order state, kept compact: one of these per open order is the memory budget.

    The order *is* its packed times (`o[LAST_AT]`), with its other fields in slots: one
    object instead of two saves ~40 bytes an order. `o.t` is the same array, for readers
    written against the older layout.
    """

    __slots__ = (
        "alerts",
        "carrier",
        "channel",
        "customer",
        "flags",
        "main",
        "refs",
        "reported",
        "seen",
        "side",
        "side_tier",
        "status",
        "tracking",
        "version",
    )

    def __new__(cls) -> Order:
        o = _new_array(cls, "q", _ZEROS)
        o.status = None  # derived
        o.main = None  # furthest main-path status evidenced
        o.side = None
        o.side_tier = 0
        o.reported = None  # OMS's latest, canonicalized
        o.tracking = None  # str | tuple[str, ...] | None
        o.refs = None  # str | tuple[str, ...] | None: other ids (`taobao:3456…`)
        o.carrier = None
        o.channel = None
        o.customer = None
        o.version = 0
        o.flags = 0
        # open alert type -> (first_seen ms, the `since` it fired for)
        o.alerts = None
        o.seen = b""  # 4-byte digests of event identities, oldest first
        return o

    # the slots' types, for readers (assigned in __new__)
    status: str | None
    main: str | None
    side: str | None
    side_tier: int
    reported: str | None
    tracking: str | tuple[str, ...] | None
    refs: str | tuple[str, ...] | None
    carrier: str | None
    channel: str | None
    customer: str | None
    version: int
    flags: int
    alerts: dict[str, tuple[int, int]] | None
    seen: bytes

    @property
    def t(self) -> Order:
        return self

    __hash__ = object.__hash__  # an order is an entity: identity, not its times

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def tracking_numbers(self) -> tuple[str, ...]:
        t = self.tracking
        if t is None:
            return ()
        return (t,) if isinstance(t, str) else t

    def known_refs(self) -> tuple[str, ...]:
        r = self.refs
        if r is None:
            return ()
        return tuple(r.split(REF_SEP)) if isinstance(r, str) else r

    def ids(self) -> list[str]:
        """Every id the order is known by but its canonical one, sorted: for output records."""
        return sorted((*self.known_refs(), *(TRACKING + t for t in self.tracking_numbers())))

    def __getstate__(self) -> tuple:
        """Every field, the times as bytes: for tests and for pickling one order."""
        return (*(getattr(self, s) for s in Order.__slots__), self.tobytes())

    def __reduce_ex__(self, protocol: object) -> tuple:  # array's own would drop the slots
        return _order_from_state, (self.__getstate__(),)


def _order_from_state(state: tuple) -> Order:
    o = _new_array(Order, "q", array("q", state[-1]))
    for name, value in zip(Order.__slots__, state[:-1], strict=True):
        setattr(o, name, value)
    return o


# ---------------------------------------------------------------- snapshots
# A snapshot of a million open orders is taken at every epoch close. Pickle pays per
# object (a memo entry and an opcode each), and a pass over the orders pays a cache
# miss per order, so the orders go as columns of few objects, taken in one pass: all
# times as one bytes string (each order is its own buffer), the ids joined into one
# string, the seen digests as one bytes string and their lengths, the small ints as
# one array, the alerts sparse (few orders have one); the string fields as lists,
# whose repeated values (statuses, carriers, None) pickle as one-byte back-references.
_STR_FIELDS = (
    "carrier", "channel", "customer", "main", "refs", "reported", "side", "status", "tracking",
)  # fmt: skip
_INT_FIELDS = ("flags", "side_tier", "version")
assert set(_STR_FIELDS + _INT_FIELDS) | {"seen", "alerts"} == set(Order.__slots__), (
    "a new Order field must be packed"
)
_str_getters = [attrgetter(name) for name in _STR_FIELDS]
_ID_COLUMNS = frozenset(_STR_FIELDS.index(name) for name in ("refs", "tracking"))
"""The columns of ids the reference index keys by: restored through its table
(`state.packing.IdTable`), so the two hold one string as they did live."""
_ints = attrgetter(*_INT_FIELDS)
_seen = attrgetter("seen")
_alerts = attrgetter("alerts")

PackedOrders = tuple


def pack_orders(orders: dict[str, Order]) -> PackedOrders:
    vals = list(orders.values())
    seen = list(map(_seen, vals))
    alerts = list(map(_alerts, vals))
    sparse = list(compress(range(len(vals)), alerts))
    return (
        pack_strs(list(orders)),
        b"".join(vals),
        array("q", chain.from_iterable(map(_ints, vals))).tobytes(),
        [list(map(get, vals)) for get in _str_getters],
        array("I", map(len, seen)).tobytes(),
        b"".join(seen),
        (sparse, [alerts[i] for i in sparse]),
    )


def unpack_orders(packed: PackedOrders, table: IdTable | None = None) -> dict[str, Order]:
    """`pack_orders`' orders; their ids, references and tracking numbers through `table`."""
    ids_p, times, ints_b, cols, seen_len, seen_blob, (sparse, alerts) = packed
    table = IdTable() if table is None else table
    ids = table.strs(unpack_strs(ids_p))
    cols = [list(map(table.field, c)) if i in _ID_COLUMNS else c for i, c in enumerate(cols)]
    ends = list(accumulate(array("I", seen_len)))
    seen = map(seen_blob.__getitem__, map(slice, [0, *ends[:-1]], ends))
    ints = iter(array("q", ints_b))
    chunks = _times_of(times)
    new = _new_array
    out: dict[str, Order] = {}
    for oid, tb, carrier, channel, customer, main, refs, reported, side, status, tracking, sn, (
        flags
    ), tier, version in zip(ids, chunks, *cols, seen, ints, ints, ints, strict=True):
        o = new(Order, "q", tb)
        o.carrier, o.channel, o.customer, o.main, o.refs = carrier, channel, customer, main, refs
        o.reported, o.side, o.status, o.tracking, o.seen = reported, side, status, tracking, sn
        o.flags, o.side_tier, o.version, o.alerts = flags, tier, version, None
        out[oid] = o
    for i, a in zip(sparse, alerts, strict=True):
        out[ids[i]].alerts = a
    return out


def _times_of(blob: bytes, block: int = 4096) -> Iterator[array]:
    """Each order's times as an array of its size (see `_ZEROS`), read `block` orders at a time."""
    step = _TIMES
    for start in range(0, len(blob), block * _TIMES_BYTES):
        a = array("q", blob[start : start + block * _TIMES_BYTES])
        yield from map(a.__getitem__, map(slice, range(0, len(a), step), count(step, step)))


MAX_REFS = 8
"""References an order remembers for its `ids` (a channel id, payment references): a
bound, so a source that links hundreds cannot grow one order past the memory budget."""


def remember_refs(o: Order, refs: tuple[str, ...]) -> None:
    """Add the references an event knew the order by (its `ref`, its `links`).

    The event's own strings, as `tracking`: one reference is that string, more a tuple of
    them (~64 bytes for two). They are the very strings the reference index keys them
    by (the router hands it the same `links`), where a joined copy cost ~110 bytes more.
    One holding REF_SEP is left out of `ids` (the index still resolves it).
    """
    have = o.known_refs()
    new = [r for r in dict.fromkeys(refs) if r not in have and REF_SEP not in r]
    if new and len(have) < MAX_REFS:
        kept = (*have, *new)[:MAX_REFS]
        o.refs = kept[0] if len(kept) == 1 else kept


def derive(o: Order) -> str | None:
    return o.side if o.side is not None else o.main


def _rank(status: str | None) -> int:
    return RANK.get(status, 0) if status else 0


def resolve_claim(o: Order, claim: str) -> str:
    """ "A/B" claims (Alipay TRADE_CLOSED): A once the order was paid, B before."""
    pair = conditional(claim)
    if pair is None:
        return claim
    return pair[0] if _rank(o.main) >= PAID_RANK else pair[1]


def apply_claims(o: Order, ev: Event, tier: int) -> str | None:
    """Apply an event's status claims; return the claim that decided a change, if any."""
    decided = None
    for raw in ev.claims:
        claim = resolve_claim(o, raw)
        if claim in RANK:
            if _main_claim(o, ev, claim, tier):
                decided = claim
        elif _side_claim(o, ev, claim, tier):
            decided = claim
    return decided


def _main_claim(o: Order, ev: Event, claim: str, tier: int) -> bool:
    changed = False
    r = RANK[claim]
    if r > _rank(o.main):  # MAIN PATH ADVANCES ONLY
        o.main = claim
        o[MAIN_MS] = ev.event_ms
        changed = True
    side = o.side
    # PROGRESS CLEARS TRANSIENT SIDES
    if (
        side in TRANSIENT_SIDES
        and ev.event_ms > o[SIDE_MS]
        and tier >= o.side_tier
        and (side == "ON_HOLD" or r >= PICKUP_RANK)
    ):
        o.side = None
        changed = True
    return changed


def _side_claim(o: Order, ev: Event, claim: str, tier: int) -> bool:
    if claim == "REFUND_CLOSED":
        if o.side == "REFUND_REQUESTED":
            o.side = None
            return True
        return False
    if claim in LOGISTICS_SIDES and ev.event_ms <= o[MAIN_MS]:
        return False  # LOGISTICS SIDE CLAIMS MUST BE NEWER
    current = o.side
    if current is not None:
        if ev.event_ms < o[SIDE_MS]:
            return False
        if current == claim:
            return False
        transient = current in TRANSIENT_SIDES
        if not transient and SIDE_WEIGHT[claim] < SIDE_WEIGHT[current]:
            return False
        if transient and tier < o.side_tier and SIDE_WEIGHT[claim] <= SIDE_WEIGHT[current]:
            return False
    o.side = claim
    o[SIDE_MS] = ev.event_ms
    o.side_tier = tier
    if claim in CLOSED_SIDES:
        o[CLOSED_EV_MS] = ev.event_ms
    return True


def lock_tracking(o: Order, ev: Event) -> None:
    """TRACKING LOCK: a valid tracking number means the label exists."""
    if not o[LABEL_MS] or ev.event_ms < o[LABEL_MS]:
        o[LABEL_MS] = ev.event_ms
    if _rank(o.main) < LABEL_RANK:
        o.main = "LABEL_CREATED"
        o[MAIN_MS] = ev.event_ms


def judge_report(o: Order, ev: Event, reported: str) -> None:
    """STATUS_REGRESSION is judged when an OMS report arrives, not while the OMS lags.

    A report is behind the evidence when it is earlier on the main path than the
    derived status and was made after that evidence existed (or, for the tracking
    lock, claims "not shipped" after a tracking number existed). Both compare event
    times: in a live run the topics are read at different positions, so a report
    made before the label may well arrive after the carrier's scans.
    """
    r = RANK.get(reported)
    main_r = _rank(o.main)
    if r is None or main_r == 0 or o.side in CLOSED_SIDES:
        o.flags &= ~F_REGRESSION
        return
    behind = r < main_r and (
        ev.event_ms >= o[MAIN_MS]
        or (r < LABEL_RANK and o.tracking is not None and ev.event_ms >= o[LABEL_MS])
    )
    if behind:
        o.flags |= F_REGRESSION
    elif r >= main_r:
        o.flags &= ~F_REGRESSION
