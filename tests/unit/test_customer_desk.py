"""Customer holds across shards: holds open on the order alerts, and guard reships."""

from __future__ import annotations

from schemas.config import Settings
from state.customers import CustomerDesk
from state.records import Alert, CustomerSignal, Decision
from tests.helpers import HOUR, T0


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
