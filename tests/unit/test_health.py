"""Source-level health: breakers fed from batches, source alerts, rate limits, batch cuts."""

from __future__ import annotations

import dataclasses
import pickle
import random

import pytest

from schemas.config import Settings
from schemas.event import DeadLetter, Event, Telemetry
from state.health import MAX_KEYS_PER_SOURCE, HealthBatch, HealthState
from state.records import Alert, Decision
from tests.helpers import HOUR, MIN, T0, ev

SHOPEE_KEYS = ("order_sn", "order_status", "tracking_number", "update_time")
DOUYIN_KEYS = ("logistics_no", "order_id", "order_status", "update_time")
CHANNEL_OF = {"shopee": "shopee", "douyin": "douyin", "newshop": "newshop"}


@pytest.fixture
def settings() -> Settings:
    return Settings(
        channels={"shopee": {"code": "SP"}, "douyin": {"code": "DY"}},
        carriers={"sf": {"pattern": "^SF[0-9]{12}$", "backup": "zto"}, "zto": {"pattern": "^7"}},
        sources={
            "shopee": {
                "stream": "orders",
                "kind": "channel",
                "channel": "shopee",
                "time_format": "epoch_s",
                "fields": {"order_id": ["order_sn"], "event_time": ["update_time"]},
                "statuses": [{"path": "order_status", "map": {"SHIPPED": "LABEL_CREATED"}}],
            }
        },
    )


def order(
    source: str,
    at: int,
    keys: tuple[str, ...] = (),
    order_id: str = "SP1",
    claim: str = "LABEL_CREATED",
    **kw: object,
) -> Event:
    """A shipped-status payload by default: the kind whose keys SCHEMA_DRIFT learns from."""
    kind = "channel" if source in CHANNEL_OF else "oms"
    channel = CHANNEL_OF.get(source)
    return ev(source, kind, order_id, claim, at=at, channel=channel, keys=keys, **kw)


def unmapped(source: str, value: str, at: int) -> DeadLetter:
    return DeadLetter(
        "unmapped_status", f"unknown status {value!r}", b"{}", {}, "orders", source, value, at
    )


def payment(source: str, ok: bool, at: int) -> Event:
    return ev(source, "gateway", "SH1", "PAID", at=at, outcome="success" if ok else "failure")


def carrier_call(carrier: str, ok: bool, at: int, latency: float = 120.0) -> Event:
    t = Telemetry(carrier, "create_label", latency, ok, None if ok else "timeout")
    return ev("carrier_api", "telemetry", None, at=at, carrier=carrier, telemetry=t)


def batch_of(settings: Settings, items) -> HealthBatch:
    b = HealthBatch.for_settings(settings)
    for it in items:
        if isinstance(it, Event):
            b.add_event(it)
        else:
            b.add_dead_letter(it, CHANNEL_OF.get(it.source or ""))
    return b


def run(settings: Settings, items, size: int | None = None, until: int | None = None) -> list:
    """Feed the items in batches of `size`, as the dataflow would, snapshotting between them."""
    state = HealthState(settings)
    items = list(items)
    size = size or len(items) or 1
    out = []
    for i in range(0, len(items), size):
        b = batch_of(settings, items[i : i + size])
        out += state.apply(b)
        out += state.advance(b.clock_ms)
        state = pickle.loads(pickle.dumps(state))
    if until is not None:
        out += state.advance(until)
    return out


def alerts(out, kind: str) -> list[Alert]:
    return [r for r in out if isinstance(r, Alert) and r.type == kind]


def decisions(out, breaker: str) -> list[Decision]:
    return [r for r in out if isinstance(r, Decision) and r.breaker == breaker]


# ------------------------------------------------------------------ breakers from batches
def test_channel_breaker_counts_dead_letters_and_unmapped_as_bad(settings):
    items = []
    for m in range(5):
        t = T0 + m * MIN
        items += [order("shopee", t + i) for i in range(18)]
        items.append(unmapped("shopee", "WEIRD", t + 100))
        items.append(DeadLetter("bad_time", "no time", b"{}", source="shopee", received_ms=t + 200))
        items += [order("oms", t + 300 + i) for i in range(50)]  # not a channel: not counted
    out = run(settings, items, until=T0 + 5 * MIN)
    [d] = decisions(out, "channel")
    assert (d.key, d.state, d.at_ms) == ("shopee", "OPEN", T0 + 5 * MIN)
    assert d.figures["windows"][0] == {"start": T0, "total": 20, "bad": 2, "share": 0.1}


def test_unknown_channel_gets_a_breaker_on_first_sight(settings):
    items = []
    for m in range(5):
        items += [order("newshop", T0 + m * MIN + i) for i in range(10)]
        items += [unmapped("newshop", "X", T0 + m * MIN + 50 + i) for i in range(10)]
    [d] = decisions(run(settings, items, until=T0 + 5 * MIN), "channel")
    assert (d.key, d.state) == ("newshop", "OPEN")


def test_a_late_count_for_a_channel_or_gateway_first_seen_joins_the_current_window(settings):
    state = HealthState(settings)
    state.advance(T0 + 5 * MIN + 1000)
    late = [order("newshop", T0 + 4 * MIN), payment("paypal", False, T0 + 4 * MIN)]
    state.apply(batch_of(settings, late))
    assert list(state.channels["newshop"].pending) == [T0 + 5 * MIN]
    assert list(state.gateways["paypal"].minutes) == [T0 + 5 * MIN]


def test_carrier_breaker_fails_over_to_the_configured_backup(settings):
    items = [carrier_call("sf", False, T0 + i) for i in range(5)]
    items += [carrier_call("acme", False, T0 + 10 + i) for i in range(5)]
    out = run(settings, items)
    assert [(d.key, d.state, d.action, d.at_ms) for d in decisions(out, "carrier")] == [
        ("sf", "OPEN", "failover_to:zto", T0 + 4),
        ("acme", "OPEN", "failover_to:none", T0 + 14),
    ]


# ------------------------------------------------------------------ payment success rate
def test_payment_success_rate_low_fires_and_resolves_with_the_same_id(settings):
    items = [payment("alipay", i != 5, T0 + i * 3000) for i in range(20)]  # minute 0: 1 failure
    for m in range(1, 8):
        items += [payment("alipay", True, T0 + m * MIN + i * 3000) for i in range(20)]
    out = run(settings, items, until=T0 + 8 * MIN)
    fired = alerts(out, "PAYMENT_SUCCESS_RATE_LOW")
    assert [(a.state, a.at_ms) for a in fired] == [
        ("firing", T0 + 3 * MIN),  # 59 of 60 (98.3%) once there is volume enough
        ("resolved", T0 + 6 * MIN),  # the failure's minute has left the 5 min window
    ]
    assert fired[0].alert_id == fired[1].alert_id
    assert fired[0].severity == "critical"
    assert fired[0].subject == {"source": "alipay"}
    assert fired[0].details["total"] == 60


def test_payment_success_rate_needs_min_volume(settings):
    items = [payment("stripe", False, T0 + i * 1000) for i in range(49)]
    assert alerts(run(settings, items, until=T0 + HOUR), "PAYMENT_SUCCESS_RATE_LOW") == []
    items.append(payment("stripe", False, T0 + 49_000))
    assert len(alerts(run(settings, items, until=T0 + HOUR), "PAYMENT_SUCCESS_RATE_LOW")) == 1


# ------------------------------------------------------------------ source alerts
def test_unmapped_status_is_rate_limited_per_source_and_value(settings):
    items = [
        unmapped("shopee", "WEIRD", T0),
        unmapped("shopee", "WEIRD", T0 + 10 * MIN),  # suppressed
        unmapped("shopee", "ODD", T0 + 11 * MIN),  # another value
        unmapped("douyin", "WEIRD", T0 + 12 * MIN),  # another source
        unmapped("shopee", "WEIRD", T0 + HOUR - 1),  # still within the hour
        unmapped("shopee", "WEIRD", T0 + HOUR),  # the hour is over
    ]
    fired = alerts(run(settings, items), "UNMAPPED_STATUS")
    assert [(a.subject["source"], a.discriminator, a.at_ms) for a in fired] == [
        ("shopee", "WEIRD", T0),
        ("shopee", "ODD", T0 + 11 * MIN),
        ("douyin", "WEIRD", T0 + 12 * MIN),
        ("shopee", "WEIRD", T0 + HOUR),
    ]
    first = fired[0]
    assert (first.state, first.severity) == ("firing", "warning")
    assert first.subject == {"source": "shopee", "channel": "shopee"}
    assert first.details == {"value": "WEIRD"}
    assert first.alert_id != fired[3].alert_id


def test_schema_drift_names_the_missing_field_and_the_new_key(settings):
    renamed = (*DOUYIN_KEYS[1:], "tracking_number")
    items = [
        order("douyin", T0, DOUYIN_KEYS),
        order("douyin", T0 + 1000, ("order_id", "order_status", "update_time")),
        order("shopee", T0 + 1500, SHOPEE_KEYS),  # another source's keys do not count
        order(
            "douyin",
            T0 + 2000,
            renamed,
            drift_fields=("logistics_no",),
            raw_status="3",
            order_id="DY2026030200001",
        ),
        order("douyin", T0 + 3000, renamed, drift_fields=("logistics_no",)),  # key now known
    ]
    [a] = alerts(run(settings, items), "SCHEMA_DRIFT")
    assert a.message == "douyin: 3 status without logistics_no; new key 'tracking_number'"
    assert (a.discriminator, a.at_ms, a.severity) == ("tracking_number", T0 + 2000, "warning")
    assert a.subject["source"] == "douyin"
    assert a.details["order_id"] == "DY2026030200001"


def test_schema_drift_catches_a_rename_first_seen_on_an_unshipped_payload(settings):
    """Keys are learnt only from payloads that carried what their status implies."""
    renamed = ("order_sn", "order_status", "tracking_no")
    items = [
        order("shopee", T0, ("order_sn", "order_status", "tracking_number")),
        order("shopee", T0 + 1000, renamed, claim="PAID"),  # READY_TO_SHIP: proves nothing
        order("shopee", T0 + 2000, renamed, drift_fields=("tracking_no",)),
    ]
    [a] = alerts(run(settings, items), "SCHEMA_DRIFT")
    assert (a.discriminator, a.at_ms) == ("tracking_no", T0 + 2000)


def test_schema_drift_needs_a_key_never_seen_from_that_source(settings):
    items = [
        order("douyin", T0, ("order_id", "order_status", "update_time")),
        order("douyin", T0 + 2, ("order_id", "order_status", "tracking_number")),  # not drift
        order("douyin", T0 + 3, ("order_id", "tracking_number"), drift_fields=("logistics_no",)),
        order("shopee", T0 + 4, ("order_sn",), drift_fields=("tracking_number",)),  # all seen
        order("web", T0 + 5, ("id", "x"), drift_fields=("tracking_no",)),  # no baseline yet
    ]
    assert alerts(run(settings, items), "SCHEMA_DRIFT") == []


def test_clock_skew_fires_once_per_source_per_hour(settings):
    eight_hours = 8 * HOUR
    items = [
        order("shopee", T0, event_at=T0 + 5 * MIN),  # at the threshold: fine
        order("shopee", T0 + MIN, event_at=T0 + MIN + eight_hours),
        order("shopee", T0 + 5 * MIN, event_at=T0 + 5 * MIN + eight_hours),
        order("douyin", T0 + 6 * MIN, event_at=T0 + 6 * MIN + 10 * MIN),
        order("shopee", T0 + MIN + HOUR, event_at=T0 + MIN + HOUR + eight_hours),
    ]
    fired = alerts(run(settings, items), "CLOCK_SKEW")
    assert [(a.subject["source"], a.at_ms) for a in fired] == [
        ("shopee", T0 + MIN),
        ("douyin", T0 + 6 * MIN),
        ("shopee", T0 + MIN + HOUR),
    ]
    assert fired[0].details == {"skew_s": 28800}
    assert fired[0].severity == "warning"


# ------------------------------------------------------------------ batch cuts, memory
def day(seed: int = 7) -> list:
    """A stream with every phenomenon, some arrivals out of order, over 40 minutes."""
    rnd = random.Random(seed)
    items: list = []
    for i in range(4000):
        t = T0 + i * 600 - (rnd.randrange(5000) if rnd.random() < 0.1 else 0)
        minute = (t - T0) // MIN
        bad_time = 8 <= minute < 20
        r = rnd.random()
        if r < 0.3:
            if bad_time and rnd.random() < 0.3:
                items.append(unmapped("shopee", rnd.choice(["WEIRD", "ODD"]), t))
            else:
                skew = 8 * HOUR if minute == 30 else 0
                items.append(order("shopee", t, SHOPEE_KEYS, event_at=t + skew))
        elif r < 0.5:
            items.append(payment("alipay", not (bad_time and rnd.random() < 0.05), t))
        elif r < 0.75:
            fail = 12 <= minute < 14 and rnd.random() < 0.5
            items.append(carrier_call(rnd.choice(["sf", "zto"]), not fail, t))
        elif r < 0.95:
            drift = minute == 25 and rnd.random() < 0.2
            keys = (*DOUYIN_KEYS[1:], "tracking_number") if drift else DOUYIN_KEYS
            fields = ("logistics_no",) if drift else ()
            items.append(order("douyin", t, keys, drift_fields=fields))
        else:
            items.append(order("oms", t))
    return items


def test_outputs_do_not_depend_on_how_the_input_is_cut_into_batches(settings):
    items = day()
    end = T0 + 2 * HOUR

    def flat(size: int) -> list:
        out = run(settings, items, size, until=end)
        return [(type(r).__name__, r.record_id, dataclasses.asdict(r)) for r in out]

    one = flat(1)
    kinds = {(t, d.get("type") or d["breaker"], d["state"]) for t, _, d in one}
    assert kinds >= {
        ("Decision", "channel", "OPEN"),
        ("Decision", "channel", "HALF_OPEN"),
        ("Decision", "channel", "CLOSED"),
        ("Decision", "carrier", "OPEN"),
        ("Decision", "carrier", "HALF_OPEN"),
        ("Decision", "carrier", "CLOSED"),
        ("Alert", "PAYMENT_SUCCESS_RATE_LOW", "firing"),
        ("Alert", "PAYMENT_SUCCESS_RATE_LOW", "resolved"),
        ("Alert", "UNMAPPED_STATUS", "firing"),
        ("Alert", "SCHEMA_DRIFT", "firing"),
        ("Alert", "CLOCK_SKEW", "firing"),
    }
    assert flat(7) == one
    assert flat(1000) == one


def test_a_batch_of_2000_ordinary_events_pickles_to_a_few_kb(settings):
    ordinary = [i for i in day() if isinstance(i, Event) and i.telemetry is None][:2000]
    assert len(ordinary) == 2000
    assert len(pickle.dumps(batch_of(settings, ordinary))) < 4096


def test_rate_limit_tables_are_pruned_and_seen_keys_capped(settings):
    state = HealthState(settings)
    items = [unmapped("shopee", f"V{i}", T0 + i) for i in range(100)]
    items += [order("douyin", T0 + 200 + i, (f"k{i}", f"j{i}")) for i in range(1000)]
    state.apply(batch_of(settings, items))
    assert len(state.recent) == 100
    assert MAX_KEYS_PER_SOURCE <= len(state.keys["douyin"]) <= MAX_KEYS_PER_SOURCE + 2
    state.advance(T0 + 99 + HOUR)
    assert len(state.recent) == 0
