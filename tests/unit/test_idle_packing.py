"""Idle orders held packed: the same records and the same state, in less memory.

A shard packs an order nothing has reached for `retention.pack_idle_order` into one
bytes object and unpacks it when an event or a deadline reaches it. Packing must be
invisible: what a shard emits, and the orders it holds, do not depend on it.
"""

from __future__ import annotations

import pickle
import random
from array import array

import pytest

from schemas.config import Settings
from state.evidence import (
    DUE,
    LAST_AT,
    Order,
    pack_idle,
    pack_order,
    packed_census,
    packed_due,
    unpack_idle,
    unpack_order,
)
from state.shard import OrderShard
from tests.helpers import HOUR, MIN, T0, label, oms, pay, scan


def _settings(pack_after: str) -> Settings:
    return Settings(
        retention={"terminal_order": "6h", "idle_order": "30h", "pack_idle_order": pack_after}
    )


def _stream(seed: int, n: int) -> list:
    """Events of 300 orders over days: each order is reached every ~17 h on average."""
    rnd = random.Random(seed)
    out, at = [], T0
    for _ in range(n):
        at += rnd.randrange(1, 6 * MIN)
        oid = f"TB{rnd.randrange(300):06d}"
        tracking = f"SF{int(oid[2:]):012d}"
        kind = rnd.randrange(6)
        if kind == 0:
            out.append(oms(oid, "PENDING_PAYMENT", at, customer_id=f"C{oid[-3:]}"))
        elif kind == 1:
            out.append(pay(oid, at))
        elif kind == 2:
            out.append(label(oid, tracking, at))
        elif kind == 3:
            out.append(scan(oid, "DELIVERED", at, tracking=tracking))
        elif kind == 4:
            out.append(scan(oid, "DELIVERY_EXCEPTION", at, tracking=tracking))
        else:
            out.append(oms(oid, "IN_TRANSIT", at))
    return out


def _run(settings: Settings, events: list, batch: int) -> tuple[list, OrderShard]:
    shard = OrderShard(settings)
    out = []
    for i in range(0, len(events), batch):
        part = events[i : i + batch]
        out.extend(shard.process(part, part[-1].received_ms + 20 * MIN))
    return out, shard


def _state(shard: OrderShard) -> dict[str, tuple]:
    return {k: o.__getstate__() for k, o in shard.every_order().items()}


def _facts(shard: OrderShard) -> dict[str, tuple]:
    """Every order's fields but its registered deadline (`DUE`): packing is a deadline too,
    so with it an order may wait on an earlier one."""
    out = {}
    for k, o in shard.every_order().items():
        *fields, times = o.__getstate__()
        copy = array("q", times)
        copy[DUE] = 0
        out[k] = (*fields, copy)
    return out


def test_a_packed_order_unpacks_to_every_field_it_had():
    o = Order()
    for i in range(len(o)):
        o[i] = T0 + i
    o.status, o.main, o.side, o.side_tier = "DELIVERY_EXCEPTION", "IN_TRANSIT", "ON_HOLD", 4
    o.reported, o.tracking, o.refs = "SHIPPED", ("SF1", "SF2"), "taobao:1"
    o.carrier, o.channel, o.customer, o.version, o.flags = "sf", "taobao", "C1", 7, 5
    o.alerts, o.seen = {"SHIPMENT_DELAYED": (T0, T0 - 1)}, b"\x01\x02\x03\x04" * 3
    packed = pack_order(o)
    back = unpack_order(packed)
    assert type(back) is Order and back.__getstate__() == o.__getstate__()
    assert back.status is o.status  # statuses come back as the one interned constant
    assert back.buffer_info()[1] == len(o)
    assert packed_due(packed) == o[DUE] == T0 + DUE
    assert packed_census(packed) == ("DELIVERY_EXCEPTION", {"SHIPMENT_DELAYED": (T0, T0 - 1)})
    assert unpack_idle(pack_idle({"TB1": packed, "TB2": b"x"})) == {"TB1": packed, "TB2": b"x"}
    assert unpack_idle(pack_idle({})) == {}


def test_an_idle_order_is_packed_and_an_event_unpacks_it():
    shard = OrderShard(_settings("1h"))
    shard.process([oms("TB1", "PENDING_PAYMENT", T0)], T0 + MIN)
    assert "TB1" in shard.orders and not shard.idle
    shard.process([], T0 + HOUR - MIN)
    assert "TB1" in shard.orders  # not idle for the hour yet
    shard.process([], T0 + HOUR + MIN)
    assert "TB1" in shard.idle and "TB1" not in shard.orders and "TB1" in shard
    assert len(shard) == 1
    shard.process([pay("TB1", T0 + 2 * HOUR)], T0 + 2 * HOUR)
    assert shard.orders["TB1"].status == "PAID" and not shard.idle
    assert shard.orders["TB1"][LAST_AT] == T0 + 2 * HOUR


def test_zero_keeps_every_order_unpacked():
    _, shard = _run(_settings("0"), _stream(3, 600), 50)
    assert shard.orders and not shard.idle


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("pack_after", ["1m", "1h", "5h"])
def test_packing_changes_no_record_and_no_order(seed, pack_after):
    """Deadlines fire on packed orders (alerts, retention), events reach packed orders:
    every record and every order end as they do with nothing packed."""
    events = _stream(seed, 2000)
    want, plain = _run(_settings("0"), events, 40)
    got, packing = _run(_settings(pack_after), events, 40)
    assert got == want
    assert len(want) > 500 and any(kind == "alert" for kind, _ in want)
    assert packing.idle  # it did pack: at the end some orders are held packed
    assert _facts(packing) == _facts(plain)
    assert packing.census() == plain.census() == packing.count()


def test_a_snapshot_holds_packed_orders_and_restores_them_packed():
    events = _stream(4, 1500)
    _, shard = _run(_settings("1h"), events, 40)
    assert shard.idle and shard.orders
    restored = OrderShard(_settings("1h"))
    restored.restore(pickle.loads(pickle.dumps(shard.__getstate__())), _settings("1h"))
    assert restored.idle == shard.idle and _state(restored) == _state(shard)
    assert restored.census() == shard.census()
    later = _stream(5, 400)
    later = [e for e in later if e.received_ms > shard.clock] or later
    assert shard.process(later, later[-1].received_ms) == restored.process(
        later, later[-1].received_ms
    )
    assert _state(restored) == _state(shard)


def test_increments_follow_orders_between_alive_and_packed():
    """A delta carries an order packed since the base packed, and one woken since alive;
    restored from the chain, the shard holds what the original holds."""
    settings = _settings("1h")
    events = _stream(6, 1800)
    shard = OrderShard(settings)
    shard.track_changes()
    increments: list = []
    for i in range(0, len(events), 60):
        part = events[i : i + 60]
        shard.process(part, part[-1].received_ms)
        base, inc = shard.increment(not increments)
        increments = [inc] if base else [*increments, inc]
        restored = OrderShard(settings)
        restored.restore_increments(shard.clock, pickle.loads(pickle.dumps(increments)), settings)
        assert _state(restored) == _state(shard), i
        assert restored.census() == shard.census(), i
    assert any(inc[2][0] != (0, "") for inc in increments[1:])  # some delta held packed ones


def test_a_snapshot_from_before_packing_restores():
    """Increments written before idle orders were packed have no third part."""
    settings = _settings("1h")
    _, shard = _run(_settings("0"), _stream(7, 800), 40)
    old_base = (shard.increment(True)[1][0], ())
    restored = OrderShard(settings)
    restored.restore_increments(shard.clock, [old_base], settings)
    assert _state(restored) == _state(shard)
    state = shard.__getstate__()
    del state["idle"]
    again = OrderShard(settings)
    again.restore(state, settings)
    assert _state(again) == _state(shard)
