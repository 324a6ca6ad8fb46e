"""Operators forcing channel and carrier breakers: sticky states, AUTO, harmless repeats."""

from __future__ import annotations

import pickle

import pytest

from schemas.commands import Command
from schemas.config import CarrierBreakerConfig, ChannelBreakerConfig, Settings
from state.breakers import CarrierBreaker, ChannelBreaker
from state.health import HealthBatch, HealthState
from state.records import Decision
from tests.helpers import HOUR, MIN, T0
from tests.unit.test_breakers import calls, carrier_opened, opened, window

CH = ChannelBreakerConfig()
CA = CarrierBreakerConfig()
WHO = {"operator": "alice", "command_id": "cmd-1"}


def states(decisions) -> list[tuple[str, str, int]]:
    return [(d.previous_state, d.state, d.at_ms) for d in decisions]


# ------------------------------------------------------------------ channel
def test_forcing_a_channel_open_records_the_operator_and_holds_against_the_rules():
    b = ChannelBreaker("shopee", CH)
    d = b.force("OPEN", T0, "operator alice: storm upstream", WHO)
    assert d is not None
    assert (d.breaker, d.key, d.previous_state, d.state, d.at_ms) == (
        "channel",
        "shopee",
        "CLOSED",
        "OPEN",
        T0,
    )
    assert (d.reason, d.action) == ("operator alice: storm upstream", "route_to_manual_review")
    assert d.figures == {"operator": "alice", "command_id": "cmd-1", "forced": True}
    for m in range(10):  # healthy windows would not matter while OPEN anyway; no cool-down either
        window(b, m, 50, 0)
    assert b.advance(T0 + HOUR) == []
    assert b.state == "OPEN"


def test_a_forced_closed_channel_does_not_trip_on_bad_windows_until_auto():
    b = opened()
    d = b.force("CLOSED", T0 + 6 * MIN, "operator alice: forced CLOSED", WHO)
    assert d is not None and (d.previous_state, d.state, d.action) == ("OPEN", "CLOSED", "resume")
    for m in range(6, 20):
        window(b, m, 20, 5)
    assert b.advance(T0 + 20 * MIN) == []  # sticky: 14 bad windows, no transition
    d = b.force("AUTO", T0 + 20 * MIN, "operator alice: back to automatic", WHO)
    assert d is not None
    assert (d.previous_state, d.state, d.at_ms) == ("CLOSED", "CLOSED", T0 + 20 * MIN)
    assert d.figures["forced"] is False
    # fresh windows: the five bad windows needed to open start at AUTO
    for m in range(20, 25):
        window(b, m, 20, 5)
    assert states(b.advance(T0 + 25 * MIN - 1)) == []
    assert states(b.advance(T0 + 25 * MIN)) == [("CLOSED", "OPEN", T0 + 25 * MIN)]


def test_auto_on_an_open_channel_starts_the_cool_down_afresh():
    b = opened()  # opened at T0 + 5 min by the rules
    b.force("OPEN", T0 + 7 * MIN, "operator alice: forced OPEN", WHO)
    assert b.advance(T0 + HOUR) == []  # no HALF_OPEN while forced
    b.force("AUTO", T0 + HOUR, "operator alice: back to automatic", WHO)
    assert b.advance(T0 + HOUR + 5 * MIN - 1) == []
    assert states(b.advance(T0 + HOUR + 5 * MIN)) == [("OPEN", "HALF_OPEN", T0 + HOUR + 5 * MIN)]


def test_forcing_the_state_a_breaker_has_changes_only_the_flag_and_a_repeat_says_nothing():
    b = opened()
    d = b.force("OPEN", T0 + 6 * MIN, "operator alice: forced OPEN", WHO)
    assert d is not None and (d.previous_state, d.state) == ("OPEN", "OPEN")
    assert d.figures["forced"] is True
    assert b.force("OPEN", T0 + 7 * MIN, "operator alice: forced OPEN", WHO) is None
    assert b.force("AUTO", T0 + 8 * MIN, "x", WHO) is not None
    assert b.force("AUTO", T0 + 9 * MIN, "x", WHO) is None  # already under its rules


def test_a_forced_breaker_survives_pickling():
    b = pickle.loads(pickle.dumps(opened()))
    b.force("OPEN", T0 + 6 * MIN, "r", WHO)
    b = pickle.loads(pickle.dumps(b))
    assert b.forced and b.advance(T0 + HOUR) == []


# ------------------------------------------------------------------ carrier
def test_forcing_a_carrier_closed_ignores_failures_until_auto():
    b = carrier_opened()
    d = b.force("CLOSED", T0 + MIN, "operator alice: forced CLOSED", WHO)
    assert d is not None and (d.previous_state, d.state, d.action) == ("OPEN", "CLOSED", "resume")
    assert calls(b, T0 + 2 * MIN, *[False] * 20) == []  # 20 failures in a row: no trip
    assert b.state == "CLOSED"
    d = b.force("AUTO", T0 + 3 * MIN, "operator alice: back to automatic", WHO)
    assert d is not None and (d.state, d.figures["forced"]) == ("CLOSED", False)
    # fresh history: four more failures do not trip, the fifth does
    assert calls(b, T0 + 4 * MIN, *[False] * 4) == []
    [d] = calls(b, T0 + 5 * MIN, False)
    assert (d.state, d.reason, d.action) == ("OPEN", "5 consecutive failures", "failover_to:zto")


def test_forcing_a_carrier_open_fails_over_and_holds_past_the_cool_down():
    b = CarrierBreaker("jt", CA, "zto")
    d = b.force("OPEN", T0, "operator alice: forced OPEN", WHO)
    assert d is not None and d.action == "failover_to:zto"
    assert b.advance(T0 + HOUR) == [] and calls(b, T0 + HOUR, True, True, True) == []
    assert b.state == "OPEN"


def test_forced_half_open_judges_no_probes():
    b = CarrierBreaker("jt", CA, "zto")
    b.force("HALF_OPEN", T0, "r", WHO)
    assert calls(b, T0 + MIN, False, True, True, True) == []
    assert b.state == "HALF_OPEN"


# ------------------------------------------------------------------ through HealthState
SETTINGS = Settings(
    channels={"shopee": {"code": "SP"}},
    carriers={"jt": {"pattern": "^JT", "backup": "zto"}, "zto": {"pattern": "^7"}},
)


def command(key: str, state: str, at: int, n: int, breaker: str = "carrier") -> Command:
    return Command(f"cmd-{n}", breaker, key, state, "alice", None, at, n, "ops")


def batch(*items) -> HealthBatch:
    """Items in input order: commands, or (at, ok) carrier calls for jt."""
    from schemas.event import Telemetry
    from tests.helpers import ev

    b = HealthBatch.for_settings(SETTINGS)
    for it in items:
        if isinstance(it, Command):
            b.add_command(it)
        else:
            at, ok = it
            t = Telemetry("jt", "create_label", 100.0, ok, None if ok else "timeout")
            b.add_event(ev("carrier_api", "telemetry", None, at=at, carrier="jt", telemetry=t))
    return b


def test_health_applies_commands_in_input_order_with_carrier_calls():
    fails = [(T0 + i, False) for i in range(5)]
    # forced CLOSED before the failures: nothing trips; AUTO after them: still nothing
    a = HealthState(SETTINGS).apply(
        batch(command("jt", "CLOSED", T0, 1), *fails, command("jt", "AUTO", T0 + 10, 2))
    )
    assert [(d.state, d.figures["forced"]) for d in a] == [("CLOSED", True), ("CLOSED", False)]
    # the same items with the command after the failures: the rules trip first
    b = HealthState(SETTINGS).apply(batch(*fails, command("jt", "CLOSED", T0 + 10, 1)))
    assert [(d.previous_state, d.state) for d in b] == [("CLOSED", "OPEN"), ("OPEN", "CLOSED")]
    assert b[1].reason == "operator alice (key ops): forced CLOSED"


def test_what_is_due_before_a_command_fires_before_it():
    state = HealthState(SETTINGS)
    state.apply(batch(*[(T0 + i, False) for i in range(5)]))  # OPEN at T0 + 4
    out = state.apply(batch(command("jt", "CLOSED", T0 + 2 * MIN, 1)))
    assert [(d.previous_state, d.state, d.at_ms) for d in out] == [
        ("OPEN", "HALF_OPEN", T0 + 4 + 60_000),
        ("HALF_OPEN", "CLOSED", T0 + 2 * MIN),
    ]


def test_a_repeated_command_changes_nothing_and_ids_tell_operator_decisions_apart():
    state = HealthState(SETTINGS)
    state.apply(batch(*[(T0 + i, False) for i in range(5)]))  # OPEN at T0 + 4 by the rules
    [d] = state.apply(batch(command("shopee", "OPEN", T0 + 4, 1, "channel")))
    [forced] = state.apply(batch(command("jt", "OPEN", T0 + 4, 2)))
    assert (forced.previous_state, forced.state, forced.at_ms) == ("OPEN", "OPEN", T0 + 4)
    assert state.apply(batch(command("jt", "OPEN", T0 + 5, 3))) == []  # a repeat: no change
    [replay] = state.apply(batch(command("jt", "OPEN", T0 + 5, 2)))  # the same id again
    assert (replay.reason, replay.value) == ("unauthenticated_command", "cmd-2")
    auto = Decision("carrier", "jt", "OPEN", "CLOSED", "5 consecutive failures", "x", {}, T0 + 4)
    assert forced.record_id != auto.record_id
    assert d.key == "shopee" and d.figures["command_id"] == "cmd-1"


@pytest.mark.parametrize("size", [1, 2, 3])
def test_outputs_with_commands_do_not_depend_on_batch_cuts(size):
    items = [
        *[(T0 + i, False) for i in range(3)],
        command("jt", "HALF_OPEN", T0 + 3, 1),
        (T0 + 4, False),
        command("jt", "AUTO", T0 + 5, 2),
        (T0 + 6, True),
        (T0 + 7, False),
    ]
    whole = HealthState(SETTINGS).apply(batch(*items))
    state, cut = HealthState(SETTINGS), []
    for i in range(0, len(items), size):
        cut += state.apply(batch(*items[i : i + size]))
        state = pickle.loads(pickle.dumps(state))
    assert cut == whole
    assert [(d.previous_state, d.state) for d in whole] == [
        ("CLOSED", "HALF_OPEN"),
        ("HALF_OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "OPEN"),  # under the rules again: the failed probe reopens
    ]
