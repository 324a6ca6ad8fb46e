"""The reference index and its routing: an order is found by any id it is known by.

Events that name an order only by a channel's or a payment's id (`Event.ref`) wait for
the event that links that id to the order (`Event.links`), exactly like carrier scans
wait for a tracking number's registration.
"""

from __future__ import annotations

from typing import Any

from schemas import errors
from schemas.config import Settings
from schemas.event import DeadLetter, Event
from state.reference_index import ReferenceIndex, registered_keys, tracking_key, wait_key
from tests.helpers import HOUR, MIN, T0, ev, mark

OID = "TB2026030200001"
OTHER = "TB2026030200002"
TID = "taobao:3456789012345678"


def _link(order_id: str, at: int, *links: str, tracking: str | None = None) -> Event:
    """The OMS event that ties the channel's id (and maybe a tracking number) to the order."""
    kw: dict[str, object] = {"channel": "taobao", "links": links}
    if tracking is not None:
        kw.update(tracking_no=tracking, tracking_valid=True)
    return ev("oms", "oms", order_id, "PAID", at=at, **kw)


def _by_ref(ref: str, at: int, status: str = "PAID") -> Event:
    """A channel event that names its order only by the channel's own id."""
    return ev(
        "taobao", "channel", None, status, at=at, ref=ref,
        raw=b'{"tid": 1}', origin={"file": "f", "line": 7}, raw_size=9, raw_sha256="ab12",
    )  # fmt: skip


def test_an_event_by_a_linked_reference_goes_to_its_order_at_once():
    idx = ReferenceIndex(Settings())
    link = _link(OID, T0, TID)
    later = _by_ref(TID, T0 + MIN)
    released, dead = idx.process([link, later], T0 + MIN)
    assert [(key, e.order_id) for key, e in released] == [((later.seq, 0, later.seq), OID)]
    assert dead == [] and idx.pending_count == 0
    # what it kept for a dead letter stays behind: with processes, this event crosses to its
    # order's shard, and its raw bytes were most of what crossed
    ((_, out),) = released
    assert (out.raw, out.origin, out.raw_size, out.raw_sha256) == (None, None, None, None)


def test_events_before_their_link_wait_and_follow_it_in_input_order():
    idx = ReferenceIndex(Settings())
    first, second = _by_ref(TID, T0), _by_ref(TID, T0 + MIN, "LABEL_CREATED")
    assert idx.process([first, second], T0 + MIN) == ([], [])
    assert idx.pending_count == 2
    link = _link(OID, T0 + HOUR, TID)
    released, dead = idx.process([link], T0 + HOUR)
    assert [(key, e.order_id) for key, e in released] == [
        ((link.seq, 1, first.seq), OID),
        ((link.seq, 1, second.seq), OID),
    ]
    assert dead == [] and idx.pending_count == 0 and idx.pending_bytes == 0
    # kept only while waiting
    assert all((e.raw, e.origin, e.raw_size, e.raw_sha256) == (None,) * 4 for _, e in released)


def test_a_reference_nobody_links_in_time_is_dead_lettered_unlinked_reference():
    idx = ReferenceIndex(Settings(retention={"pending_tracking": "2d"}))
    idx.process([_by_ref(TID, T0)], T0)
    assert idx.process([], T0 + 48 * HOUR - 1) == ([], [])
    _, dead = idx.process([], T0 + 48 * HOUR)
    assert [(d.reason, d.value, d.source, d.raw, d.origin) for d in dead] == [
        (errors.UNLINKED_REFERENCE, TID, "taobao", b'{"tid": 1}', {"file": "f", "line": 7})
    ]
    assert isinstance(dead[0], DeadLetter) and TID in dead[0].error
    # the link arriving after the bound finds nothing to release
    released, _ = idx.process([_link(OID, T0 + 49 * HOUR, TID)], T0 + 49 * HOUR)
    assert released == []


def test_waiting_references_and_scans_share_the_count_bound():
    idx = ReferenceIndex(Settings(retention={"pending_tracking_max": 2}))
    scan = ev("sf", "carrier", None, "PICKED_UP", at=T0, tracking_no="SF1", tracking_valid=True)
    items = [scan, _by_ref(TID, T0 + 1), _by_ref("douyin:3456789012345678", T0 + 2)]
    _, dead = idx.process(items, T0 + 2)
    assert [(d.reason, d.value) for d in dead] == [(errors.PENDING_OVERFLOW, "SF1")]
    assert idx.pending_count == 2


def test_the_same_id_in_two_namespaces_is_two_orders():
    idx = ReferenceIndex(Settings())
    idx.process([_link(OID, T0, "taobao:12345"), _link(OTHER, T0, "douyin:12345")], T0)
    assert (idx.lookup("taobao:12345"), idx.lookup("douyin:12345")) == (OID, OTHER)
    assert idx.lookup("shopify:12345") is None


def test_a_link_that_would_move_a_reference_to_another_order_is_refused_and_counted():
    idx = ReferenceIndex(Settings())
    idx.process([_link(OID, T0, TID)], T0)
    idx.process([_link(OTHER, T0 + MIN, TID)], T0 + MIN)
    assert idx.lookup(TID) == OID and idx.conflicts == 1
    later = _by_ref(TID, T0 + 2 * MIN)
    released, _ = idx.process([later], T0 + 2 * MIN)
    assert [e.order_id for _, e in released] == [OID]
    idx.process([_link(OID, T0 + 3 * MIN, TID)], T0 + 3 * MIN)  # the holder again: no conflict
    assert idx.conflicts == 1


def test_a_reused_tracking_number_moves_to_the_newer_order():
    """Carriers recycle numbers: unlike links, the latest registration of a number wins."""
    idx = ReferenceIndex(Settings())
    idx.process([_link(OID, T0, tracking="SF123456789012")], T0)
    idx.process([_link(OTHER, T0 + HOUR, tracking="SF123456789012")], T0 + HOUR)
    assert idx.lookup(tracking_key("SF123456789012")) == OTHER and idx.conflicts == 0


def test_links_nobody_used_for_a_whole_retention_period_fall_away():
    idx = ReferenceIndex(Settings(retention={"idle_order": "2d"}))
    idx.process([_link(OID, T0, TID)], T0)
    for day in range(1, 5):  # a rotation a day (half of idle_order)
        idx.process([_by_ref(f"taobao:{day}", T0 + day * 24 * HOUR)], T0 + day * 24 * HOUR)
        if day == 1:
            assert idx.lookup(TID) == OID  # still there, promoted back to current
    assert idx.lookup(TID) is None
    # a link forgotten this way may be claimed again without a conflict
    idx.process([_link(OTHER, T0 + 5 * 24 * HOUR, TID)], T0 + 5 * 24 * HOUR)
    assert idx.lookup(TID) == OTHER and idx.conflicts == 0


def test_a_registration_registers_only_the_references_its_shard_owns():
    idx = ReferenceIndex(Settings())
    link = _link(OID, T0, TID, "stripe_pi:pi_3Mt", tracking="SF123456789012")
    idx.process([link], T0, owns=lambda key: key.startswith("taobao:"))
    assert idx.current == {TID: OID}


def test_what_an_event_registers_and_what_it_waits_by():
    link = _link(OID, T0, TID, tracking="SF123456789012")
    # a tracking number is its own key (the order's string, no copy): references have a ':'
    assert registered_keys(link) == ("SF123456789012", TID)
    invalid = ev("oms", "oms", OID, "PAID", at=T0, tracking_no="x", tracking_valid=False)
    assert registered_keys(invalid) == ()  # an invalid number names nothing
    scan = ev("sf", "carrier", None, "PICKED_UP", at=T0, tracking_no="SF1", tracking_valid=True)
    assert wait_key(scan) == "SF1"
    scan.tracking_no = "taobao:1"  # a number that looks like a reference is not taken for one
    assert wait_key(scan) == "tracking:taobao:1"
    scan.ref = "sf_order:ORD-1"  # a scan with the merchant's reference goes by it
    assert wait_key(scan) == "sf_order:ORD-1"
    scan.ref = "tracking:SF1"  # a reference that is a tracking number goes by the number
    assert wait_key(scan) == "SF1"
    assert wait_key(ev("x", "channel", None, "PAID", at=T0)) is None


def test_a_scan_whose_number_looks_like_a_reference_is_not_resolved_by_it():
    idx = ReferenceIndex(Settings(retention={"pending_tracking": "1d"}))
    scan = ev("sf", "carrier", None, "PICKED_UP", at=T0, tracking_no=TID, tracking_valid=False)
    released, _ = idx.process([_link(OID, T0, TID), scan], T0)
    assert released == [] and idx.pending_count == 1
    _, [dl] = idx.process([], T0 + 24 * HOUR)
    assert (dl.reason, dl.value) == (errors.UNMATCHED_TRACKING, TID)


# ---------------------------------------------------------------- routing
class _Prepared:
    """A normalizer that hands back prepared events: the router's side of the contract."""

    def __init__(self, events: dict[bytes, Event]) -> None:
        self._events = events

    def normalize(self, raw: bytes, **_: object) -> Event:
        return self._events[raw]


def _route(settings: Settings, *events: Event) -> dict[str, Any]:
    """The router's messages by their stateful step's key (Records under "out")."""
    from dataflows.messages import Records
    from dataflows.router import Router

    prepared = {f"line{i}".encode(): e for i, e in enumerate(events)}
    lines = [(e.seq, raw, {"line": i}) for i, (raw, e) in enumerate(prepared.items())]
    msgs = Router(settings, _Prepared(prepared)).route(mark(), lines, "orders")
    return {"out" if isinstance(m, Records) else m.key: m for m in msgs}


def _index_items(out: dict[str, Any], i: int) -> list[Event]:
    from dataflows.messages import index_key

    return out[index_key(i)].events


def _direct(settings: Settings, out: dict[str, Any]) -> list[Event]:
    """What went straight to the order shards."""
    from dataflows.messages import shard_key

    keys = [shard_key(i) for i in range(settings.pipeline.shards)]
    return [e for k in keys for e in out[k].events]


def test_an_event_by_reference_goes_to_the_index_shard_of_its_reference_only():
    from dataflows.router import index_shard, index_shards

    settings = Settings(pipeline={"shards": 16})
    n = index_shards(settings)
    by_ref = _by_ref(TID, T0)
    out = _route(settings, by_ref)
    assert _direct(settings, out) == []
    assert {i: _index_items(out, i) for i in range(n) if _index_items(out, i)} == {
        index_shard(TID, n): [by_ref]
    }
    assert by_ref.raw == b"line0" and by_ref.origin == {"line": 0}  # for its dead letter


def test_a_registration_goes_to_its_order_and_to_the_index_shard_of_each_reference_once():
    from dataflows.router import index_shard, index_shards

    settings = Settings(pipeline={"shards": 16})
    n = index_shards(settings)
    refs = [f"taobao:{i}" for i in range(40)]  # more references than index shards: some share
    link = _link(OID, T0, *refs, tracking="SF123456789012")
    out = _route(settings, link)
    assert _direct(settings, out) == [link]
    want = {index_shard(k, n) for k in ("SF123456789012", *refs)}
    assert {i for i in range(n) if _index_items(out, i)} == want
    # once a shard, as a Link naming that shard's references only, all of them once
    links = [item for i in range(n) for item in _index_items(out, i)]
    assert all(len(_index_items(out, i)) <= 1 for i in range(n))
    assert all(lk[:3] == (link.seq, link.received_ms, OID) for lk in links)
    assert sorted(r for lk in links for r in lk[3]) == sorted(("SF123456789012", *refs))
    assert all(
        index_shard(r, n) == i for i in range(n) for lk in _index_items(out, i) for r in lk[3]
    )
    assert link.raw is None  # a registration keeps no raw bytes


def test_every_index_shard_gets_one_message_a_batch_even_an_empty_one():
    from dataflows.messages import index_key
    from dataflows.router import index_shards

    settings = Settings(pipeline={"shards": 16})
    out = _route(settings, _by_ref(TID, T0), _link(OID, T0, TID))
    assert [k for k in out if k.startswith("i")] == [
        index_key(i) for i in range(index_shards(settings))
    ]


def test_an_order_whose_canonical_id_is_namespaced_is_found_by_its_tracking_number():
    """Should a channel's id be an order's canonical one (no OMS), nothing here minds."""
    idx = ReferenceIndex(Settings())
    shop = "shopify:5123456789012"
    reg = ev("shopify", "channel", shop, "LABEL_CREATED", at=T0, tracking_no="SF1",
             tracking_valid=True)  # fmt: skip
    scan = ev("aftership", "carrier", None, "IN_TRANSIT", at=T0 + 1, tracking_no="SF1")
    released, _ = idx.process([reg, scan], T0 + 1)
    assert [e.order_id for _, e in released] == [shop]


def test_events_leave_the_router_without_what_only_the_health_step_reads():
    """Source health reads an event's payload keys, drift fields, raw time and zone from
    the router's `HealthBatch`; nothing after the router reads them, and with several
    processes the events that cross would carry them (a third of an event's pickle)."""
    from dataflows.messages import HEALTH_KEY

    settings = Settings(pipeline={"shards": 16})
    health_only = {
        "keys": ("order_id", "tracking_number"),
        "drift_fields": ("logistics_no",),
        "event_time_raw": "2026-03-02 08:00:00",
        "zone": "Asia/Shanghai",
    }
    direct = ev("douyin", "channel", OID, "IN_TRANSIT", at=T0, **health_only)
    waiting = _by_ref(TID, T0 + 1)
    for name, value in health_only.items():
        setattr(waiting, name, value)
    out = _route(settings, direct, waiting)
    [routed] = _direct(settings, out)
    [held] = [e for k, m in out.items() if k.startswith("i") for e in m.events]
    for e in (routed, held):
        assert (e.keys, e.drift_fields, e.event_time_raw, e.zone) == ((), (), None, None)
    assert (routed.order_id, routed.claims) == (OID, ("IN_TRANSIT",))
    assert held.raw == b"line1"  # its line's bytes, which its dead letter would embed, stay
    drift = [tuple(d[3:]) for d in out[HEALTH_KEY].batch.drift]
    shape = (health_only["keys"], ("logistics_no",))
    assert drift == [(*shape, OID, "IN_TRANSIT"), (*shape, "", "PAID")]


def test_a_link_registers_its_references_as_the_event_it_stands_for():
    """The router tells an index shard a `Link` tuple, which the index takes as it is."""
    idx = ReferenceIndex(Settings())
    waiting = _by_ref(TID, T0)
    link = (waiting.seq + 1, T0 + 1, OID, (TID,))
    released, dead = idx.process([waiting, link], T0 + 1, owns=lambda key: key == TID)
    assert [(key, e.order_id) for key, e in released] == [((link[0], 1, waiting.seq), OID)]
    assert dead == [] and idx.lookup(TID) == OID
    other = (link[0] + 1, T0 + 2, OTHER, ("oms:9",))
    idx.process([other], T0 + 2, owns=lambda key: key == TID)
    assert idx.lookup("oms:9") is None  # not this shard's reference
