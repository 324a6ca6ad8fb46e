"""What the Redis order view holds, built from shard state (no Redis), and how lookup shows it."""

from __future__ import annotations

import orjson
import pytest

from dataflows.lookup import OrderLookup, render
from schemas.config import ConfigError, RedisView, Settings, load_settings
from schemas.timeparse import iso
from state.breakers import CarrierBreaker, CustomerHolds
from state.records import Decision
from state.shard import RETENTION_GRAIN, OrderShard
from state.view import (
    ViewUpdate,
    decisions_update,
    first_deliveries,
    order_doc,
    orders_update,
    timeline_member,
)
from tests.helpers import HOUR, MIN, T0, ev, label, oms, pay, scan

OID = "TB2026030200001"
OTHER = "TB2026030200002"


@pytest.fixture
def settings() -> Settings:
    return Settings(carriers={"sf": {"pattern": "^SF[0-9]{12}$"}})


def batch(settings: Settings, shard: OrderShard, *events, clock: int = 0) -> ViewUpdate:
    """One shard batch as the dataflow runs it: first deliveries, process, then the view."""
    fresh = first_deliveries(list(events), shard.orders)
    out = shard.process(list(events), clock)
    records = [r for kind, r in out if kind != "signal"]
    return orders_update(settings, shard, fresh, records)


def docs(update: ViewUpdate) -> dict[str, dict]:
    return {oid: orjson.loads(doc) for oid, doc, _ in update.orders}


def ttls(update: ViewUpdate) -> dict[str, int]:
    return {oid: ttl for oid, _, ttl in update.orders}


def test_order_doc_holds_status_report_mismatch_and_who(settings):
    shard = OrderShard(settings)
    update = batch(
        settings,
        shard,
        oms(
            OID, "PENDING_PAYMENT", T0, customer_id="C7", channel="taobao",
            links=("taobao:3456789012345678",),
        ),
        pay(OID, T0 + MIN),
        label(OID, "SF123456789012", T0 + HOUR),
    )  # fmt: skip
    doc = docs(update)[OID]
    assert doc == {
        "order_id": OID,
        "status": "LABEL_CREATED",
        "standard_status": "已发货",  # the standard statuses of the spec
        "reported_status": "PENDING_PAYMENT",
        "mismatch": True,
        "open_alerts": [],
        "customer_id": "C7",
        "channel": "taobao",
        "carrier": "sf",
        "tracking_numbers": ["SF123456789012"],
        "ids": ["taobao:3456789012345678", "tracking:SF123456789012"],
        "version": 3,
        "last_event_at": iso(T0 + HOUR),
        "updated_at": iso(T0 + HOUR),
    }
    ttl = ttls(update)[OID]  # each id aliases the order, for as long as its document lives
    assert sorted(update.aliases) == [
        ("taobao:3456789012345678", OID, ttl),
        ("tracking:SF123456789012", OID, ttl),
    ]
    update = batch(settings, shard, oms(OID, "LABEL_CREATED", T0 + HOUR + MIN))
    assert docs(update)[OID]["mismatch"] is False


def test_an_alert_fired_by_a_deadline_updates_the_order_without_any_event(settings):
    shard = OrderShard(settings)
    batch(settings, shard, oms(OID, "PENDING_PAYMENT", T0), pay(OID, T0 + MIN))
    update = batch(settings, shard, clock=T0 + 3 * MIN + 1)
    [alert] = docs(update)[OID]["open_alerts"]
    assert alert == {
        "type": "PAYMENT_NOT_REFLECTED",
        "severity": "warning",
        "since": iso(T0 + MIN),
        "first_seen": iso(T0 + 3 * MIN),
    }
    assert update.timeline == []  # no event, nothing new on the timeline
    update = batch(settings, shard, oms(OID, "PAID", T0 + 10 * MIN))
    assert docs(update)[OID]["open_alerts"] == []


def test_only_touched_orders_are_written(settings):
    shard = OrderShard(settings)
    batch(settings, shard, oms(OID, "PENDING_PAYMENT", T0), oms(OTHER, "PENDING_PAYMENT", T0))
    update = batch(settings, shard, pay(OID, T0 + MIN))
    assert set(docs(update)) == {OID}


def test_ttl_is_what_the_state_keeps_terminal_orders_shorter(settings):
    r = settings.retention
    shard = OrderShard(settings)
    update = batch(
        settings, shard, oms(OID, "PAID", T0), ev("taobao", "channel", OTHER, "COMPLETED", at=T0)
    )
    expected = {
        OID: T0 + r.idle_order + -(T0 + r.idle_order) % RETENTION_GRAIN - T0,
        OTHER: T0 + r.terminal_order + -(T0 + r.terminal_order) % RETENTION_GRAIN - T0,
    }
    assert ttls(update) == expected
    assert expected[OTHER] < expected[OID]
    # a deadline touches the order later on the ingestion clock: less time is left
    later = T0 + settings.thresholds.shipment_delayed + 1
    update = batch(settings, shard, clock=later)
    assert docs(update)[OID]["open_alerts"][0]["type"] == "SHIPMENT_DELAYED"
    assert ttls(update) == {OID: expected[OID] - (later - T0)}
    # a new event: retention counts from it again
    at = later + HOUR
    update = batch(settings, shard, oms(OID, "PAID", at, event_id="again"))
    keep = at + r.idle_order
    assert ttls(update)[OID] == keep + -keep % RETENTION_GRAIN - at


def test_an_order_that_leaves_state_while_touched_is_deleted_from_the_view(settings):
    shard = OrderShard(settings)
    batch(settings, shard, scan(OID, "IN_TRANSIT", T0))
    update = batch(settings, shard, clock=T0 + settings.retention.idle_order + HOUR)
    assert OID not in shard.orders  # its open alert resolved as it left: it was touched
    assert (update.orders, update.forgotten) == ([], [OID])
    # a change and the end of retention in one batch (the clock jumped ahead)
    update = batch(
        settings,
        OrderShard(settings),
        ev("taobao", "channel", OTHER, "COMPLETED", at=T0),
        clock=T0 + settings.retention.terminal_order + 2 * HOUR,
    )
    assert (update.orders, update.timeline, update.forgotten) == ([], [], [OTHER])


def test_an_order_that_leaves_state_untouched_is_left_to_expire(settings):
    shard = OrderShard(settings)
    batch(settings, shard, ev("taobao", "channel", OID, "COMPLETED", at=T0))
    update = batch(settings, shard, clock=T0 + settings.retention.terminal_order + 2 * HOUR)
    assert OID not in shard.orders
    assert not update  # nothing emitted for it: its keys expire with the ttl last written


def test_timeline_member_is_deterministic_and_complete():
    e = scan(OID, "IN_TRANSIT", T0 + 5000, event_at=T0, event_id="sf-1")
    member = timeline_member(e)
    assert member == timeline_member(e)  # the same event, the same bytes (ZADD is idempotent)
    assert orjson.loads(member) == {
        "event_time": iso(T0),
        "received_at": iso(T0 + 5000),
        "stream": "tracking",
        "source": "sf",
        "kind": "carrier",
        "raw_status": "IN_TRANSIT",
        "claims": ["IN_TRANSIT"],
        "event_id": "sf-1",
        "tracking_no": "SF123456789012",
    }
    assert member == orjson.dumps(orjson.loads(member), option=orjson.OPT_SORT_KEYS)
    assert b" " not in member.replace(b"IN_TRANSIT", b"")  # compact


def test_timeline_entries_are_scored_by_event_time_and_skip_repeated_deliveries(settings):
    shard = OrderShard(settings)
    first = scan(OID, "PICKED_UP", T0, event_id="sf-1")
    again = scan(OID, "PICKED_UP", T0 + 20_000, event_id="sf-1")  # a webhook delivered twice
    late = scan(OID, "IN_TRANSIT", T0 + 30_000, event_at=T0 + 10_000, event_id="sf-2")
    update = batch(settings, shard, first, again, late)
    assert [(oid, score) for oid, score, _ in update.timeline] == [
        (OID, T0),
        (OID, T0 + 10_000),
    ]
    update = batch(settings, shard, scan(OID, "PICKED_UP", T0 + 40_000, event_id="sf-1"))
    assert update.timeline == []  # seen in an earlier batch: the shard ignores it too


def test_decisions_give_breaker_states_and_holds():
    carrier = CarrierBreaker("jt", Settings().breakers.carrier, backup="zto")
    opened = [d for i in range(5) for d in carrier.call(T0 + i, ok=False, latency_ms=10)]
    holds = CustomerHolds(Settings().breakers.customer)
    held = holds.hold("C7", T0, "DELIVERY_NOT_REFLECTED on order X", OID, "DELIVERY_NOT_REFLECTED")
    released = holds.release("C7", T0 + HOUR, "alice")
    assert opened and held and released
    update = decisions_update([*opened, "not a decision", held])
    [(kind, key, doc)] = update.breakers
    assert (kind, key) == ("carrier", "jt")
    assert orjson.loads(doc) == {
        "state": "OPEN",
        "action": "failover_to:zto",
        "since": iso(T0 + 4),
        "reason": "5 consecutive failures",
    }
    [(customer, hold, ttl)] = update.holds
    expires = T0 + Settings().breakers.customer.expires_after
    assert (customer, ttl) == ("C7", expires - T0)
    assert orjson.loads(hold or b"") == {
        "since": iso(T0),
        "reason": "DELIVERY_NOT_REFLECTED on order X",
        "orders": [OID],
        "expires_at": iso(expires),
    }
    assert decisions_update([released]).holds == [("C7", None, 0)]  # released: delete the key
    by_operator = Decision(
        "customer", "C8", "HOLD", "RELEASED", "operator bob", "pause_auto_ship", {}, T0
    )
    [(_, doc, ttl)] = decisions_update([by_operator]).holds
    assert ttl == 0 and orjson.loads(doc or b"")["orders"] == []  # no expiry known: none set
    assert not decisions_update([])


def test_lookup_table_shows_the_order_then_its_timeline(settings):
    shard = OrderShard(settings)
    batch(settings, shard, oms(OID, "PENDING_PAYMENT", T0, customer_id="C7"), pay(OID, T0 + MIN))
    update = batch(settings, shard, clock=T0 + 3 * MIN + 1)
    view = OrderLookup(
        orjson.loads(order_doc(OID, shard.orders[OID], T0 + 3 * MIN + 1)),
        [
            orjson.loads(timeline_member(e))
            for e in (oms(OID, "PENDING_PAYMENT", T0), pay(OID, T0 + MIN))
        ],
    )
    assert update.orders
    text = render(view)
    lines = text.splitlines()
    assert lines[0].split() == ["order", OID]
    assert lines[1].split() == ["status", "PAID", "(standard:", "已支付)"]
    facts = {line[:18].strip(): line[18:].strip() for line in lines[:13]}
    assert facts["reported status"] == "PENDING_PAYMENT"
    assert facts["mismatch"] == "YES"
    assert facts["customer"] == "C7"
    assert facts["tracking numbers"] == "-"
    assert facts["open alerts"] == (
        f"PAYMENT_NOT_REFLECTED (warning) since {iso(T0 + MIN)[:-1].replace('T', ' ')} UTC"
    )
    at = lines.index("timeline (2 events, by event time, UTC)")
    header, oms_row, pay_row = lines[at + 1 : at + 4]
    assert header.split()[:3] == ["event", "time", "source"]
    assert oms_row.split()[2:] == ["oms", "orders", "PENDING_PAYMENT", "→", "PENDING_PAYMENT"]
    assert pay_row.split()[2:] == ["wechatpay", "payments", "PAID", "→", "PAID"]
    assert oms_row.split()[:2] == iso(T0)[:-1].split("T")
    doc = orjson.loads(view.as_json())
    assert doc["order_id"] == OID and len(doc["timeline"]) == 2


SECRET = "hunter2-Zq9!-never-print-me"


def test_redis_config_names_the_key_and_keeps_the_password_apart(monkeypatch):
    for key in ("URL", "PASSWORD", "KEY_PREFIX"):
        monkeypatch.delenv(f"ORDERGUARD__REDIS__{key}", raising=False)
    assert load_settings().redis.url is None  # the shipped file: no view
    monkeypatch.setenv("ORDERGUARD__REDIS__URL", f"http://:{SECRET}@127.0.0.1:6379")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "redis.url" in str(err.value) and "redis://" in str(err.value)
    assert SECRET not in str(err.value)
    monkeypatch.setenv("ORDERGUARD__REDIS__URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("ORDERGUARD__REDIS__PASSWORD", SECRET)
    monkeypatch.setenv("ORDERGUARD__REDIS__SOCKET_TIMEOUT", "250ms")
    cfg = load_settings().redis
    assert SECRET not in repr(cfg) and SECRET not in str(load_settings())
    assert cfg.client_options() == {
        "socket_timeout": 0.25,
        "socket_connect_timeout": 0.25,
        "password": SECRET,
    }
    assert RedisView(url="unix:///run/redis.sock").url
    with pytest.raises(ValueError, match="scheme: none"):
        RedisView(url="127.0.0.1:6379")
    with pytest.raises(ValueError, match="port of the Redis URL"):
        RedisView(url=f"redis://:{SECRET}@127.0.0.1:99999/0")
