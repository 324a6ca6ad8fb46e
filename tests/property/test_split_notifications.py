"""Split, decoded and kind-selected notifications (the synthetic sources of
tests/unit/test_normalize_mechanics.py): never a raise, never `internal_error`, and a
notification redelivered whole or reordered gives the same events."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import errors
from schemas.event import DeadLetter, Event
from tests.property.test_parser_never_raises import json_values
from tests.unit.test_normalize_mechanics import NORMALIZER, envelope

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# where each synthetic source looks: arbitrary JSON is put there
SPOTS: dict[str, list[tuple[str, ...]]] = {
    "routes": [("Body", "WaybillRoute"), ("Body",)],
    "nested": [("shipments",)],
    "inherit": [("msg", "checkpoints"), ("msg",)],
    "formjson": [("bizContent",)],
    "formxml": [("content",)],
    "pushes": [("data",), ("code",)],
    "events": [("data", "object"), ("type",)],
    "present": [("tracking_company",), ("financial_status",)],
}


def results(raw: bytes) -> tuple[Event | DeadLetter, ...]:
    r = NORMALIZER.normalize(raw, origin={"test": True})
    out = r if type(r) is tuple else (r,)
    assert out, "a notification gives at least one result"
    for x in out:
        assert isinstance(x, Event | DeadLetter)
        if isinstance(x, DeadLetter):
            assert x.reason in errors.REASONS
            assert x.reason != errors.INTERNAL_ERROR, x.error
    return out


def put(spot: tuple[str, ...], value: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    target = body
    for key in spot[:-1]:
        target = target.setdefault(key, {})
    target[spot[-1]] = value
    return body


xml_texts = st.builds(
    lambda routes: (
        "<Request><Body>"
        + "".join(f"<WaybillRoute {' '.join(f'{k}={v!r}' for k, v in r.items())}/>" for r in routes)
        + "</Body></Request>"
    ),
    st.lists(
        st.dictionaries(
            st.sampled_from(["id", "mailno", "opCode", "acceptTime"]),
            st.sampled_from(["1", "SF123456789012", "50", "80", "2026-01-27 10:00:00", "x"]),
        ),
        max_size=4,
    ),
)


@FAST
@given(st.data())
def test_arbitrary_values_where_the_mechanics_look(data: st.DataObject) -> None:
    source = data.draw(st.sampled_from(sorted(SPOTS)))
    spot = data.draw(st.sampled_from(SPOTS[source]))
    values = json_values | st.text(max_size=60)
    if source == "formxml":
        values = values | xml_texts
    if source == "formjson":
        values = values | json_values.map(lambda v: orjson.dumps(v).decode())
    results(envelope(source, put(spot, data.draw(values))))


route = st.fixed_dictionaries(  # no `id`: identified by content
    {
        "mailno": st.sampled_from(["SF123456789012", "SF123456789013"]),
        "orderid": st.sampled_from(["TB2026012700123", "ORD-1", ""]),
        "opCode": st.sampled_from(["50", "80", "99"]),
        "acceptTime": st.sampled_from(["2026-01-27 10:00:00", "2026-01-27 11:00:00", "bad"]),
    }
)


@FAST
@given(st.lists(route, min_size=1, max_size=10), st.randoms(use_true_random=False))
def test_a_redelivered_or_reordered_push_gives_the_same_events(routes: list[Any], rnd: Any) -> None:
    first = results(envelope("routes", {"Body": {"WaybillRoute": routes}}))
    again = results(envelope("routes", {"Body": {"WaybillRoute": routes}}, event_id="other"))
    shuffled = routes[:]
    rnd.shuffle(shuffled)
    reordered = results(envelope("routes", {"Body": {"WaybillRoute": shuffled}}))

    def events(rs: tuple[Event | DeadLetter, ...]) -> Counter[tuple[Any, ...]]:
        return Counter(
            (e.event_id, e.claims, e.event_ms, e.tracking_no, e.order_id)
            for e in rs
            if isinstance(e, Event)
        )

    def dead(rs: tuple[Event | DeadLetter, ...]) -> Counter[str]:
        return Counter(d.reason for d in rs if isinstance(d, DeadLetter))

    assert events(first) == events(again) == events(reordered)
    assert dead(first) == dead(again) == dead(reordered)
    # one event id per distinct fact: equal ids only for equal routes
    by_id: dict[str, tuple[Any, ...]] = {}
    for e in first:
        if isinstance(e, Event):
            fact = (e.claims, e.event_ms, e.tracking_no, e.order_id)
            assert by_id.setdefault(e.event_id, fact) == fact
