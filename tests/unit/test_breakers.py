"""Channel, carrier and customer breakers: every transition, on an injected clock."""

from __future__ import annotations

import pickle

from schemas.config import CarrierBreakerConfig, ChannelBreakerConfig, CustomerHoldConfig
from state.breakers import CarrierBreaker, ChannelBreaker, CustomerHolds
from tests.helpers import HOUR, MIN, T0

CH = ChannelBreakerConfig()  # 5% bad, 1 min windows, 5 bad windows of >= 20, 5 min open, 3 healthy
CA = CarrierBreakerConfig()  # 5 in a row, >5% of 50 (min 20), >50% slower than 3 s, 60 s, 3 probes


def window(b: ChannelBreaker, minute: int, total: int, bad: int) -> None:
    """Count `total` events, `bad` of them bad, inside minute number `minute` after T0."""
    b.count(T0 + minute * MIN + 1000, total, bad)


def states(decisions) -> list[tuple[str, str, int]]:
    return [(d.previous_state, d.state, d.at_ms) for d in decisions]


def opened(minutes: int = 5) -> ChannelBreaker:
    """A channel breaker opened by `minutes` bad windows, at T0 + minutes."""
    b = ChannelBreaker("shopee", CH)
    for m in range(minutes):
        window(b, m, 20, 2)
    assert states(b.advance(T0 + minutes * MIN)) == [("CLOSED", "OPEN", T0 + minutes * MIN)]
    return b


# ------------------------------------------------------------------ channel
def test_channel_opens_after_five_consecutive_bad_windows():
    b = ChannelBreaker("shopee", CH)
    for m in range(5):
        window(b, m, 20, 2)
    assert b.advance(T0 + 5 * MIN - 1) == []  # the fifth window is not complete yet
    [d] = b.advance(T0 + 5 * MIN)
    assert (d.breaker, d.key, d.previous_state, d.state) == ("channel", "shopee", "CLOSED", "OPEN")
    assert d.action == "route_to_manual_review"
    assert d.at_ms == T0 + 5 * MIN
    assert [w["start"] for w in d.figures["windows"]] == [T0 + m * MIN for m in range(5)]
    assert d.figures["windows"][0] == {"start": T0, "total": 20, "bad": 2, "share": 0.1}
    assert d.figures["thresholds"]["bad_ratio"] == 0.05


def test_channel_four_bad_windows_or_a_share_at_the_ratio_do_not_open():
    b = ChannelBreaker("shopee", CH)
    for m in range(4):
        window(b, m, 20, 2)
    window(b, 4, 20, 1)  # exactly 5%: not above
    for m in range(5, 9):
        window(b, m, 20, 2)
    assert b.advance(T0 + 9 * MIN) == []
    assert b.state == "CLOSED"


def test_channel_low_volume_window_breaks_the_run():
    b = ChannelBreaker("shopee", CH)
    for m in range(4):
        window(b, m, 20, 2)
    window(b, 4, 19, 19)  # all bad, but too few events: breaks the run, does not extend it
    for m in range(5, 9):
        window(b, m, 20, 2)
    assert b.advance(T0 + 9 * MIN) == []
    window(b, 9, 20, 2)
    assert states(b.advance(T0 + 10 * MIN)) == [("CLOSED", "OPEN", T0 + 10 * MIN)]


def test_channel_empty_window_breaks_the_run():
    b = ChannelBreaker("shopee", CH)
    for m in (0, 1, 2, 3, 5):  # nothing at all in minute 4
        window(b, m, 20, 2)
    assert b.advance(T0 + 6 * MIN) == []


def test_channel_half_opens_exactly_after_open_for_and_ignores_windows_while_open():
    b = opened()
    for m in range(5, 10):
        window(b, m, 20, 20)  # all bad, but OPEN does not judge windows
    assert b.advance(T0 + 10 * MIN - 1) == []
    [d] = b.advance(T0 + 10 * MIN)
    assert (d.previous_state, d.state, d.at_ms) == ("OPEN", "HALF_OPEN", T0 + 10 * MIN)
    assert d.action == "resume"


def test_channel_closes_after_three_healthy_windows_while_half_open():
    b = opened()
    b.advance(T0 + 10 * MIN)
    for m in (10, 11):
        window(b, m, 20, 0)
    assert b.advance(T0 + 12 * MIN) == []
    window(b, 12, 20, 1)  # 5% is healthy
    [d] = b.advance(T0 + 13 * MIN)
    assert (d.previous_state, d.state, d.at_ms) == ("HALF_OPEN", "CLOSED", T0 + 13 * MIN)
    assert d.action == "resume"
    assert len(d.figures["windows"]) == 3


def test_channel_bad_window_while_half_open_opens_again():
    b = opened()
    b.advance(T0 + 10 * MIN)
    window(b, 10, 20, 0)
    window(b, 11, 20, 5)
    [d] = b.advance(T0 + 12 * MIN)
    assert (d.previous_state, d.state, d.at_ms) == ("HALF_OPEN", "OPEN", T0 + 12 * MIN)
    assert d.action == "route_to_manual_review"
    assert d.figures["windows"] == [{"start": T0 + 11 * MIN, "total": 20, "bad": 5, "share": 0.25}]
    assert states(b.advance(T0 + 17 * MIN)) == [("OPEN", "HALF_OPEN", T0 + 17 * MIN)]


def test_channel_low_volume_window_breaks_the_healthy_run_while_half_open():
    b = opened()
    b.advance(T0 + 10 * MIN)
    window(b, 10, 20, 0)
    window(b, 11, 3, 3)  # too few: neither healthy nor bad, but the run starts again
    window(b, 12, 20, 0)
    window(b, 13, 20, 0)
    assert b.advance(T0 + 14 * MIN) == []
    assert b.state == "HALF_OPEN"
    window(b, 14, 20, 0)
    assert states(b.advance(T0 + 15 * MIN)) == [("HALF_OPEN", "CLOSED", T0 + 15 * MIN)]


def test_a_quiet_half_open_channel_with_nothing_bad_closes():
    """Low volume with no bad events counts as healthy while half-open; empty windows do not."""
    b = opened()
    b.advance(T0 + 10 * MIN)
    window(b, 10, 2, 0)
    window(b, 11, 3, 0)
    # minute 12: no events at all, the run starts again
    window(b, 13, 1, 0)
    window(b, 14, 4, 0)
    assert b.advance(T0 + 15 * MIN) == []
    window(b, 15, 2, 0)
    assert states(b.advance(T0 + 16 * MIN)) == [("HALF_OPEN", "CLOSED", T0 + 16 * MIN)]


def test_channel_windows_start_afresh_after_a_change_of_state():
    cfg = ChannelBreakerConfig(open_for="90s")
    b = ChannelBreaker("shopee", cfg)
    for m in range(5):
        window(b, m, 20, 2)
    b.advance(T0 + 5 * MIN)  # OPEN at minute 5, HALF_OPEN at 6:30
    for m in range(5, 9):
        window(b, m, 20, 0)
    # minute 6 started before HALF_OPEN: minutes 7, 8 and 9 are the three that count
    assert states(b.advance(T0 + 9 * MIN)) == [("OPEN", "HALF_OPEN", T0 + 6 * MIN + 30_000)]
    window(b, 9, 20, 0)
    assert states(b.advance(T0 + 10 * MIN)) == [("HALF_OPEN", "CLOSED", T0 + 10 * MIN)]


def test_channel_counts_given_in_one_batch_are_judged_in_time_order():
    b = ChannelBreaker("shopee", CH)
    for m in range(5):
        window(b, m, 20, 2)
    for m in range(10, 13):
        window(b, m, 20, 0)
    assert states(b.advance(T0 + HOUR)) == [
        ("CLOSED", "OPEN", T0 + 5 * MIN),
        ("OPEN", "HALF_OPEN", T0 + 10 * MIN),
        ("HALF_OPEN", "CLOSED", T0 + 13 * MIN),
    ]


def test_channel_late_count_goes_to_the_current_window():
    b = ChannelBreaker("shopee", CH)
    for m in range(4):
        window(b, m, 20, 2)
    b.advance(T0 + 4 * MIN + 5000)
    window(b, 3, 20, 2)  # for a complete window: lands in minute 4
    assert states(b.advance(T0 + 5 * MIN)) == [("CLOSED", "OPEN", T0 + 5 * MIN)]


# ------------------------------------------------------------------ carrier
def calls(b: CarrierBreaker, at: int, *oks: bool, latency: float = 100.0) -> list:
    out = []
    for i, ok in enumerate(oks):
        out += b.call(at + i, ok, latency)
    return out


def test_carrier_opens_on_consecutive_failures():
    b = CarrierBreaker("sf", CA, "zto")
    assert calls(b, T0, False, False, False, False, True, False, False, False, False) == []
    [d] = calls(b, T0 + 100, False)
    assert (d.breaker, d.key, d.previous_state, d.state) == ("carrier", "sf", "CLOSED", "OPEN")
    assert (d.action, d.at_ms) == ("failover_to:zto", T0 + 100)
    assert d.figures["consecutive_failures"] == 5
    assert d.reason == "5 consecutive failures"


def test_carrier_failure_ratio_needs_min_calls():
    b = CarrierBreaker("sf", CA, "zto")
    assert calls(b, T0, False, *[True] * 9, False, *[True] * 8) == []  # 2 of 19: too few calls
    [d] = calls(b, T0 + 100, True)  # 2 of 20 = 10% > 5%
    assert d.state == "OPEN"
    assert (d.figures["calls"], d.figures["failures"]) == (20, 2)
    assert "2 of the last 20 calls failed" in d.reason


def test_carrier_failure_ratio_at_the_ratio_does_not_open():
    b = CarrierBreaker("sf", CA, "zto")
    assert calls(b, T0, False, *[True] * 39) == []  # 1 of 20..40 is at most 5%


def test_carrier_failure_ratio_counts_only_the_last_window_calls():
    cfg = CarrierBreakerConfig(window_calls=10, min_calls=10, failure_ratio=0.15)
    b = CarrierBreaker("sf", cfg, "zto")
    assert calls(b, T0, False, *[True] * 10, False) == []  # the first failure has left the window
    [d] = calls(b, T0 + 100, False)
    assert (d.figures["calls"], d.figures["failures"]) == (10, 2)


def test_carrier_opens_when_most_calls_are_slow():
    b = CarrierBreaker("sf", CA, "zto")
    assert calls(b, T0, *[True] * 10, latency=3000.0) == []  # at the limit is not slow
    assert calls(b, T0 + 10, *[True] * 10, latency=3001.0) == []  # 10 of 20: not above half
    [d] = calls(b, T0 + 20, True, latency=3500.0)  # 11 of 21
    assert (d.state, d.action) == ("OPEN", "failover_to:zto")
    assert d.figures["slow"] == 11
    assert "slower than 3000 ms" in d.reason


def test_carrier_without_backup_fails_over_to_none():
    b = CarrierBreaker("acme", CA, None)
    [d] = calls(b, T0, *[False] * 5)
    assert d.action == "failover_to:none"


def carrier_opened() -> CarrierBreaker:
    b = CarrierBreaker("sf", CA, "zto")
    assert len(calls(b, T0, *[False] * 5)) == 1  # OPEN at T0 + 4
    return b


def test_carrier_cool_down_then_half_open_and_calls_while_open_are_ignored():
    b = carrier_opened()
    assert calls(b, T0 + 1000, *[False] * 10) == []
    assert b.advance(T0 + 4 + 59_999) == []
    [d] = b.advance(T0 + 4 + 60_000)
    assert (d.previous_state, d.state, d.at_ms, d.action) == (
        "OPEN",
        "HALF_OPEN",
        T0 + 60_004,
        "resume",
    )


def test_carrier_probes_all_good_close():
    b = carrier_opened()
    out = calls(b, T0 + 70_000, True, True)  # the first call ends the cool-down itself
    assert states(out) == [("OPEN", "HALF_OPEN", T0 + 60_004)]
    [d] = calls(b, T0 + 80_000, True)
    assert (d.previous_state, d.state, d.at_ms, d.action) == (
        "HALF_OPEN",
        "CLOSED",
        T0 + 80_000,
        "resume",
    )
    assert len(d.figures["probes"]) == 3
    assert calls(b, T0 + 90_000, *[False] * 4) == []  # the history started afresh


def test_carrier_probe_failure_or_slow_probe_opens_again():
    b = carrier_opened()
    b.advance(T0 + HOUR)
    [d] = calls(b, T0 + HOUR, True, False)
    assert (d.previous_state, d.state, d.at_ms) == ("HALF_OPEN", "OPEN", T0 + HOUR + 1)
    assert d.action == "failover_to:zto"
    assert d.reason == "a probe call failed"
    b.advance(T0 + 2 * HOUR)
    [d] = calls(b, T0 + 2 * HOUR, True, latency=5000.0)
    assert (d.state, d.reason) == ("OPEN", "a probe call was slow")


# ------------------------------------------------------------------ customer
def test_customer_hold_and_duplicate_hold():
    h = CustomerHolds(CustomerHoldConfig())
    d = h.hold("C1", T0, "delivered but the OMS does not say so", "TB1", "DELIVERY_NOT_REFLECTED")
    assert d is not None
    assert (d.breaker, d.key, d.previous_state, d.state) == ("customer", "C1", "RELEASED", "HOLD")
    assert (d.action, d.at_ms) == ("pause_auto_ship", T0)
    assert d.figures["expires_at"] == T0 + 72 * HOUR
    assert h.is_held("C1", T0 + HOUR)
    assert not h.is_held("C2", T0 + HOUR)
    assert h.hold("C1", T0 + HOUR, "second", "TB2", "DUPLICATE_SHIPMENT_RISK") is None
    [r] = h.advance(T0 + 72 * HOUR)  # the first hold's expiry stands
    assert r.figures["orders"] == ["TB1", "TB2"]


def test_customer_released_by_operator():
    h = CustomerHolds(CustomerHoldConfig())
    h.hold("C1", T0, "why", "TB1", "DELIVERY_NOT_REFLECTED")
    d = h.release("C1", T0 + HOUR, "alice")
    assert d is not None
    assert (d.previous_state, d.state, d.action, d.at_ms) == (
        "HOLD",
        "RELEASED",
        "resume",
        T0 + HOUR,
    )
    assert d.reason == "released by operator alice"
    assert not h.is_held("C1", T0 + HOUR)
    assert h.release("C1", T0 + HOUR, "alice") is None
    assert h.advance(T0 + 100 * HOUR) == []  # no second release at expiry


def test_customer_hold_expires_after_72h_and_can_be_held_again():
    h = CustomerHolds(CustomerHoldConfig())
    h.hold("C1", T0, "why", "TB1", "DELIVERY_NOT_REFLECTED")
    assert h.advance(T0 + 72 * HOUR - 1) == []
    [d] = h.advance(T0 + 80 * HOUR)
    assert (d.state, d.reason, d.at_ms, d.action) == (
        "RELEASED",
        "expired",
        T0 + 72 * HOUR,
        "resume",
    )
    assert h.hold("C1", T0 + 81 * HOUR, "again", "TB3", "DUPLICATE_SHIPMENT_RISK") is not None


def test_breakers_survive_pickling_mid_way():
    ch = pickle.loads(pickle.dumps(opened()))
    assert states(ch.advance(T0 + 10 * MIN)) == [("OPEN", "HALF_OPEN", T0 + 10 * MIN)]
    ca = pickle.loads(pickle.dumps(carrier_opened()))
    assert states(ca.advance(T0 + HOUR)) == [("OPEN", "HALF_OPEN", T0 + 60_004)]
    h = CustomerHolds(CustomerHoldConfig())
    h.hold("C1", T0, "why", "TB1", "DELIVERY_NOT_REFLECTED")
    h = pickle.loads(pickle.dumps(h))
    assert [d.key for d in h.advance(T0 + 72 * HOUR)] == ["C1"]
