"""The source registry's mechanics on synthetic sources: `[*]` and `each:` (one notification,
several events, each with its own identity), `decode:` (JSON or XML text), `kinds:`
(several message kinds per source), `identity:` and `links:` (ids in other namespaces).

Real providers' payloads are tested in their own files; these sources exist only here, so
that each mechanism is tested alone, on payloads whose every value the test chose.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from dataflows.messages import Records, ToHealth, ToIndex, ToShard
from dataflows.router import Router
from schemas import errors
from schemas.config import DEFAULT_CONFIG, ConfigError, Settings, load_settings
from schemas.event import DeadLetter, Event
from schemas.keys import MessageKeys
from schemas.normalize import Normalizer
from tests.helpers import mark
from tests.unit.test_normalize import RECEIVED_AT, RECEIVED_MS, utc_ms

SHIPPED = load_settings()
ORIGIN = {"topic": "tracking", "partition": 0, "offset": 7}

SOURCES: dict[str, Any] = {
    # SF-like route push: up to 10 routes, each with its own id
    "routes": {
        "stream": "tracking",
        "kind": "carrier",
        "carrier": "sf",
        "time_format": "naive",
        "zone": "Asia/Shanghai",
        "each": "Body.WaybillRoute[*]",
        "fields": {
            "tracking_no": ["Body.WaybillRoute[*].mailno"],
            "order_id": ["Body.WaybillRoute[*].orderid"],
            "event_time": ["Body.WaybillRoute[*].acceptTime"],
            "event_id": ["Body.WaybillRoute[*].id"],
        },
        "statuses": [
            {"path": "Body.WaybillRoute[*].opCode", "map": {"50": "PICKED_UP", "80": "DELIVERED"}}
        ],
    },
    # DHL-like: shipments[], each with events[]; the shipment's id is every event's
    "nested": {
        "stream": "tracking",
        "kind": "carrier",
        "carrier": "dhl",
        "time_format": "iso8601",
        "zone": "Europe/Berlin",
        "each": "shipments[*].events[*]",
        "fields": {
            "tracking_no": ["shipments[*].id"],
            "order_id": ["shipments[*].references[0].number"],
            "event_time": ["shipments[*].events[*].timestamp"],
        },
        "statuses": [
            {
                "path": "shipments[*].events[*].statusCode",
                "map": {"transit": "IN_TRANSIT", "delivered": "DELIVERED"},
                "refine": [
                    {
                        "path": "shipments[*].events[*].status",
                        "match": "^OUT_FOR_DELIVERY$",
                        "status": "OUT_FOR_DELIVERY",
                    }
                ],
            }
        ],
    },
    # AfterShip-like: checkpoints under msg, the tracking number above them
    "inherit": {
        "stream": "tracking",
        "kind": "carrier",
        "time_format": "iso8601",
        "each": "msg.checkpoints[*]",
        "zone_from": {"path": "msg.checkpoints[*].country_iso3", "map": {"CHN": "Asia/Shanghai"}},
        "fields": {
            "tracking_no": ["msg.tracking_number"],
            "carrier": ["msg.slug"],
            "event_time": ["msg.checkpoints[*].checkpoint_time"],
            "event_id": ["event_id"],
        },
        "statuses": [
            {
                "path": "msg.checkpoints[*].tag",
                "map": {"InTransit": "IN_TRANSIT", "Delivered": "DELIVERED"},
            }
        ],
    },
    # Shopify-like: one event per fulfillment, the order's own status read above them
    "orderful": {
        "stream": "orders",
        "kind": "channel",
        "channel": "shopify",
        "time_format": "rfc3339",
        "identity": {"namespace": "shopify"},
        "each": "fulfillments[*]",
        "fields": {
            "order_id": ["id"],
            "tracking_no": ["fulfillments[*].tracking_number"],
            "event_time": ["updated_at"],
        },
        "statuses": [
            {"path": "financial_status", "map": {"pending": "PENDING_PAYMENT", "paid": "PAID"}}
        ],
    },
    # AfterShip-like with a tracking that has no checkpoint yet: kinds pick the form
    "tracker": {
        "stream": "tracking",
        "kind": "carrier",
        "time_format": "iso8601",
        "fields": {"tracking_no": ["msg.tracking_number"], "carrier": ["msg.slug"]},
        "kinds": {
            "checkpoints": {
                "present": "msg.checkpoints.0",
                "each": "msg.checkpoints[*]",
                "fields": {"event_time": ["msg.checkpoints[*].checkpoint_time"]},
                "statuses": [
                    {"path": "msg.checkpoints[*].tag", "map": {"InTransit": "IN_TRANSIT"}}
                ],
            },
            "tracking": {
                "present": "msg.tag",
                "fields": {"event_time": ["msg.updated_at"]},
                "statuses": [{"path": "msg.tag", "map": {"InfoReceived": "LABEL_CREATED"}}],
            },
        },
    },
    # J&T-like: a form whose bizContent holds JSON
    "formjson": {
        "stream": "tracking",
        "kind": "carrier",
        "carrier": "jt",
        "time_format": "naive",
        "zone": "Asia/Shanghai",
        "decode": {"bizContent": "json"},
        "each": "bizContent.details[*]",
        "fields": {
            "tracking_no": ["bizContent.billCode"],
            "event_time": ["bizContent.details[*].scanTime"],
        },
        "statuses": [{"path": "bizContent.details[*].scanType", "map": {"快件揽收": "PICKED_UP"}}],
    },
    # SF's XML mode: the route push as XML text in `content`
    "formxml": {
        "stream": "tracking",
        "kind": "carrier",
        "carrier": "sf",
        "time_format": "naive",
        "zone": "Asia/Shanghai",
        "decode": {"content": "xml"},
        "each": "content.Body.WaybillRoute[*]",
        "fields": {
            "tracking_no": ["content.Body.WaybillRoute[*].mailno"],
            "event_time": ["content.Body.WaybillRoute[*].acceptTime"],
            "event_id": ["content.Body.WaybillRoute[*].id"],
        },
        "statuses": [
            {
                "path": "content.Body.WaybillRoute[*].opCode",
                "map": {"50": "PICKED_UP", "80": "DELIVERED"},
            }
        ],
    },
    # Shopee-like: code 3 is an order status, code 4 a tracking number
    "pushes": {
        "stream": "orders",
        "kind": "channel",
        "channel": "shopee",
        "time_format": "epoch_s",
        "identity": {"namespace": "shopee"},
        "fields": {"order_id": ["data.ordersn"], "event_time": ["data.update_time", "timestamp"]},
        "kind_by": "code",
        "kinds": {
            "status": {
                "when": ["3"],
                "statuses": [{"path": "data.status", "map": {"READY_TO_SHIP": "PAID"}}],
            },
            "tracking": {
                "when": ["4"],
                "fields": {"tracking_no": ["data.tracking_no"]},
                "statuses": [{"path": "code", "map": {"4": None}}],
            },
        },
    },
    # Stripe-like: globs; the more specific kind first
    "events": {
        "stream": "payments",
        "kind": "gateway",
        "time_format": "epoch_s",
        "fields": {
            "order_id": ["data.object.metadata.order_id"],
            "event_time": ["created"],
            "event_id": ["id"],
        },
        "kind_by": "type",
        "kinds": {
            "dispute": {
                "when": ["charge.dispute.*"],
                "fields": {"order_id": ["data.object.metadata.order_id", "data.object.charge"]},
                "identity": {"namespace": "stripe_ch"},
                "statuses": [{"path": "type", "map": {"charge.dispute.created": None}}],
            },
            "payment_intent": {
                "when": ["payment_intent.*"],
                "statuses": [{"path": "type", "map": {"payment_intent.succeeded": "PAID"}}],
                "outcomes": {"payment_intent.succeeded": "success"},
                "links": [{"namespace": "stripe_pi", "id": ["data.object.id"]}],
            },
            "charge": {
                "when": ["charge.*"],
                "statuses": [{"path": "type", "map": {"charge.succeeded": "PAID"}}],
                "links": [{"namespace": "stripe_pi", "id": ["data.object.payment_intent"]}],
            },
        },
    },
    # a kind chosen by the presence of a path (the provider's kind is only in a header)
    "present": {
        "stream": "orders",
        "kind": "channel",
        "channel": "shopify",
        "time_format": "rfc3339",
        "identity": {"namespace": "shopify"},
        "fields": {"order_id": ["id"], "event_time": ["updated_at"]},
        "kinds": {
            "fulfillment": {
                "present": "tracking_company",
                "fields": {"order_id": ["order_id"], "tracking_no": ["tracking_number"]},
                "statuses": [{"path": "status", "map": {"success": "LABEL_CREATED"}}],
            },
            "order": {
                "present": "financial_status",
                "statuses": [{"path": "financial_status", "map": {"paid": "PAID"}}],
            },
        },
    },
    # a channel's own ids: Taobao's numeric tid
    "chan": {
        "stream": "orders",
        "kind": "channel",
        "channel": "taobao",
        "time_format": "naive",
        "zone": "Asia/Shanghai",
        "identity": {"namespace": "taobao", "pattern": "[0-9]{6,19}"},
        "fields": {"order_id": ["tid"], "event_time": ["modified"]},
        "statuses": [{"path": "status", "map": {"WAIT_SELLER_SEND_GOODS": "PAID"}}],
    },
    # a gateway whose merchant reference is the channel's id, with an attempt suffix
    "gw": {
        "stream": "payments",
        "kind": "gateway",
        "time_format": "rfc3339",
        "identity": {"namespace": "taobao", "strip": "-[0-9]{1,3}$"},
        "fields": {"order_id": ["out_trade_no"], "event_time": ["success_time"]},
        "statuses": [{"path": "trade_state", "map": {"SUCCESS": "PAID"}}],
    },
    # the OMS links its id to the channel's
    "omsl": {
        "stream": "orders",
        "kind": "oms",
        "time_format": "rfc3339",
        "fields": {"order_id": ["order_id"], "channel": ["channel"], "event_time": ["updated_at"]},
        "links": [{"namespace_from": "channel", "id": ["platform_order_id"]}],
        "statuses": [{"path": "status", "map": {"已支付": "PAID"}}],
    },
    # a carrier that dead-letters an order ref it cannot read (no fallback)
    "strict": {
        "stream": "tracking",
        "kind": "carrier",
        "carrier": "sf",
        "time_format": "naive",
        "zone": "Asia/Shanghai",
        "identity": {"fallback": "none"},
        "fields": {"tracking_no": ["mailno"], "order_id": ["orderid"], "event_time": ["t"]},
        "statuses": [{"path": "opCode", "map": {"50": "PICKED_UP"}}],
    },
}

SETTINGS = Settings(
    channels=SHIPPED.channels,
    carriers=SHIPPED.carriers,
    refund_order=SHIPPED.refund_order,
    sources={**SHIPPED.sources, **SOURCES},
)
NORMALIZER = Normalizer(SETTINGS)


def envelope(source: str, body: Any, event_id: str | None = None) -> bytes:
    env: dict[str, Any] = {"stream": SETTINGS.sources[source].stream, "source": source}
    env["received_at"] = RECEIVED_AT
    if event_id is not None:
        env["event_id"] = event_id
    env["payload"] = body
    return orjson.dumps(env)


def results(source: str, body: Any, **kw: Any) -> tuple[Event | DeadLetter, ...]:
    r = NORMALIZER.normalize(envelope(source, body, **kw), origin=ORIGIN, seq=5)
    return r if type(r) is tuple else (r,)


def one(source: str, body: Any, **kw: Any) -> Event:
    (r,) = results(source, body, **kw)
    assert isinstance(r, Event), r
    return r


def dead(source: str, body: Any, reason: str, **kw: Any) -> DeadLetter:
    (r,) = results(source, body, **kw)
    assert isinstance(r, DeadLetter), r
    assert r.reason == reason, r
    return r


def route(i: int, op: str = "50", **kw: Any) -> dict[str, Any]:
    r = {"id": f"R{i}", "mailno": "SF123456789012", "orderid": "TB2026012700123", "opCode": op}
    return {**r, "acceptTime": f"2026-01-27 10:0{i}:00", **kw}


def push(*routes: dict[str, Any]) -> dict[str, Any]:
    return {"Body": {"WaybillRoute": list(routes)}}


# ---------------------------------------------------------------- each: one event per element
def test_a_route_push_gives_one_event_per_route_with_its_own_id_and_time() -> None:
    evs = results("routes", push(route(1), route(2, "80"), route(3)))
    assert [type(e) for e in evs] == [Event, Event, Event]
    assert [e.event_id for e in evs] == ["R1", "R2", "R3"]  # type: ignore[union-attr]
    assert [e.claims for e in evs] == [("PICKED_UP",), ("DELIVERED",), ("PICKED_UP",)]  # type: ignore[union-attr]
    assert [e.event_ms for e in evs] == [utc_ms(2026, 1, 27, 2, i) for i in (1, 2, 3)]  # type: ignore[union-attr]
    e = evs[1]
    assert isinstance(e, Event)
    assert (e.order_id, e.tracking_no, e.carrier, e.tracking_valid) == (
        "TB2026012700123",
        "SF123456789012",
        "sf",
        True,
    )
    assert (e.seq, e.received_ms, e.keys) == (5, RECEIVED_MS, ("Body",))


def test_a_flat_payload_is_the_one_element_when_each_is_absent() -> None:
    ev = one("routes", route(1, "80"))
    assert (ev.event_id, ev.claims, ev.tracking_no) == ("R1", ("DELIVERED",), "SF123456789012")


def test_a_lone_object_where_the_list_is_expected_is_one_element() -> None:
    evs = results("routes", {"Body": {"WaybillRoute": route(4)}})
    assert [e.event_id for e in evs] == ["R4"]  # type: ignore[union-attr]


def test_an_empty_list_is_a_dead_letter_not_a_silent_drop() -> None:
    dl = NORMALIZER.normalize(envelope("routes", push()), origin=ORIGIN)
    assert isinstance(dl, DeadLetter)
    assert dl.reason == errors.NO_EVENTS
    assert "Body.WaybillRoute[*]" in dl.error


def test_a_bad_element_does_not_sink_its_siblings_and_its_dead_letter_names_it() -> None:
    evs = results("routes", push(route(1), route(2, "99"), "junk", route(4)))
    assert [type(e) for e in evs] == [Event, DeadLetter, DeadLetter, Event]
    bad, junk = evs[1], evs[2]
    assert isinstance(bad, DeadLetter) and isinstance(junk, DeadLetter)
    assert (bad.reason, bad.value, bad.source, bad.seq) == (
        errors.UNMAPPED_STATUS,
        "99",
        "routes",
        5,
    )
    assert "element 1 of Body.WaybillRoute[*]" in bad.error
    assert bad.origin == {**ORIGIN, "element": "1"}  # distinct dead-letter ids per element
    assert (junk.reason, junk.origin["element"]) == (errors.INVALID_FIELD, "2")
    assert bad.raw == junk.raw  # the whole notification, for a replay


def ids(source: str, body: Any, **kw: Any) -> list[str]:
    out = []
    for e in results(source, body, **kw):
        assert isinstance(e, Event), e
        out.append(e.event_id)
    return out


def test_an_element_without_an_id_of_its_own_is_identified_by_what_it_says() -> None:
    no_id = [{k: v for k, v in route(i).items() if k != "id"} for i in (1, 2, 3)]
    first = ids("routes", push(*no_id))
    assert all(re.fullmatch(r"h:[0-9a-f]{16}", i) for i in first) and len(set(first)) == 3
    # redelivered whole, under another delivery id, or reordered: the same events
    assert ids("routes", push(*no_id), event_id="N-2") == first
    assert ids("routes", push(*reversed(no_id))) == first[::-1]
    # a later push that repeats the first two routes and adds one: only the new one is new
    later = ids("routes", push(*no_id[:2], {**no_id[2], "opCode": "80"}))
    assert later[:2] == first[:2] and later[2] not in first
    # the same route about another parcel is another event
    other = {**no_id[0], "mailno": "SF123456789013"}
    assert ids("routes", push(other)) != first[:1]
    # and a flat payload keeps its identity rule (the payload's hash, or the envelope's id)
    assert ids("routes", no_id[0], event_id="N-3") == ["N-3"]


def test_what_an_element_event_reads_from_above_the_element_is_part_of_its_identity() -> None:
    order = {"id": 5123456789012, "financial_status": "pending"}
    order |= {"updated_at": "2026-01-15T12:00:00-05:00"}
    order["fulfillments"] = [{"tracking_number": "1Z999AA10123456784"}]
    (pending,) = ids("orderful", order)
    # the order is paid (same second, same fulfillment): a new event all the same
    paid = {**order, "financial_status": "paid"}
    (after,) = ids("orderful", paid)
    assert after != pending
    assert ids("orderful", paid) == [after]


def test_nested_wildcards_bind_the_shipment_to_each_of_its_events() -> None:
    body = {
        "shipments": [
            {
                "id": "1234567890",
                "references": [{"number": "WEB2026020900007"}],
                "events": [
                    {"timestamp": "2026-02-11T18:44:22+01:00", "statusCode": "transit"},
                    {
                        "timestamp": "2026-02-12T09:00:00",  # naive: local to the source zone
                        "statusCode": "transit",
                        "status": "OUT_FOR_DELIVERY",
                    },
                ],
            },
            {
                "id": "2234567890",
                "events": [{"timestamp": "2026-02-13", "statusCode": "delivered"}],
            },
        ]
    }
    evs = results("nested", body, event_id="D1")
    assert all(isinstance(e, Event) for e in evs)
    got = [(e.tracking_no, e.order_id, e.claims, e.event_ms) for e in evs]  # type: ignore[union-attr]
    assert got == [
        (
            "1234567890",
            "WEB2026020900007",
            ("IN_TRANSIT",),
            utc_ms(2026, 2, 11, 17, 44, 22),
        ),
        ("1234567890", "WEB2026020900007", ("OUT_FOR_DELIVERY",), utc_ms(2026, 2, 12, 8)),
        ("2234567890", None, ("DELIVERED",), utc_ms(2026, 2, 12, 23)),
    ]
    # one event of another shipment that says the same: another event (the shipment's ids)
    twin = {"timestamp": "2026-02-13", "statusCode": "delivered"}
    body["shipments"][0]["events"].append(twin)
    again = ids("nested", body)
    assert len(set(again)) == 4


def test_a_shipment_without_events_is_its_own_element() -> None:
    body = {
        "shipments": [{"id": "1234567890", "timestamp": "2026-02-13", "statusCode": "delivered"}]
    }
    (ev,) = results("nested", body, event_id="D2")
    assert isinstance(ev, Event)
    assert (ev.claims, ev.tracking_no) == (("DELIVERED",), "1234567890")


def test_fields_above_the_list_are_inherited_by_every_checkpoint() -> None:
    body = {
        "event_id": "AS-77",
        "msg": {
            "tracking_number": "1Z999AA10123456784",
            "slug": "ups",
            "checkpoints": [
                {"checkpoint_time": "2021-01-14T00:52:00", "tag": "InTransit"},
                {"checkpoint_time": "2021-01-15", "tag": "Delivered"},
            ],
        },
    }
    evs = results("inherit", body)
    got = [(e.tracking_no, e.carrier, e.claims, e.event_ms, e.event_time_raw) for e in evs]  # type: ignore[union-attr]
    assert got == [
        (
            "1Z999AA10123456784",
            "ups",
            ("IN_TRANSIT",),
            utc_ms(2021, 1, 14, 0, 52),
            "2021-01-14T00:52:00",
        ),
        ("1Z999AA10123456784", "ups", ("DELIVERED",), utc_ms(2021, 1, 15), "2021-01-15"),
    ]
    # AfterShip resends every checkpoint: the next webhook's old checkpoints are the same events
    first = [e.event_id for e in evs]  # type: ignore[union-attr]
    body["event_id"] = "AS-78"
    body["msg"]["checkpoints"].append({"checkpoint_time": "2021-01-16", "tag": "Delivered"})
    assert ids("inherit", body)[:2] == first


def test_offset_less_times_are_local_to_the_zone_the_checkpoints_country_maps_to() -> None:
    cps = [
        {"checkpoint_time": "2026-12-05T10:00:00.123", "tag": "InTransit", "country_iso3": "CHN"},
        {"checkpoint_time": "2026-12-06", "tag": "InTransit", "country_iso3": " CHN "},
        {"checkpoint_time": "2026-12-06T10:00:00", "tag": "InTransit", "country_iso3": "DEU"},
        {"checkpoint_time": "2026-12-06T10:00:00-05:00", "tag": "Delivered", "country_iso3": "CHN"},
    ]
    body = {"msg": {"tracking_number": "1Z999AA10123456784", "checkpoints": cps}}
    got = [(e.event_ms, e.zone, e.event_time_raw) for e in results("inherit", body)]  # type: ignore[union-attr]
    assert got == [
        (utc_ms(2026, 12, 5, 2, ms=123), "Asia/Shanghai", "2026-12-05T10:00:00.123"),
        (utc_ms(2026, 12, 5, 16), "Asia/Shanghai", "2026-12-06"),
        (utc_ms(2026, 12, 6, 10), "UTC", "2026-12-06T10:00:00"),  # not in the map: the source's
        (utc_ms(2026, 12, 6, 15), "Asia/Shanghai", "2026-12-06T10:00:00-05:00"),  # offset wins
    ]


def test_a_kind_by_the_lists_first_element_handles_a_notification_with_none_yet() -> None:
    msg = {"tracking_number": "1Z999AA10123456784", "slug": "ups", "tag": "InfoReceived"}
    msg |= {"updated_at": "2026-12-05T10:00:00+00:00", "checkpoints": []}
    (ev,) = results("tracker", {"msg": msg})
    assert isinstance(ev, Event) and ev.claims == ("LABEL_CREATED",)
    cp = {"checkpoint_time": "2026-12-06T10:00:00+00:00", "tag": "InTransit"}
    evs = results("tracker", {"msg": {**msg, "tag": "InTransit", "checkpoints": [cp, cp]}})
    assert [e.claims for e in evs] == [("IN_TRANSIT",), ("IN_TRANSIT",)]  # type: ignore[union-attr]
    assert evs[0].event_id == evs[1].event_id  # type: ignore[union-attr]  # one fact, twice


# ---------------------------------------------------------------- decode: JSON or XML text
def test_a_field_holding_json_is_decoded_before_paths_are_read() -> None:
    biz = {
        "billCode": "JT0001234567890",
        "details": [{"scanType": "快件揽收", "scanTime": "2026-02-01 08:00:00"}],
    }
    body = {"bizContent": orjson.dumps(biz).decode(), "digest": "x"}
    (ev,) = results("formjson", body)
    assert isinstance(ev, Event)
    assert (ev.tracking_no, ev.claims, ev.event_ms) == (
        "JT0001234567890",
        ("PICKED_UP",),
        utc_ms(2026, 2, 1),
    )
    # the same content sent as an object (a JSON mode) is read the same way
    (again,) = results("formjson", {"bizContent": biz, "digest": "x"})
    assert isinstance(again, Event) and again.claims == ev.claims


XML = (
    '<?xml version="1.0" encoding="UTF-8"?><Request service="RoutePushService" lang="zh-CN"><Body>'
    '<WaybillRoute id="X1" mailno="SF123456789012" opCode="50" acceptTime="2026-01-27 10:01:00"/>'
    '<WaybillRoute id="X2" mailno="SF123456789012" opCode="80" acceptTime="2026-01-27 18:00:00"/>'
    "</Body></Request>"
)


def test_a_field_holding_xml_is_decoded_attributes_and_repeats_included() -> None:
    evs = results("formxml", {"content": XML})
    assert [(e.event_id, e.claims) for e in evs] == [("X1", ("PICKED_UP",)), ("X2", ("DELIVERED",))]  # type: ignore[union-attr]
    lone = XML.replace(XML[XML.index('<WaybillRoute id="X2"') : XML.index("</Body>")], "")
    assert [e.event_id for e in results("formxml", {"content": lone})] == ["X1"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("source", "body", "words"),
    [
        ("formjson", {"bizContent": "{not json"}, "not JSON"),
        ("formjson", {"bizContent": "42"}, "not an object"),
        ("formjson", {"bizContent": 42}, "not json text"),
        ("formxml", {"content": "<a><b></a>"}, "not XML"),
        (
            "formxml",
            {"content": '<!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;&a;</r>'},
            "DOCTYPE",
        ),
        ("formxml", {"content": "<a>" * 100 + "</a>" * 100}, "deeper"),
    ],
)
def test_undecodable_text_is_a_dead_letter(source: str, body: dict[str, Any], words: str) -> None:
    dl = dead(source, body, errors.UNDECODABLE)
    assert words in dl.error


# ---------------------------------------------------------------- kinds
def test_kinds_by_an_exact_value() -> None:
    status = one(
        "pushes",
        {
            "code": 3,
            "timestamp": 1769800000,
            "data": {"ordersn": "2601270ABC", "status": "READY_TO_SHIP", "update_time": 1769800100},
        },
    )
    assert (status.claims, status.ref, status.order_id, status.raw_status) == (
        ("PAID",),
        "shopee:2601270ABC",
        None,
        "READY_TO_SHIP",
    )
    tracking = one(
        "pushes",
        {
            "code": 4,
            "timestamp": 1769800000,
            "data": {"ordersn": "2601270ABC", "tracking_no": "JT0001234567890"},
        },
    )
    assert (tracking.claims, tracking.tracking_no, tracking.carrier, tracking.ref) == (
        (),
        "JT0001234567890",
        "jt",
        "shopee:2601270ABC",
    )
    assert tracking.event_ms == 1769800000_000
    dl = dead("pushes", {"code": 5, "data": {}}, errors.UNMAPPED_STATUS)
    assert (dl.value, "code='5' is of none of the kinds status, tracking" in dl.error) == (
        "5",
        True,
    )


def stripe(type_: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"evt_{type_}", "type": type_, "created": 1770631240, "data": {"object": obj}}


def test_kinds_by_glob_first_match_wins_and_links_per_kind() -> None:
    meta = {"metadata": {"order_id": "WEB2026020900007"}}
    pi = one("events", stripe("payment_intent.succeeded", {"id": "pi_1", **meta}))
    ch = one("events", stripe("charge.succeeded", {"id": "ch_1", "payment_intent": "pi_1", **meta}))
    assert (pi.claims, pi.outcome, pi.links) == (("PAID",), "success", ("stripe_pi:pi_1",))
    assert (ch.claims, ch.outcome, ch.links) == (("PAID",), None, ("stripe_pi:pi_1",))
    assert pi.order_id == ch.order_id == "WEB2026020900007"
    # charge.dispute.created is listed before charge.*: its own kind, its own identity
    dispute = one("events", stripe("charge.dispute.created", {"id": "dp_1", "charge": "ch_1"}))
    assert (dispute.claims, dispute.order_id, dispute.ref) == ((), None, "stripe_ch:ch_1")
    # a type of a known kind that the kind's map lacks: unmapped as before
    failed = stripe("charge.failed", {"id": "ch_2", **meta})
    assert dead("events", failed, errors.UNMAPPED_STATUS).value == "charge.failed"
    assert (
        dead("events", stripe("refund.created", {}), errors.UNMAPPED_STATUS).value
        == "refund.created"
    )


def test_kinds_by_the_presence_of_a_path() -> None:
    order = one(
        "present",
        {
            "id": 5123456789012,
            "financial_status": "paid",
            "updated_at": "2026-01-15T12:00:00-05:00",
        },
    )
    assert (order.claims, order.ref) == (("PAID",), "shopify:5123456789012")
    ful = one(
        "present",
        {
            "id": 1,
            "order_id": 5123456789012,
            "status": "success",
            "tracking_company": "UPS",
            "tracking_number": "1Z999AA10123456784",
            "updated_at": "2026-01-15T12:00:00-05:00",
        },
    )
    assert (ful.claims, ful.ref, ful.tracking_no) == (
        ("LABEL_CREATED",),
        "shopify:5123456789012",
        "1Z999AA10123456784",
    )
    dl = dead(
        "present", {"id": 1, "updated_at": "2026-01-15T12:00:00-05:00"}, errors.UNMAPPED_STATUS
    )
    assert "none of the kinds fulfillment, order" in dl.error


# ---------------------------------------------------------------- identity and links
def chan(tid: Any) -> dict[str, Any]:
    return {"tid": tid, "status": "WAIT_SELLER_SEND_GOODS", "modified": "2026-01-27 10:00:00"}


def test_a_channel_id_in_its_namespace_is_a_reference() -> None:
    ev = one("chan", chan(3456789012345678))  # Taobao's tid is a JSON number
    assert (ev.order_id, ev.ref, ev.channel) == (None, "taobao:3456789012345678", "taobao")
    assert one("chan", chan(" 3456789012345678 ")).ref == "taobao:3456789012345678"
    # the global id format is always the OMS's id, in any namespace
    ev = one("chan", chan("TB2026012700123"))
    assert (ev.order_id, ev.ref) == ("TB2026012700123", None)
    ev = one("chan", chan("REF-TB2026012700123-01"))
    assert (ev.order_id, ev.refund_id, ev.ref) == (
        "TB2026012700123",
        "REF-TB2026012700123-01",
        None,
    )
    dl = dead("chan", chan("12ab"), errors.INVALID_ORDER_ID)
    assert "nor a taobao id" in dl.error and dl.value == "12ab"
    assert dead("chan", chan(True), errors.INVALID_ORDER_ID).value == "true"


def gw(ref: str) -> dict[str, Any]:
    return {
        "out_trade_no": ref,
        "trade_state": "SUCCESS",
        "success_time": "2026-01-27T10:05:09+08:00",
    }


def test_a_gateway_reference_loses_its_attempt_suffix() -> None:
    assert one("gw", gw("3456789012345678")).channel == "taobao"  # the namespace's channel
    assert (
        one("gw", gw("TB2026012700123-2")).order_id,
        one("gw", gw("TB2026012700123-2")).ref,
    ) == ("TB2026012700123", None)
    assert one("gw", gw("3456789012345678-12")).ref == "taobao:3456789012345678"
    assert one("gw", gw("3456789012345678")).ref == "taobao:3456789012345678"
    # a refund id's own -nn is not an attempt suffix
    ev = one("gw", gw("REF-TB2026012700123-01"))
    assert (ev.order_id, ev.refund_id) == ("TB2026012700123", "REF-TB2026012700123-01")


def test_the_oms_links_its_id_to_the_channels() -> None:
    body = {
        "order_id": "TB2026012700123",
        "channel": "Taobao",
        "platform_order_id": 3456789012345678,
        "status": "已支付",
        "updated_at": "2026-01-27T10:00:00+08:00",
    }
    ev = one("omsl", body)
    assert (ev.order_id, ev.ref, ev.links) == (
        "TB2026012700123",
        None,
        ("taobao:3456789012345678",),
    )
    body |= {"order_id": "WEB2026020900007", "channel": None}  # the id's code names the channel
    assert one("omsl", body).links == ("web:3456789012345678",)
    assert one("omsl", {**body, "platform_order_id": None}).links == ()
    # the oms namespace keeps today's rule: only global ids
    assert dead("omsl", {**body, "order_id": "3456"}, errors.INVALID_ORDER_ID).value == "3456"


def test_a_carriers_unreadable_order_ref_falls_back_to_the_tracking_number() -> None:
    evs = results("routes", push(route(1, orderid="ORD-77")))
    (ev,) = evs
    assert isinstance(ev, Event)
    assert (ev.order_id, ev.ref, ev.tracking_no) == (None, None, "SF123456789012")
    # without a tracking number there is nothing to find the order by: as before
    dl = results("routes", push(route(1, orderid="ORD-77", mailno=None)))[0]
    assert isinstance(dl, DeadLetter) and dl.reason == errors.INVALID_ORDER_ID
    # a carrier configured without the fallback dead-letters it
    body = {
        "mailno": "SF123456789012",
        "orderid": "ORD-77",
        "opCode": "50",
        "t": "2026-01-27 10:00:00",
    }
    assert dead("strict", body, errors.INVALID_ORDER_ID).value == "ORD-77"


def test_the_router_routes_every_element_and_dead_letters_the_bad_one() -> None:
    raw = envelope("routes", push(route(1), route(2, "99"), route(3, orderid=None)))
    out = Router(SETTINGS).route(mark("tracking:0"), [(9, raw, ORIGIN)], "tracking")
    direct = [e for m in out if isinstance(m, ToShard) for e in m.events]
    index = [e for m in out if isinstance(m, ToIndex) for e in m.events]
    [dead_letters] = [m.records for m in out if isinstance(m, Records)]
    assert [e.event_id for e in direct] == ["R1"]  # the order id's shard
    # R1 also registers its tracking number; R3 waits for an order that holds it, with the
    # notification's bytes for its dead letter should none ever come
    [link, waiting] = index
    assert isinstance(link, tuple) and link[2:] == ("TB2026012700123", (link[3][0],))
    assert (waiting.event_id, waiting.raw is not None) == ("R3", True)
    assert [(d.reason, d.origin["element"]) for d in dead_letters] == [
        (errors.UNMAPPED_STATUS, "1")
    ]  # type: ignore[union-attr]
    health = next(m for m in out if isinstance(m, ToHealth))
    assert health.mark.part == "tracking:0"


def test_split_and_kind_sources_have_a_message_key() -> None:
    keys = MessageKeys(SETTINGS)
    assert keys.for_payload("routes", push(route(1), route(2))) == b"TB2026012700123"
    assert keys.for_payload("routes", route(1, orderid=None)) == b"SF123456789012"  # flat form
    tracking_push = {"code": 4, "data": {"tracking_no": "JT0001234567890"}}
    assert keys.for_payload("pushes", tracking_push) == b"JT0001234567890"  # a kind's path
    assert keys.for_payload("formjson", {"bizContent": "{}"}) is None  # still encoded


def test_every_new_reason_is_exercised_here() -> None:
    # test_normalize.py exercises the others on the shipped registry
    assert {errors.NO_EVENTS, errors.UNDECODABLE} <= set(errors.REASONS)


# ---------------------------------------------------------------- configuration errors
def _broken(tmp_path: Path, source: dict[str, Any]) -> str:
    shutil.copy(DEFAULT_CONFIG, tmp_path / "orderguard.yaml")
    shipped = yaml.safe_load((DEFAULT_CONFIG.parent / "sources.yaml").read_text(encoding="utf-8"))
    shipped["xx"] = source
    (tmp_path / "sources.yaml").write_text(
        yaml.safe_dump(shipped, allow_unicode=True), encoding="utf-8"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "orderguard.yaml")
    msg = str(info.value)
    assert f"{tmp_path / 'sources.yaml'}: sources.xx" in msg
    return msg


def _edit(name: str, **changes: Any) -> dict[str, Any]:
    spec = orjson.loads(orjson.dumps(SOURCES[name]))
    spec.update(changes)
    return spec


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (
            _edit("routes", fields={"tracking_no": ["Other[*].mailno"], "event_time": ["t"]}),
            "fields.tracking_no: 'Other[*].mailno': its [*] must repeat the start of `each`",
        ),
        (
            _edit("routes", each=None),
            "a [*] in a field path needs the source's `each:`",
        ),
        (
            _edit("routes", each="Body.WaybillRoute"),
            "each: 'Body.WaybillRoute': `each` names a list",
        ),
        (_edit("routes", each="Body.WaybillRoute[*].x"), "`each` must end with [*]"),
        (_edit("routes", each="Body..x[*]"), "unexpected"),
        (_edit("pushes", kind_by=None), "kinds.status.when: needs the source's `kind_by` path"),
        (_edit("present", kinds={"k": {"statuses": []}}), "kinds.k: a kind needs `when`"),
        (
            _edit(
                "pushes",
                kinds={"k": {"when": ["3"], "statuses": [{"path": "s", "map": {"A": "NOPE"}}]}},
            ),
            "kinds.k.statuses.0.map.A: 'NOPE' is not a canonical status",
        ),
        (
            _edit(
                "pushes",
                kinds={
                    "k": {
                        "when": ["3"],
                        "fields": {"tracking_no": ["a[*].b"]},
                        "statuses": [{"path": "code", "map": {"3": None}}],
                    }
                },
            ),
            "kinds.k: fields.tracking_no: 'a[*].b'",
        ),
        (
            _edit("omsl", links=[{"id": ["x"], "namespace": "a", "namespace_from": "channel"}]),
            "exactly one of",
        ),
        (_edit("gw", identity={"namespace": "Taobao"}), "identity.namespace"),
        (_edit("gw", identity={"strip": "(-"}), "identity.strip: not a regular expression"),
        (_edit("formjson", decode={"bizContent": "yaml"}), "decode.bizContent"),
        (_edit("formjson", decode={"a[*].b": "json"}), "decoded fields are named without [*]"),
        (
            _edit("inherit", zone_from={"path": "x", "map": {"CHN": "Asia/Atlantis"}}),
            "zone_from.map: unknown time zone 'Asia/Atlantis'",
        ),
        (
            _edit("inherit", zone_from={"path": "other[*].c", "map": {"CHN": "Asia/Shanghai"}}),
            "zone_from.path: 'other[*].c'",
        ),
    ],
)
def test_a_broken_mechanism_names_its_key_and_file(
    tmp_path: Path, spec: dict[str, Any], words: str
) -> None:
    assert words in _broken(tmp_path, spec)
