"""Timer wheel and reference index: pieces that make sharding deterministic."""

from __future__ import annotations

import random

from schemas.config import Settings
from state.reference_index import ReferenceIndex, tracking_key
from state.timers import GRAIN, TimerWheel
from tests.helpers import HOUR, T0, drain, ev


def test_wheel_pops_due_keys_in_time_order_and_skips_stale_entries():
    wheel = TimerWheel()
    dues = {"a": 5_500, "b": 1_200, "c": 9_000}
    for k, d in dues.items():
        wheel.schedule(k, d)
    dues["c"] = 20_000  # rescheduled: its old entry is stale
    wheel.schedule("c", 20_000, 9_000)
    assert drain(wheel, 10_000, dues) == [(1_200, "b"), (5_500, "a")]
    assert drain(wheel, 10_000, dues) == []
    assert drain(wheel, 20_001, dues) == [(20_000, "c")]


def test_wheel_keeps_entries_due_later_in_the_same_bucket():
    wheel = TimerWheel()
    dues = {"a": 1_100, "b": 1_900}
    for k, d in dues.items():
        wheel.schedule(k, d)
    assert drain(wheel, 1_500, dues) == [(1_100, "a")]
    assert wheel.next_due() == 1_900
    dues["b"] = 1_700  # moved within the bucket being drained
    wheel.schedule("b", 1_700, 1_900)
    assert drain(wheel, 2_000, dues) == [(1_700, "b")]
    assert wheel.next_due() is None


def test_a_deadline_set_in_a_bucket_already_drained_comes_out_at_the_next_pop():
    """A drain passes several buckets, then the caller evaluates each deadline at its own
    time; one evaluated in an early bucket may set the next deadline in that same bucket,
    still before `now`. It must come out at once, not once the later bucket drains."""
    wheel = TimerWheel()
    dues = {"a": GRAIN + 100, "b": 2 * GRAIN + 900}
    for k, d in dues.items():
        wheel.schedule(k, d)
    now = 2 * GRAIN + 500  # past a's bucket, into b's
    assert drain(wheel, now, dues) == [(GRAIN + 100, "a")]
    dues["a"] = GRAIN + 200  # a's evaluation at GRAIN + 100 sets its next deadline
    wheel.schedule("a", GRAIN + 200)
    assert wheel.next_due() == GRAIN + 200
    assert drain(wheel, now, dues) == [(GRAIN + 200, "a")]
    assert drain(wheel, 2 * GRAIN + 1000, dues) == [(2 * GRAIN + 900, "b")]


def test_a_deadline_set_while_handling_one_comes_out_in_its_turn_within_the_same_jump():
    """The caller handles each deadline as it comes; one it sets before `now` waits only
    for those due before it: in the bucket being drained, or in a later one."""
    wheel = TimerWheel()
    dues = {"a": GRAIN + 100, "b": GRAIN + 400, "c": 2 * GRAIN + 100}
    for k, d in dues.items():
        wheel.schedule(k, d)
    now, got = 3 * GRAIN, []
    then = {"a": [GRAIN + 300, 2 * GRAIN + 50], "b": [], "c": []}  # each of a's next deadlines
    while (entry := wheel.pop_next(now, lambda k: dues.get(k, 0))) is not None:
        got.append(entry)
        key = entry[1]
        dues[key] = then[key].pop(0) if then[key] else 0
        if dues[key]:
            wheel.schedule(key, dues[key])
    assert got == [
        (GRAIN + 100, "a"),
        (GRAIN + 300, "a"),  # set in the bucket being drained, ahead of b
        (GRAIN + 400, "b"),
        (2 * GRAIN + 50, "a"),  # set in the next bucket, ahead of c
        (2 * GRAIN + 100, "c"),
    ]
    assert wheel.next_due() is None


def test_wheel_matches_a_plain_model_through_random_reschedules_and_drains():
    """Keys moved, cancelled and added between drains and while a drain is under way,
    the just-handled key among them: each pop gives the earliest live deadline before
    `now`, as a plain model of the live deadlines says."""
    rng = random.Random(5)
    wheel, dues, now = TimerWheel(), {}, 0

    def reschedule(key: str, earliest: int) -> None:
        old = dues.get(key, 0)
        due = earliest + 1 + rng.randrange(3 * GRAIN)
        dues[key] = due
        wheel.schedule(key, due, old)

    for step in range(3000):
        key = f"k{rng.randrange(400)}"
        if rng.random() < 0.7:
            reschedule(key, now)
        elif key in dues:
            dues[key] = 0  # cancelled: its entry is stale
        if step % 7 == 0:
            now += rng.randrange(GRAIN // 3)
            while True:
                live = [(d, k) for k, d in dues.items() if d and d < now]
                got = wheel.pop_next(now, lambda k: dues.get(k, 0))
                assert got == (min(live) if live else None), step
                if got is None:
                    break
                dues[got[1]] = 0
                if rng.random() < 0.3:  # handling it set its next deadline, maybe before now
                    reschedule(got[1], got[0] - GRAIN // 2)
                if rng.random() < 0.2:  # or moved another key's
                    reschedule(f"k{rng.randrange(400)}", got[0] - GRAIN // 2)
            live_dues = [d for d in dues.values() if d]
            nxt = wheel.next_due()
            assert (nxt is None) == (not live_dues)
            assert nxt is None or nxt <= min(live_dues)


def _scan(tracking: str, at: int):
    return ev(
        "zto",
        "carrier",
        None,
        "PICKED_UP",
        at=at,
        tracking_no=tracking,
        tracking_valid=True,
        raw=b'{"raw": 1}',
        origin={"file": "f", "line": 1},
    )


def _registration(order_id: str, tracking: str, at: int):
    return ev(
        "wms", "wms", order_id, "LABEL_CREATED", at=at, tracking_no=tracking, tracking_valid=True
    )


def test_index_resolves_scans_for_registered_numbers():
    idx = ReferenceIndex(Settings())
    reg = _registration("PDD2026030200001", "751234567890123", T0)
    scan = _scan("751234567890123", T0 + HOUR)
    released, dead = idx.process([reg, scan], T0 + HOUR)
    assert [(key, e.order_id) for key, e in released] == [
        ((scan.seq, 0, scan.seq), "PDD2026030200001")
    ]
    assert dead == []


def test_index_holds_an_early_scan_and_releases_it_behind_the_registration():
    idx = ReferenceIndex(Settings())
    scan = _scan("751234567890123", T0)
    assert idx.process([scan], T0) == ([], [])
    reg = _registration("PDD2026030200001", "751234567890123", T0 + HOUR)
    released, _ = idx.process([reg], T0 + HOUR)
    assert [(key, e.order_id) for key, e in released] == [
        ((reg.seq, 1, scan.seq), "PDD2026030200001")
    ]
    assert released[0][1].raw is None  # raw bytes are dropped once matched
    assert idx.pending_count == 0


def test_index_dead_letters_scans_no_order_claims_within_retention():
    settings = Settings(retention={"pending_tracking": "7d"})
    idx = ReferenceIndex(settings)
    idx.process([_scan("751234567890123", T0)], T0)
    _, dead = idx.process([], T0 + 7 * 24 * HOUR - 1)
    assert dead == []
    _, dead = idx.process([], T0 + 7 * 24 * HOUR)
    assert [(d.reason, d.value, d.raw, d.origin) for d in dead] == [
        ("unmatched_tracking", "751234567890123", b'{"raw": 1}', {"file": "f", "line": 1})
    ]


def test_index_bounds_pending_scans():
    idx = ReferenceIndex(Settings(retention={"pending_tracking_max": 2}))
    _, dead = idx.process([_scan(f"75123456789012{i}", T0 + i) for i in range(3)], T0 + 3)
    assert [(d.reason, d.value) for d in dead] == [("pending_overflow", "751234567890120")]
    assert idx.pending_count == 2


def test_index_forgets_registrations_nobody_used_for_a_whole_retention_period():
    settings = Settings(retention={"idle_order": "2d"})
    idx = ReferenceIndex(settings)
    idx.process([_registration("TB2026030200001", "SF123456789012", T0)], T0)
    idx.process([_scan("SF000000000000", T0 + 24 * HOUR)], T0 + 24 * HOUR)  # rotation 1
    assert idx.lookup(tracking_key("SF123456789012")) == "TB2026030200001"  # promoted back
    idx.process([_scan("SF000000000001", T0 + 48 * HOUR)], T0 + 48 * HOUR)  # rotation 2
    idx.process([_scan("SF000000000002", T0 + 72 * HOUR)], T0 + 72 * HOUR)  # rotation 3
    idx.process([_scan("SF000000000003", T0 + 96 * HOUR)], T0 + 96 * HOUR)  # rotation 4
    assert idx.lookup(tracking_key("SF123456789012")) is None
