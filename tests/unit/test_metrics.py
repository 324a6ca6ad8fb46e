"""Gauges of what a shard holds go to 0 when it no longer holds it, instead of going stale."""

from __future__ import annotations

from prometheus_client import REGISTRY

from connectors.metrics import publish_census


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_status_a_shard_no_longer_holds_reads_zero():
    publish_census("t-shard", {"PAID": 3, "DELIVERED": 1}, {"TRACKING_STALLED": 1})
    assert value("orderguard_orders", status="PAID", shard="t-shard") == 3
    assert value("orderguard_open_order_alerts", type="TRACKING_STALLED", shard="t-shard") == 1
    publish_census("t-shard", {"DELIVERED": 4}, {})
    assert value("orderguard_orders", status="PAID", shard="t-shard") == 0
    assert value("orderguard_orders", status="DELIVERED", shard="t-shard") == 4
    assert value("orderguard_open_order_alerts", type="TRACKING_STALLED", shard="t-shard") == 0
    publish_census("t-other", {"PAID": 2}, {})  # shards are separate series
    assert value("orderguard_orders", status="PAID", shard="t-shard") == 0
    for shard in ("t-shard", "t-other"):  # leave nothing for tests that sum over shards
        publish_census(shard, {}, {})
    assert value("orderguard_orders", status="PAID", shard="t-other") == 0
