"""Incremental snapshots: a chain of increments gives back exactly the state it was taken of.

An order shard and a reference index hand each snapshot what changed since the last
(`increment`); `connectors.increments.Chain` keeps those as files and, on resume,
gives back the base and deltas up to the version Bytewax's snapshot names. Restored
from them, a step must hold the same state and behave the same as the one that ran
on, and a chain that lacks a file it needs must be refused, not restored from less.
"""

from __future__ import annotations

import random

import pytest

from connectors.increments import KEEP, SPREAD, Chain, IncrementsError, chain_dir
from schemas.config import Settings
from state.packing import IdTable
from state.reference_index import ReferenceIndex
from state.shard import OrderShard
from tests.helpers import HOUR, MIN, T0, label, oms, orders_logic, pay, scan

SETTINGS = Settings(retention={"terminal_order": "6h", "idle_order": "12h"})  # ints are seconds


def _orders(shard: OrderShard) -> dict[str, object]:
    return {k: (bytes(o), o.__getstate__()) for k, o in shard.orders.items()}


def _census(shard: OrderShard) -> tuple[dict[str, int], dict[str, int]]:
    """The census as the gauges show it: what is held (a type gone to 0 shows 0)."""
    return tuple({k: n for k, n in c.items() if n} for c in shard.census())  # type: ignore[return-value]


def _census_counted(shard: OrderShard) -> tuple[dict[str, int], dict[str, int]]:
    return tuple(dict(c) for c in shard.count())  # type: ignore[return-value]


def _index(ix: ReferenceIndex) -> tuple:
    waiting = {k: [(e.event_id, e.seq, e.order_id) for e in ix.waiting(k)] for k in ix.pending}
    return (
        ix.current, ix.previous, waiting, list(ix.pending_queue), ix.pending_count,
        ix.pending_bytes, ix.conflicts, ix.rotated_at,
    )  # fmt: skip


def _day(seed: int, n: int) -> list:
    """Events of a few hundred orders over two days: new, paid, shipped, delivered, idle."""
    rnd = random.Random(seed)
    out, at = [], T0
    for _ in range(n):
        at += rnd.randrange(1, 6 * MIN)
        oid = f"TB{rnd.randrange(300):06d}"
        kind = rnd.randrange(5)
        if kind == 0:
            out.append(oms(oid, "PENDING_PAYMENT", at))
        elif kind == 1:
            out.append(pay(oid, at))
        elif kind == 2:
            out.append(label(oid, f"SF{int(oid[2:]):012d}", at))
        elif kind == 3:
            out.append(scan(oid, "DELIVERED", at, tracking=f"SF{int(oid[2:]):012d}"))
        else:
            out.append(oms(oid, "LABEL_CREATED", at))  # an OMS "shipped", as the maps give it
    return out


def test_a_shard_restored_from_its_increments_holds_and_does_what_the_original_does(tmp_path):
    events = _day(1, 1600)
    shard = OrderShard(SETTINGS)
    shard.track_changes()
    chain = Chain(tmp_path / "o000")
    for start in range(0, 1200, 37):  # an epoch's events, then its increment
        batch = events[start : min(start + 37, 1200)]
        shard.process(batch, batch[-1].received_ms + 2 * HOUR)  # deadlines fire, orders leave
        chain.write(*reversed(shard.increment(chain.wants_base())))
        restored = OrderShard(SETTINGS)
        increments = Chain(tmp_path / "o000", chain.version).read()
        restored.restore_increments(shard.clock, increments, SETTINGS)
        assert _orders(restored) == _orders(shard), chain.version
        assert _census(shard) == _census(restored) == _census_counted(shard), chain.version
    assert any(f.endswith(".delta") for f in map(str, (tmp_path / "o000").iterdir()))
    later = events[1200:]
    clock = later[-1].received_ms + 3 * 86_400_000  # past every deadline, evictions included
    assert restored.process(later, clock) == shard.process(later, clock)
    assert _orders(restored) == _orders(shard)


def test_orders_packed_ahead_of_the_close_restore_to_the_same_shard(tmp_path, monkeypatch):
    """`prepack` packs changed orders as they gather; an epoch's delta is then several
    packings, and an order changed (or gone) after its first must come back as it ended."""
    monkeypatch.setattr("state.shard.PREPACK", 3)
    events = _day(2, 1600)
    shard = OrderShard(SETTINGS)
    shard.track_changes()
    chain = Chain(tmp_path / "o000")
    several = 0
    for start in range(0, 1200, 60):  # an epoch: four batches, a prepack after each
        for at in range(start, min(start + 60, 1200), 15):
            batch = events[at : at + 15]
            shard.process(batch, batch[-1].received_ms + 2 * HOUR)
            shard.prepack()
        base, inc = shard.increment(chain.wants_base())
        several += isinstance(inc, list)
        chain.write(inc, base)
        restored = OrderShard(SETTINGS)
        restored.restore_increments(
            shard.clock, Chain(tmp_path / "o000", chain.version).read(), SETTINGS
        )
        assert _orders(restored) == _orders(shard), chain.version
        assert _census(restored) == _census(shard), chain.version
    assert several >= 10  # most epochs' deltas were written in several packings
    later = events[1200:]
    clock = later[-1].received_ms + 3 * 86_400_000
    assert restored.process(later, clock) == shard.process(later, clock)


def test_an_order_packed_ahead_then_changed_or_gone_comes_back_as_it_ended(tmp_path, monkeypatch):
    monkeypatch.setattr("state.shard.PREPACK", 1)
    shard = OrderShard(SETTINGS)
    shard.track_changes()
    chain = Chain(tmp_path / "o")
    chain.write(*reversed(shard.increment(True)))
    shard.process([oms("TB1", "PENDING_PAYMENT", T0), oms("TB2", "PENDING_PAYMENT", T0)], T0)
    shard.prepack()  # both packed as pending
    shard.process([pay("TB1", T0 + MIN)], T0 + MIN)
    base, inc = shard.increment(chain.wants_base())  # TB1 paid, packed again at the close
    assert not base and isinstance(inc, list)
    chain.write(inc, base)
    restored = OrderShard(SETTINGS)
    restored.restore_increments(shard.clock, Chain(tmp_path / "o", chain.version).read(), SETTINGS)
    assert restored.orders["TB1"].status == shard.orders["TB1"].status == "PAID"
    shard.process([oms("TB3", "PENDING_PAYMENT", T0 + 2 * MIN)], T0 + 2 * MIN)
    shard.prepack()  # TB3 packed, then everything idles out of the shard before the close
    shard.process([], T0 + 20 * HOUR)
    assert shard.orders == {}
    chain.write(*reversed(shard.increment(chain.wants_base())))
    restored = OrderShard(SETTINGS)
    restored.restore_increments(shard.clock, Chain(tmp_path / "o", chain.version).read(), SETTINGS)
    assert restored.orders == {}


def test_an_order_that_left_state_stays_gone_after_a_restore(tmp_path):
    shard = OrderShard(SETTINGS)
    shard.track_changes()
    chain = Chain(tmp_path / "o")
    shard.process([oms("TB1", "PENDING_PAYMENT", T0), oms("TB2", "PENDING_PAYMENT", T0)], T0)
    chain.write(*reversed(shard.increment(True)))  # a base with both
    shard.process([], T0 + 20 * HOUR)  # both idle past retention: evicted
    assert shard.orders == {}
    base, inc = shard.increment(chain.wants_base())
    assert not base and inc[1] and set(inc[1]) == {"TB1", "TB2"}
    chain.write(inc, base)
    restored = OrderShard(SETTINGS)
    restored.restore_increments(shard.clock, Chain(tmp_path / "o", chain.version).read(), SETTINGS)
    assert restored.orders == {}


def test_an_index_restored_from_its_increments_across_rotations_is_the_same(tmp_path):
    index_settings = Settings(
        retention={"idle_order": "4h", "pending_tracking": "1h", "pending_tracking_max": 6}
    )
    index = ReferenceIndex(index_settings)
    index.track_changes()
    chain = Chain(tmp_path / "i")
    kinds, dropped = [], 0
    for step in range(40):
        at = T0 + step * 15 * MIN  # rotates every 2 h: several times
        evs = [label(f"TB{step}-{j}", f"SF{step:06d}{j:06d}", at + j) for j in range(5)]
        evs.append(scan(None, "IN_TRANSIT", at + 8, tracking=f"SF{step - 3:06d}{1:06d}"))
        evs.append(scan(None, "IN_TRANSIT", at + 9, tracking=f"SF{step + 2:06d}{1:06d}"))
        for k in range(step % 4):  # wait until they expire, or overflow the bound of 6
            evs.append(scan(None, "IN_TRANSIT", at + 10 + k, tracking=f"SF9{step:07d}{k:04d}"))
        _, dead = index.process(evs, at + 10)
        dropped += len(dead)
        base, inc = index.increment(chain.wants_base())
        kinds.append(base)
        chain.write(inc, base)
        back = ReferenceIndex.from_increments(
            index_settings, index.small_state(), Chain(tmp_path / "i", chain.version).read()
        )
        assert _index(back) == _index(index), step
    assert kinds.count(True) >= 3 and kinds.count(False) >= 20  # rotations force bases
    assert dropped >= 20 and index.pending_count  # some expired or overflowed, some wait
    later = [
        scan(None, "IN_TRANSIT", T0 + 11 * HOUR + k, tracking=f"SF9{k:011d}") for k in range(9)
    ]
    assert back.process(later, T0 + 11 * HOUR + 9) == index.process(later, T0 + 11 * HOUR + 9)


def test_a_chain_resumes_at_its_snapshots_version_and_forgets_what_came_after(tmp_path):
    d = tmp_path / "c"
    chain = Chain(d)
    for i in range(5):
        chain.write({"n": i}, base=i == 0)
    again = Chain(d, 3)  # the run after version 3 was lost
    assert again.read() == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert sorted(p.name for p in d.iterdir())[-1].startswith("000000000003")
    assert again.write({"n": "new"}, base=False) == 4
    assert Chain(d, 4).read()[-1] == {"n": "new"}
    assert Chain(d).read() == [] and not list(d.iterdir())  # a fresh key: nothing completed


def test_a_chain_writes_a_base_once_the_deltas_outweigh_it_and_prunes_behind_keep(tmp_path):
    d = tmp_path / "c"
    chain = Chain(d)
    bases = []
    for i in range(60):
        base = chain.wants_base()
        bases.append(base)
        chain.write({"big": b"x" * 1000} if base else {"small": b"y" * 300, "i": i}, base)
    assert bases[0] and 5 <= bases.count(True) <= 20
    versions = sorted(int(p.name[:12]) for p in d.iterdir())
    assert len(versions) < 30 and versions[-1] == 60
    for resume in range(60 - KEEP, 61):  # every version a resume may still ask for
        incs = Chain(d, resume).read() if resume == 60 else _read_only(d, resume)
        assert "big" in incs[0] and all("small" in x for x in incs[1:])


def test_the_shards_of_a_step_write_their_due_bases_in_different_epochs(tmp_path):
    """Shards grow alike; were their bases written in one epoch, that close would stall
    for all of them. Each still gets its base within SPREAD versions of falling due."""
    chains = [Chain(tmp_path / f"o{i:03d}") for i in range(12)]
    bases_at: dict[int, list[int]] = {}
    due_since = [0] * 12
    for v in range(1, 41):
        for i, chain in enumerate(chains):
            due, base = chain.due, chain.wants_base()
            if base:
                bases_at.setdefault(v, []).append(i)
                due_since[i] = 0
            elif due:
                due_since[i] += 1
                assert due_since[i] < SPREAD, f"shard {i} waited {due_since[i]} versions"
            chain.write(b"x" * 1000 if base else b"y" * 300, base)
    assert bases_at[1] == list(range(12))  # no base yet: all at once, while small
    later = {v: shards for v, shards in bases_at.items() if v > 1}
    assert later and max(map(len, later.values())) <= 12 // SPREAD
    assert sum(map(len, later.values())) >= 12 * 3  # every shard went on writing bases


def _read_only(d, version):
    """Read at `version` without deleting the later files (a copy of the directory)."""
    import shutil

    copy = d.parent / f"copy{version}"
    shutil.copytree(d, copy)
    return Chain(copy, version).read()


def test_a_chain_missing_its_files_is_refused_with_the_directory_named(tmp_path):
    d = tmp_path / "o003"
    chain = Chain(d)
    for i in range(4):
        chain.write(i, base=i == 0)
    (d / "000000000002.delta").unlink()
    with pytest.raises(IncrementsError, match=r"version 4 .*o003.*must move with"):
        Chain(d, 4).read()
    with pytest.raises(IncrementsError, match="not all there"):
        Chain(tmp_path / "elsewhere", 2).read()  # a key whose chain is on another machine


def test_an_interrupted_write_leaves_no_file_a_resume_would_read(tmp_path):
    d = tmp_path / "c"
    Chain(d).write("a", base=True)
    (d / "000000000002.tmp").write_bytes(b"half")
    assert Chain(d, 1).read() == ["a"] and not list(d.glob("*.tmp"))


def test_a_key_becomes_a_safe_directory_name(tmp_path):
    assert chain_dir(tmp_path, "orders", "o001") == tmp_path / "increments" / "orders" / "o001"
    assert chain_dir(tmp_path, "orders", "a/b c").name == "a%2fb%20c"


def _orders_logic(resume, rdir):
    return orders_logic(Settings(), resume, rdir)


def test_a_step_snapshot_names_its_chain_and_resumes_from_it_or_refuses(tmp_path):
    import pickle

    from dataflows.flow import Chained

    logic = _orders_logic(None, tmp_path)
    logic.step.shard.process([oms(f"TB{i:05d}", "PENDING_PAYMENT", T0 + i) for i in range(50)], T0)
    first = logic.snapshot()
    logic.step.shard.process([pay("TB00007", T0 + MIN)], T0 + MIN)
    second = logic.snapshot()
    snap = pickle.loads(second)
    assert isinstance(snap, Chained) and snap.version == 2 and snap.name == "o000"
    assert len(first) < 400  # the 50 orders are in the chain, not in the snapshot
    chain = tmp_path / "increments" / "orders" / "o000"
    assert sorted(p.suffix for p in chain.iterdir()) == [".base", ".delta"]
    restored = _orders_logic(second, tmp_path).step
    assert _orders(restored.shard) == _orders(logic.step.shard)
    assert restored.shard.changed == set()  # tracking again
    resumed_first = _orders_logic(first, tmp_path).step  # as if epoch 2 never completed
    assert resumed_first.shard.orders["TB00007"].status == "PENDING_PAYMENT"
    assert [p.suffix for p in chain.iterdir()] == [".base"]
    for p in chain.iterdir():
        p.unlink()
    with pytest.raises(IncrementsError, match="o000"):
        _orders_logic(first, tmp_path)


def test_without_recovery_nothing_is_tracked_or_written(tmp_path):
    logic = _orders_logic(None, None)
    logic.step.shard.process([oms("TB1", "PENDING_PAYMENT", T0)], T0)
    assert logic.snapshot() is None and logic.step.shard.changed is None
    assert not (tmp_path / "increments").exists()


def test_the_first_epoch_close_after_a_resume_empties_the_restore_table(tmp_path):
    """Steps restore through one table of ids (`state.packing.IdTable`), so the shard and
    the index share their strings; once the run is under way the table must not keep
    them alive."""
    logic = _orders_logic(None, tmp_path)
    logic.step.shard.process([label(f"TB{i:03d}", f"SF{i:012d}", T0 + i) for i in range(30)], T0)
    snapshot = logic.snapshot()
    restored = IdTable()
    resumed = orders_logic(Settings(), snapshot, tmp_path, restored)
    assert "TB007" in restored and "SF000000000007" in restored
    resumed.snapshot()
    assert len(restored) == 0
    assert _orders(resumed.step.shard) == _orders(logic.step.shard)
