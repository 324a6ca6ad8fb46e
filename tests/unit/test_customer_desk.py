"""Customer holds across shards: holds open on the order alerts, and guard reships."""

from __future__ import annotations

from schemas.commands import Command
from schemas.config import Settings
from state.customers import CustomerDesk
from state.records import Alert, CustomerSignal, Decision
from tests.helpers import HOUR, MIN, T0


def hold(customer: str, order: str, at: int) -> CustomerSignal:
    return CustomerSignal("hold", customer, order, at, "DELIVERY_NOT_REFLECTED", "taobao", "sf")


def shipment(customer: str, order: str, at: int) -> CustomerSignal:
    return CustomerSignal("shipment", customer, order, at, None, "taobao", "sf")


def test_reship_for_a_held_customer_is_a_duplicate_shipment_risk_until_release():
    desk = CustomerDesk(Settings())
    out = desk.process([hold("C1", "TB2026030200001", T0)], T0)
    assert [(d.breaker, d.key, d.state, d.action) for d in out if isinstance(d, Decision)] == [
        ("customer", "C1", "HOLD", "pause_auto_ship")
    ]
    out = desk.process([shipment("C1", "TB2026030200002", T0 + HOUR)], T0 + HOUR)
    [risk] = out
    assert isinstance(risk, Alert)
    assert (risk.type, risk.state, risk.subject["order_id"]) == (
        "DUPLICATE_SHIPMENT_RISK",
        "firing",
        "TB2026030200002",
    )
    out = desk.release("C1", T0 + 2 * HOUR, "alice")
    assert [type(r).__name__ for r in out] == ["Decision", "Alert"]
    assert out[0].state == "RELEASED" and "alice" in out[0].reason
    assert (out[1].state, out[1].alert_id) == ("resolved", risk.alert_id)


def test_shipment_for_a_customer_not_on_hold_is_fine():
    desk = CustomerDesk(Settings())
    assert desk.process([shipment("C2", "TB2026030200003", T0)], T0) == []


def test_holds_expire_after_72_hours_and_resolve_their_risks():
    desk = CustomerDesk(Settings())
    desk.process([hold("C1", "TB2026030200001", T0)], T0)
    desk.process([shipment("C1", "TB2026030200002", T0 + HOUR)], T0 + HOUR)
    out = desk.process([], T0 + 72 * HOUR + 1)
    assert [(type(r).__name__, getattr(r, "state", None)) for r in out] == [
        ("Decision", "RELEASED"),
        ("Alert", "resolved"),
    ]
    assert out[0].at_ms == T0 + 72 * HOUR


def test_signals_from_different_shards_are_applied_in_time_order():
    """The same signals in any arrival order give the same result."""
    signals = [shipment("C1", "TB2026030200002", T0 + HOUR), hold("C1", "TB2026030200001", T0)]
    a = CustomerDesk(Settings()).process(signals, T0 + 2 * HOUR)
    b = CustomerDesk(Settings()).process(list(reversed(signals)), T0 + 2 * HOUR)
    assert a == b
    assert [getattr(r, "type", getattr(r, "state", None)) for r in a] == [
        "HOLD",
        "DUPLICATE_SHIPMENT_RISK",
    ]


# ------------------------------------------------------------------ operator commands
def command(customer: str, state: str, at: int, n: int, reason: str | None = None) -> Command:
    return Command(f"cmd-{n}", "customer", customer, state, "bob", reason, at, n, "ops")


def test_operator_release_is_a_decision_naming_the_operator_and_resolves_the_risks():
    desk = CustomerDesk(Settings())
    desk.process([hold("C1", "TB2026030200001", T0)], T0)
    [risk] = desk.process([shipment("C1", "TB2026030200002", T0 + HOUR)], T0 + HOUR)
    out = desk.process([command("C1", "RELEASED", T0 + 2 * HOUR, 9, "refund confirmed")], T0)
    assert [type(r).__name__ for r in out] == ["Decision", "Alert"]
    d = out[0]
    assert (d.key, d.previous_state, d.state, d.action, d.at_ms) == (
        "C1",
        "HOLD",
        "RELEASED",
        "resume",
        T0 + 2 * HOUR,
    )
    assert d.reason == "operator bob (key ops): refund confirmed"
    assert d.figures["operator"] == "bob" and d.figures["command_id"] == "cmd-9"
    assert d.figures["forced"] is False and d.figures["orders"] == ["TB2026030200001"]
    assert (out[1].state, out[1].alert_id) == ("resolved", risk.alert_id)
    # another release of the released customer changes nothing and says nothing
    assert desk.process([command("C1", "RELEASED", T0 + 2 * HOUR, 10)], T0 + 2 * HOUR) == []
    # the same command again (its id) is a replay: a dead letter, nothing changes
    [replay] = desk.process([command("C1", "RELEASED", T0 + 2 * HOUR, 9)], T0 + 2 * HOUR)
    assert (replay.reason, replay.value) == ("unauthenticated_command", "cmd-9")


def test_operator_hold_pauses_shipping_and_expires_like_any_hold():
    desk = CustomerDesk(Settings())
    [d] = desk.process([command("C5", "HOLD", T0, 1)], T0)
    assert (d.state, d.previous_state, d.action, d.reason) == (
        "HOLD",
        "RELEASED",
        "pause_auto_ship",
        "operator bob (key ops): hold",
    )
    assert d.figures["expires_at"] == T0 + 72 * HOUR and d.figures["command_id"] == "cmd-1"
    assert desk.process([command("C5", "HOLD", T0 + 1, 2)], T0 + 1) == []  # already held
    [risk] = desk.process([shipment("C5", "TB2026030200009", T0 + HOUR)], T0 + HOUR)
    assert risk.type == "DUPLICATE_SHIPMENT_RISK"
    out = desk.process([], T0 + 72 * HOUR)
    assert [(type(r).__name__, getattr(r, "reason", r.state)) for r in out] == [
        ("Decision", "expired"),
        ("Alert", "resolved"),
    ]
    assert out[0].figures["alert_type"] is None and out[0].figures["hold_reason"] == d.reason


def test_commands_are_applied_in_time_order_with_the_signals_whatever_their_arrival():
    """A release before a shipment: no risk; the hold that comes after stands."""
    items = [
        hold("C1", "TB2026030200001", T0),
        command("C1", "RELEASED", T0 + HOUR, 3),
        shipment("C1", "TB2026030200002", T0 + 2 * HOUR),
        hold("C1", "TB2026030200003", T0 + HOUR),  # same time as the command: applied before it
    ]
    a = CustomerDesk(Settings()).process(items, T0 + 3 * HOUR)
    b = CustomerDesk(Settings()).process(list(reversed(items)), T0 + 3 * HOUR)
    assert a == b
    assert [(type(r).__name__, getattr(r, "state", None)) for r in a] == [
        ("Decision", "HOLD"),
        ("Decision", "RELEASED"),
    ]
    assert a[1].figures["orders"] == ["TB2026030200001", "TB2026030200003"]


def test_a_command_received_behind_the_desks_clock_is_applied_at_the_clock():
    """Decisions never go back in time (a late line of one partition, a recording's end)."""
    desk = CustomerDesk(Settings())
    desk.process([hold("C1", "TB2026030200001", T0)], T0 + 5 * HOUR)
    # 2 minutes behind: within control.tolerance (further behind is stale: test_command_auth)
    [d] = desk.process([command("C1", "RELEASED", T0 + 5 * HOUR - 2 * MIN, 1)], T0 + 6 * HOUR)
    assert (d.state, d.at_ms) == ("RELEASED", T0 + 5 * HOUR)
