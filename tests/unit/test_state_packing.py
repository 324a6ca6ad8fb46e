"""Snapshot forms of the order state (state.packing): smaller, and exactly the same state back.

Snapshots of a shard pack its orders into columns, of the reference index its dicts
into joined strings (its waiting events are kept pickled all along); a restore must give back every
field, in order, whatever the values hold (the separator included).
"""

from __future__ import annotations

import pickle
import random
import sys
from array import array

from schemas.config import Settings
from schemas.event import Event
from state.evidence import DUE, LAST_AT, Order, pack_orders, unpack_orders
from state.packing import (
    SEP,
    IdTable,
    pack_events,
    pack_map,
    pack_strs,
    unpack_map,
    unpack_strs,
)
from state.reference_index import ReferenceIndex
from state.shard import OrderShard
from state.timers import TimerWheel
from tests.helpers import HOUR, MIN, T0, drain, ev, label


def _round(value):
    return pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def test_strings_come_back_in_order_also_with_the_separator_or_empty():
    for items in (["a", "bc", ""], [], [""], ["x" + SEP + "y", "z"], ["é", "中文"]):
        assert unpack_strs(_round(pack_strs(items))) == items
    assert isinstance(pack_strs(["a", "b"]), tuple)  # joined, not a list of strings


def test_a_map_comes_back_with_its_insertion_order():
    d = {f"SF{i:012d}": f"TB{i % 7}" for i in range(50)} | {"oms:1": "TB1", "k" + SEP: "v"}
    back = unpack_map(_round(pack_map(d)))
    assert back == d and list(back) == list(d)


def _order(i: int) -> Order:
    o = Order()
    o[LAST_AT] = T0 + i
    o[DUE] = T0 + i * HOUR
    o.status = o.main = "IN_TRANSIT" if i % 2 else None
    o.side = "ON_HOLD" if i % 3 == 0 else None
    o.side_tier, o.flags, o.version = i % 5, i % 9, i
    o.reported = "PAID" if i % 4 else None
    o.tracking = f"SF{i:012d}" if i % 5 else (f"SF{i:012d}", "SF999999999999")
    o.refs = f"taobao:{i}" if i % 2 else None
    o.carrier, o.channel = ("sf", "taobao") if i % 3 else (None, None)
    o.customer = f"C{i // 2}" if i % 7 else None
    o.alerts = {"SHIPMENT_DELAYED": (T0, T0 - i)} if i % 6 == 0 else None
    o.seen = bytes(range(i % 12)) * 4
    return o


def test_orders_come_back_field_for_field():
    orders = {f"TB{i:08d}": _order(i) for i in range(40)}
    orders["TB" + SEP + "odd"] = _order(41)  # an id holding the separator: not joined
    back = unpack_orders(_round(pack_orders(orders)))
    assert list(back) == list(orders)
    for oid, o in orders.items():
        assert back[oid].__getstate__() == o.__getstate__(), oid
    assert unpack_orders(_round(pack_orders({}))) == {}


def test_an_order_is_its_times_and_an_entity():
    a, b = Order(), Order()
    a[LAST_AT] = 5
    assert a.t is a and a.t[LAST_AT] == 5
    assert a != b and a == a and len({a, b}) == 2  # identity, not equal times
    a.tracking = "SF1"
    assert _round(a).__getstate__() == a.__getstate__()


def test_an_orders_times_are_allocated_to_size_new_restored_or_unpickled():
    """An array built from bytes keeps room to grow (24 bytes); an order's times never grow."""
    exact = sys.getsizeof(array.__new__(Order, "q", [0] * len(Order())))
    orders = {f"TB{i}": _order(i) for i in range(5000)}  # more than one block of `_times_of`
    back = unpack_orders(_round(pack_orders(orders)))
    assert [list(o) for o in back.values()] == [list(o) for o in orders.values()]
    sizes = {sys.getsizeof(o) for o in (Order(), _round(Order()), *back.values())}
    assert sizes == {exact}


def _waiting(i: int) -> Event:
    return ev(
        "sf", "carrier", None, "IN_TRANSIT", at=T0 + i * MIN, tracking_no=f"SF{i:012d}",
        tracking_valid=True, raw=b'{"n": %d}' % i, origin={"file": "f", "line": i},
    )  # fmt: skip


def test_the_reference_index_comes_back_whole_with_its_waiting_events():
    idx = ReferenceIndex(Settings())
    links = [ev("oms", "oms", f"TB{i}", "PAID", at=T0, links=(f"taobao:{i}",)) for i in range(20)]
    idx.process(links, T0)
    held = [_waiting(i) for i in range(6)] + [_waiting(2)]
    idx.process(held, T0 + 10 * MIN)
    idx.previous = {"SF" + SEP: "TB1", "oms:9": "TB9"}
    assert idx.pending_count == 7
    back = _round(idx)
    for name in vars(idx):
        if name not in ("pending", "pending_queue"):
            assert getattr(back, name) == getattr(idx, name), name
    assert list(back.current) == list(idx.current)
    assert list(back.pending_queue) == list(idx.pending_queue)
    assert list(back.pending) == list(idx.pending)
    for key in idx.pending:
        assert back.waiting(key) == idx.waiting(key)  # dataclass equality: every field
    assert idx.waiting("SF000000000002") == [held[2], held[6]]  # every field, kept
    # and it behaves the same from there on
    later = [ev("oms", "oms", "TB77", "LABEL_CREATED", at=T0 + HOUR, tracking_no="SF000000000002",
                tracking_valid=True)]  # fmt: skip
    assert back.process(later, T0 + HOUR) == idx.process(later, T0 + HOUR)


def test_a_rebuilt_wheel_yields_what_the_one_with_stale_entries_did():
    rng = random.Random(7)
    wheel = TimerWheel()
    dues: dict[str, int] = {}
    for step in range(3000):
        key = f"o{rng.randrange(300)}"
        old = dues.get(key, 0)
        due = rng.randrange(1, 50) * 37_000 + step
        if old == 0 or due < old:  # as the shard does: only ever earlier
            wheel.schedule(key, due, old)
            dues[key] = due
    assert wheel.entries > len(dues)  # stale entries were left behind
    rebuilt = TimerWheel.of(dues.items())
    assert rebuilt.entries == len(dues)
    also = dict(dues)
    for now in range(0, 2_000_000, 90_000):
        assert drain(rebuilt, now, also) == drain(wheel, now, dues)
    assert wheel.entries >= 0 and rebuilt.entries == 0


def test_a_store_written_when_waiting_events_were_tuples_still_loads():
    """Stores written before the index kept its waiting events pickled held them as
    `pack_events` tuples; a restart on such a store must give the same events back."""
    idx = ReferenceIndex(Settings())
    idx.process([_waiting(i) for i in range(3)], T0 + 10 * MIN)
    state = idx.__getstate__()
    keys, counts, _frozen = state["pending"]
    events = [e for k in idx.pending for e in idx.waiting(k)]
    state["pending"] = (keys, counts, pack_events(events))  # the old form
    state["pending_bytes"] = 3 * (512 + len(b'{"n": 0}'))  # and its old sizes
    back = ReferenceIndex.__new__(ReferenceIndex)
    back.__setstate__(state)
    assert [e for k in back.pending for e in back.waiting(k)] == events
    assert back.pending_bytes == idx.pending_bytes  # recounted: the bound adds up again
    back.process([], T0 + 30 * 86_400_000)  # all expire, each taking its size back out
    assert back.pending_count == back.pending_bytes == 0


def test_a_shard_and_an_index_restored_in_one_process_hold_one_string_per_id():
    """Live, an order's references and tracking numbers are the strings the index keys them
    by, and the index names the order with the shard's string. Restored step by step
    through one table, as a process resumes its steps, they hold one string per id again
    (not a copy a step: ~200 bytes an open order); once the table is emptied, a later
    restore has its own strings."""
    settings = Settings()
    events = [
        label(f"TB{i:04d}", f"SF{i:012d}", T0 + i, links=(f"taobao:{i}", f"stripe_pi:pi_{i}"))
        for i in range(50)
    ]
    shard, index = OrderShard(settings), ReferenceIndex(settings)
    shard.process(events, T0 + HOUR)
    index.process(events, T0 + HOUR)
    shard_blob = pickle.dumps((shard.clock, shard.increment(True)[1]))
    index_blob = pickle.dumps((index.small_state(), index.increment(True)[1]))

    def restore_index(ids: IdTable) -> ReferenceIndex:
        small, base = pickle.loads(index_blob)
        return ReferenceIndex.from_increments(settings, small, [base], ids)

    ids = IdTable()
    restored = OrderShard(settings)
    clock, base = pickle.loads(shard_blob)
    restored.restore_increments(clock, [base], settings, ids)
    restored_index = restore_index(ids)
    keys = {k: k for k in restored_index.current}
    order_ids = {oid: oid for oid in restored.orders}
    for oid, o in restored.orders.items():
        refs = o.known_refs()
        assert len(refs) == 2 and all(keys[r] is r for r in refs), oid
        assert keys[o.tracking] is o.tracking
        assert all(restored_index.current[k] is order_ids[oid] for k in (*refs, o.tracking))

    ids.clear()
    again = restore_index(ids)
    key = next(iter(again.current))
    assert keys[key] is not key  # the table was emptied: a later restore has its own strings
    assert _snapshot_rows(again) == _snapshot_rows(restored_index)


def _snapshot_rows(index: ReferenceIndex) -> tuple:
    return sorted(index.current.items()), sorted(index.previous.items())
