"""A generated normal day (all 18 sources) replays to full lifecycles and raises nothing."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import orjson

from dataflows.replay import run_replay
from schemas.config import load_settings
from schemas.statuses import RANK
from sim import generate, write_jsonl


def test_normal_day_has_full_lifecycles_and_no_alerts(tmp_path):
    day = tmp_path / "day.jsonl"
    envelopes = list(
        generate(orders=300, seed=21, start=datetime(2026, 3, 2, tzinfo=UTC), hours=24)
    )
    write_jsonl(day, envelopes)
    assert {e["source"] for e in envelopes} >= {
        "taobao",
        "pinduoduo",
        "douyin",
        "shopee",
        "shopify",
        "oms",
        "wms",
        "wechatpay",
        "alipay",
        "stripe",
        "paypal",
        "sf",
        "zto",
        "yto",
        "jt",
        "dhl",
        "aftership",
        "carrier_api",
    }
    run_replay(load_settings(), [day], tmp_path / "out")

    def read(topic: str) -> list[dict]:
        lines = (tmp_path / "out" / f"{topic}.jsonl").read_bytes().splitlines()
        return [orjson.loads(x) for x in lines]

    assert read("dead_letters") == []
    assert read("alerts") == []
    assert read("breakers") == []

    lives: dict[str, list[str]] = defaultdict(list)
    for rec in read("corrected"):
        lives[rec["order_id"]].append(rec["status"])
    # every order the day created is followed
    created = {e["payload"].get("order_id") for e in envelopes if e["source"] == "oms"}
    created = {o for o in created if o and not o.startswith("REF-")}
    assert created <= set(lives)
    # along the main path, each order only moves forward
    for oid, statuses in lives.items():
        ranks = [RANK[s] for s in statuses if s in RANK]
        assert ranks == sorted(set(ranks)), (oid, statuses)
    # an order whose carrier said delivered ends delivered, completed or refunded
    delivered_refs = set()
    for e in envelopes:
        p = e["payload"]
        if e["source"] == "sf":  # a route push: Body.WaybillRoute[]
            routes = p["Body"]["WaybillRoute"]
            delivered_refs.update(r["orderid"] for r in routes if r["opCode"] == "80")
        if e["source"] == "dhl":  # a Unified Push: shipments[] with their references
            for s in p["shipments"]:
                if s["status"]["statusCode"] == "delivered":
                    delivered_refs.update(r["number"] for r in s["details"]["references"])
    delivered_refs.discard(None)
    assert delivered_refs, "the day should deliver some SF/DHL parcels"
    for oid in delivered_refs:
        assert lives[oid][-1] in ("DELIVERED", "COMPLETED", "REFUNDED", "REFUND_REQUESTED"), (
            oid,
            lives[oid],
        )
    finals = [v[-1] for v in lives.values()]
    assert finals.count("COMPLETED") + finals.count("DELIVERED") > len(finals) // 3
