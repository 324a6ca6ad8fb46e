"""A split notification through the whole replay dataflow (Bytewax): every route is an
event of its order, a repeated route and a redelivered push change nothing, a bad route is
one dead letter. The synthetic `routes` source is tests/unit/test_normalize_mechanics.py's."""

from __future__ import annotations

from typing import Any

import orjson

from dataflows.replay import run_replay
from tests.unit.test_normalize_mechanics import SETTINGS, push, route

ORDER = "TB2026012700123"


def line(source: str, stream: str, at: str, payload: Any) -> bytes:
    env = {"stream": stream, "source": source, "received_at": at, "payload": payload}
    return orjson.dumps(env)


def test_a_route_push_replays_to_its_orders_life(tmp_path):
    oms = {
        "order_id": ORDER,
        "channel": "taobao",
        "status": "已发货",
        "tracking_no": "SF123456789012",
        "carrier": "sf",
        "updated_at": "2026-01-27T09:00:00+08:00",
    }
    first = push(route(1, acceptTime="2026-01-27 10:00:00"))
    second = push(
        route(1, acceptTime="2026-01-27 10:00:00"),  # repeated: the same event
        route(2, "99", acceptTime="2026-01-27 12:00:00"),  # unmapped: one dead letter
        route(3, "80", acceptTime="2026-01-27 18:00:00"),
    )
    day = tmp_path / "day.jsonl"
    day.write_bytes(
        b"\n".join(
            [
                line("oms", "orders", "2026-01-27T01:00:01Z", oms),
                line("routes", "tracking", "2026-01-27T02:00:05Z", first),
                line("routes", "tracking", "2026-01-27T10:00:05Z", second),
                line("routes", "tracking", "2026-01-27T10:05:05Z", second),  # redelivered
            ]
        )
        + b"\n"
    )
    run_replay(SETTINGS, [day], tmp_path / "out")

    def read(topic: str) -> list[dict]:
        path = tmp_path / "out" / f"{topic}.jsonl"
        return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []

    dead = read("dead_letters")
    assert [(d["reason"], d["origin"].get("element")) for d in dead] == [
        ("unmapped_status", "1"),
        ("unmapped_status", "1"),  # the redelivery's copy of the bad route: its own input line
    ]
    assert len({d["id"] for d in dead}) == 2
    life = [
        (c["status"], [e["event_id"] for e in c["evidence"]])
        for c in read("corrected")
        if c["order_id"] == ORDER
    ]
    assert life[1:] == [("PICKED_UP", ["R1"]), ("DELIVERED", ["R3"])]  # each route once
    assert life[0][0] == "LABEL_CREATED"
