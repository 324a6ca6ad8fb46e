"""Lives of orders whose channel names them (`channels.<name>.canonical_id: channel`),
through `orderguard replay` with a configuration that says so (README "Identity").

The same Pinduoduo life without an OMS event is replayed under both settings: the
default waits for an OMS link that never comes and dead-letters it; channel mode
gives its corrected statuses. Payloads are tests/fixtures/providers.py's documented
shapes.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from schemas.config import DEFAULT_CONFIG
from tests.fixtures import providers as p
from tests.integration.lives import Line, replay_lives

LATER = "2026-12-05T12:00:00Z"  # past every wait's bound (retention.pending_tracking: 1d)


def _config(tmp_path: Path, *channel_named: str) -> Path:
    """The shipped configuration, waits bounded by a day, `channel_named` in channel mode."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    for name in channel_named:
        data["channels"][name]["canonical_id"] = "channel"
    data["sources"] = str(DEFAULT_CONFIG.parent / "sources.yaml")
    data["retention"]["pending_tracking"] = "1d"
    path = tmp_path / f"og-{'-'.join(channel_named) or 'default'}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _replay(
    tmp_path: Path, lines: list[Line], *channel_named: str
) -> tuple[dict[str, list[str]], list[dict], list[dict]]:
    """(statuses per order id, corrections, dead letters)."""
    name = "-".join(channel_named) or "default"
    config = _config(tmp_path, *channel_named)
    run = replay_lives(tmp_path / f"{name}.jsonl", tmp_path / f"out-{name}", lines, config)
    return run.lives, run.corrected, run.dead


def _clock_mover() -> Line:
    """An unrelated order, days later: the ingestion clock passes every wait's bound."""
    return ("oms", p.oms_order(p.DOUYIN_OMS, "待支付", "2026-12-05T20:00:00+08:00"), LATER)


def _pinduoduo_without_oms() -> list[Line]:
    return [
        ("pinduoduo", p.pinduoduo_order(1, 1, "2026-12-02 11:20:31"), "2026-12-02T03:20:32Z"),
        ("pinduoduo", p.pinduoduo_order(1, 3, "2026-12-03 09:00:00"), "2026-12-03T01:00:01Z"),
        ("pinduoduo", p.pinduoduo_order(1, 4, "2026-12-03 12:00:00"), "2026-12-03T04:00:01Z"),
        _clock_mover(),
    ]


def test_a_pinduoduo_order_without_oms_events_gets_its_statuses_in_channel_mode(
    tmp_path: Path,
) -> None:
    lives, _, dead = _replay(tmp_path, _pinduoduo_without_oms(), "pinduoduo")
    assert dead == []
    assert lives[f"pinduoduo:{p.PDD_SN}"] == ["PAID", "REFUND_REQUESTED", "REFUNDED"]


def test_the_same_life_in_oms_mode_is_dead_lettered_unlinked(tmp_path: Path) -> None:
    lives, _, dead = _replay(tmp_path, _pinduoduo_without_oms())
    assert [(d["reason"], d["source"], d["value"]) for d in dead] == [
        ("unlinked_reference", "pinduoduo", f"pinduoduo:{p.PDD_SN}")
    ] * 3
    assert f"pinduoduo:{p.PDD_SN}" not in lives
    assert p.PDD_OMS not in lives


def test_a_shopify_channel_only_life_with_aftership_scans_by_its_tracking_number(
    tmp_path: Path,
) -> None:
    ful = p.shopify_fulfillment(1, p.UPS_NO, "2026-12-02T08:00:00-05:00")
    fulfilled = p.shopify_order(
        "paid", "2026-12-02T08:00:01-05:00", fulfillment_status="fulfilled", fulfillments=[ful]
    )
    cps = [  # a naive local time and a date alone
        p.aftership_checkpoint("2026-12-02T20:00:00", "InTransit", "InTransit_001", "a", "x"),
        p.aftership_checkpoint("2026-12-03", "Delivered", "Delivered_001", "b", "y"),
    ]
    order = f"shopify:{p.SHOPIFY_ID}"
    lives, corrected, dead = _replay(
        tmp_path,
        [
            (
                "shopify",
                p.shopify_order("pending", "2026-12-01T09:00:00-05:00"),
                "2026-12-01T14:00:01Z",
            ),
            (
                "shopify",
                p.shopify_order("partially_paid", "2026-12-01T09:05:00-05:00"),
                "2026-12-01T14:05:01Z",
            ),
            (
                "shopify",
                p.shopify_order("paid", "2026-12-01T09:10:00-05:00"),
                "2026-12-01T14:10:01Z",
            ),
            ("shopify", fulfilled, "2026-12-02T13:00:02Z"),
            (
                "aftership",
                p.aftership_webhook("ev-1", "Delivered", "Delivered_001", cps, 1796300000),
                "2026-12-03T12:00:00Z",
            ),
            _clock_mover(),
        ],
        "shopify",
    )
    assert dead == []
    # partially_paid claims PENDING_PAYMENT again: no correction
    assert lives[order] == ["PENDING_PAYMENT", "PAID", "LABEL_CREATED", "IN_TRANSIT", "DELIVERED"]
    found = [c for c in corrected if c["order_id"] == order]
    assert [c["evidence"][0]["source"] for c in found[-2:]] == ["aftership", "aftership"]
    assert found[-1]["ids"] == [f"tracking:{p.UPS_NO}"]


def test_a_mixed_life_in_channel_mode_links_the_oms_id_for_the_wms(tmp_path: Path) -> None:
    """Channel first, a WMS event naming the OMS id before the OMS links it (it waits),
    the OMS with `platform_order_id`, a later WMS event (resolved at once), a J&T scan."""
    oms = p.oms_order(
        p.PDD_OMS,
        "已支付",
        "2026-12-02T11:21:00+08:00",
        channel="pinduoduo",
        platform_order_id=p.PDD_SN,
    )
    shipped = {
        **oms,
        "status": "已发货",
        "updated_at": "2026-12-02T16:00:00+08:00",
        "tracking_no": p.JT_BILL,
        "carrier": "jt",
    }

    def wms(event: str, at: str) -> dict:
        return {"order_id": p.PDD_OMS, "event": event, "at": at}

    order = f"pinduoduo:{p.PDD_SN}"
    lives, corrected, dead = _replay(
        tmp_path,
        [
            ("pinduoduo", p.pinduoduo_order(1, 1, "2026-12-02 11:20:31"), "2026-12-02T03:20:32Z"),
            ("wms", wms("ALLOCATED", "2026-12-02T03:30:00Z"), "2026-12-02T03:30:01Z"),
            ("oms", oms, "2026-12-02T03:40:01Z"),
            ("wms", wms("PACKED", "2026-12-02T06:00:00Z"), "2026-12-02T06:00:01Z"),
            ("oms", shipped, "2026-12-02T08:00:01Z"),
            (
                "jt",
                p.jt_push(p.jt_detail("快件揽收", "2026-12-02 17:00:00", "x")),
                "2026-12-02T09:01:00Z",
            ),
            _clock_mover(),
        ],
        "pinduoduo",
    )
    assert dead == []
    assert p.PDD_OMS not in lives  # one order, under the channel's id
    assert lives[order] == ["PAID", "FULFILLING", "LABEL_CREATED", "PICKED_UP"]
    found = [c for c in corrected if c["order_id"] == order]
    assert found[1]["evidence"][0]["source"] == "wms"  # the waiting ALLOCATED, behind the link
    assert found[-1]["ids"] == [f"oms:{p.PDD_OMS}", f"tracking:{p.JT_BILL}"]
