"""Output records name the order by its canonical (OMS) id and carry the ids it is known by."""

from __future__ import annotations

import orjson
import pytest

from dataflows.lookup import OrderLookup, aliases, render
from schemas.config import Settings
from state.encode import encode
from state.evidence import MAX_REFS, REF_SEP, Order, pack_orders, remember_refs, unpack_orders
from state.records import Alert, Correction
from state.shard import OrderShard
from state.view import order_doc, timeline_member
from tests.helpers import HOUR, MIN, T0, ev, label, oms, pay

OID = "TB2026030200001"
TID = "taobao:3456789012345678"
PI = "stripe_pi:pi_3MtwBwLkdIwHu7ix28a3tqPa"


@pytest.fixture
def settings() -> Settings:
    return Settings(carriers={"sf": {"pattern": "^SF[0-9]{12}$"}})


def _records(out, kind: str) -> list:
    return [r for k, r in out if k == kind]


def test_corrections_and_alerts_carry_every_id_the_order_is_known_by(settings):
    shard = OrderShard(settings)
    out = shard.process([oms(OID, "PENDING_PAYMENT", T0, links=(TID,))], T0)
    assert [c.ids for c in _records(out, "corrected")] == [[TID]]
    # a payment that named the order by its PaymentIntent, resolved by the index
    out = shard.process([pay(OID, T0 + MIN, ref=PI)], T0 + MIN)
    assert [c.ids for c in _records(out, "corrected")] == [[PI, TID]]
    out = shard.process([label(OID, "SF123456789012", T0 + HOUR)], T0 + 5 * HOUR)
    [corrected] = _records(out, "corrected")
    assert corrected.order_id == OID
    assert corrected.ids == [PI, TID, "tracking:SF123456789012"]
    # the payment alert fired at its deadline, before the label: the ids known then
    assert [(a.type, a.ids) for a in _records(out, "alert")] == [
        ("PAYMENT_NOT_REFLECTED", [PI, TID])
    ]


def test_an_order_known_by_no_other_id_has_none_and_keeps_no_room_for_them(settings):
    shard = OrderShard(settings)
    [(_, c)] = shard.process([oms(OID, "PENDING_PAYMENT", T0)], T0)
    assert c.ids == [] and shard.orders[OID].refs is None


def test_an_order_remembers_each_reference_once_and_at_most_max_refs(settings):
    shard = OrderShard(settings)
    events = [oms(OID, "PENDING_PAYMENT", T0, links=(TID,))]
    events += [ev("taobao", "channel", OID, "PENDING_PAYMENT", at=T0 + i, ref=TID) for i in (1, 2)]
    assert shard.orders.get(OID) is None
    shard.process(events, T0 + 2)
    assert shard.orders[OID].refs == TID  # one reference: that string, nothing more
    many = tuple(f"shopify:{i}" for i in range(2 * MAX_REFS))
    shard.process([oms(OID, "PENDING_PAYMENT", T0 + 3, links=many)], T0 + 3)
    known = shard.orders[OID].known_refs()
    assert len(known) == MAX_REFS and known[0] == TID and len(set(known)) == MAX_REFS
    o = Order()
    remember_refs(o, ("shopify:a\x1fb", TID))  # one holding the separator is left out
    assert o.known_refs() == (TID,)


def test_known_references_survive_a_snapshot():
    o = Order()
    remember_refs(o, (TID, PI))
    o.tracking = "SF123456789012"
    [back] = unpack_orders(pack_orders({OID: o})).values()
    assert back.ids() == [PI, TID, "tracking:SF123456789012"]


def test_encoded_records_carry_ids_for_consumers_to_join_on():
    c = Correction(OID, "PAID", "已支付", None, None, False, "r", [], T0, 1, ids=[TID])
    doc = orjson.loads(encode(c)[3])
    assert (doc["order_id"], doc["ids"]) == (OID, [TID])
    order_alert = Alert(
        "REFUND_STUCK", "firing", {"order_id": OID}, "m", T0, T0, ids=[TID, "tracking:SF1"]
    )
    assert orjson.loads(encode(order_alert)[3])["ids"] == [TID, "tracking:SF1"]
    source_alert = Alert("CLOCK_SKEW", "firing", {"source": "sf"}, "m", T0, T0)
    assert "ids" not in orjson.loads(encode(source_alert)[3])  # not about an order


def test_lookup_tries_a_bare_name_as_an_order_id_then_as_a_tracking_number_or_oms_id():
    assert aliases("TB2026030200001") == [
        "TB2026030200001",
        "tracking:TB2026030200001",
        "oms:TB2026030200001",  # a channel-named order links its OMS id
    ]
    assert aliases(TID) == [TID]  # a namespaced reference is only that
    assert aliases("tracking:SF123456789012") == ["tracking:SF123456789012"]


def test_lookup_table_names_the_other_ids_and_the_timeline_the_reference(settings):
    shard = OrderShard(settings)
    by_ref = ev("taobao", "channel", OID, "PAID", at=T0 + MIN, ref=TID)
    shard.process([oms(OID, "PENDING_PAYMENT", T0, links=(TID,)), by_ref], T0 + MIN)
    member = orjson.loads(timeline_member(by_ref))
    assert member["ref"] == TID
    view = OrderLookup(orjson.loads(order_doc(OID, shard.orders[OID], T0 + MIN)), [member])
    facts = {line[:18].strip(): line[18:].strip() for line in render(view).splitlines()[:13]}
    assert facts["known as"] == TID


def test_references_are_the_events_own_strings_and_a_joined_one_still_reads():
    tid, pi = "".join((TID, "")), "".join((PI, ""))  # not the constants: fresh strings
    o = Order()
    remember_refs(o, (tid, pi))
    assert o.refs[0] is tid and o.refs[1] is pi  # the strings the index keys, not copies
    o.refs = TID + REF_SEP + PI  # as snapshots before this stored them
    assert o.known_refs() == (TID, PI) and o.ids() == [PI, TID]
