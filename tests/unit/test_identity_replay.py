"""A replay of envelopes that name one order by three ids: the channel's, the OMS's, a parcel's.

From the input file to the output files, through the real normalizer (`identity:` and
`links:` of the sources below, which exist only here so the test owns every value),
the router, the reference index and the order shards: the channel's and the payment's
reports arrive before the OMS links the channel's id, a scan before the label; all are
held and released behind what links them, and the order ends where its evidence says,
under its OMS id, carrying the others. One worker or two give the same outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from dataflows.replay import run_replay
from schemas.config import Settings, load_settings
from tests.helpers import T0

SHIPPED = load_settings()
SOURCES: dict[str, Any] = {
    "shop": {  # Taobao-like: its own numeric tid
        "stream": "orders",
        "kind": "channel",
        "channel": "taobao",
        "time_format": "naive",
        "zone": "Asia/Shanghai",
        "identity": {"namespace": "taobao", "pattern": "[0-9]{6,19}"},
        "fields": {"order_id": ["tid"], "event_time": ["modified"]},
        "statuses": [
            {
                "path": "status",
                "map": {"WAIT_BUYER_PAY": "PENDING_PAYMENT", "WAIT_SELLER_SEND_GOODS": "PAID"},
            }
        ],
    },
    "pay": {  # Alipay-like: the merchant's reference is the channel's id, with an attempt suffix
        "stream": "payments",
        "kind": "gateway",
        "time_format": "naive",
        "zone": "Asia/Shanghai",
        "identity": {"namespace": "taobao", "strip": "-[0-9]{1,3}$"},
        "fields": {"order_id": ["out_trade_no"], "event_time": ["gmt_payment"]},
        "statuses": [{"path": "trade_status", "map": {"TRADE_SUCCESS": "PAID"}}],
        "outcomes": {"TRADE_SUCCESS": "success"},
    },
    "erp": {  # the OMS: its own global id, linked to the channel's
        "stream": "orders",
        "kind": "oms",
        "time_format": "rfc3339",
        "fields": {
            "order_id": ["order_id"],
            "channel": ["channel"],
            "tracking_no": ["tracking_no"],
            "carrier": ["carrier"],
            "event_time": ["updated_at"],
        },
        "links": [{"namespace_from": "channel", "id": ["platform_order_id"]}],
        "statuses": [
            {"path": "status", "map": {"待支付": "PENDING_PAYMENT", "已发货": "LABEL_CREATED"}}
        ],
    },
    "parcel": {  # a carrier that names only the tracking number
        "stream": "tracking",
        "kind": "carrier",
        "carrier": "sf",
        "time_format": "naive",
        "zone": "Asia/Shanghai",
        "fields": {"tracking_no": ["mailno"], "event_time": ["acceptTime"]},
        "statuses": [{"path": "opCode", "map": {"50": "PICKED_UP"}}],
    },
}
SETTINGS = Settings(
    channels=SHIPPED.channels,
    carriers=SHIPPED.carriers,
    refund_order=SHIPPED.refund_order,
    sources={**SHIPPED.sources, **SOURCES},
    pipeline={"shards": 8, "batch_size": 2},  # two index shards; batches cut between links
    retention={"pending_tracking": "1d"},
)
OID, TID, OTHER_TID = "TB2026030200123", "3456789012345678", "3456789012340000"
MAILNO = "SF123456789012"


def _lines() -> list[dict[str, Any]]:
    def env(source: str, minute: int, payload: dict[str, Any]) -> dict[str, Any]:
        at = f"2026-03-02T08:{minute:02d}:00Z"
        return {
            "stream": SETTINGS.sources[source].stream,
            "source": source,
            "received_at": at,
            "event_id": f"{source}-{minute}",
            "payload": payload,
        }

    local = "2026-03-02 16:{:02d}:00"  # Asia/Shanghai
    return [
        env("shop", 1, {"tid": int(TID), "status": "WAIT_BUYER_PAY", "modified": local.format(1)}),
        env("pay", 2, {"out_trade_no": f"{TID}-2", "trade_status": "TRADE_SUCCESS",
                       "gmt_payment": local.format(2)}),
        env("shop", 3, {"tid": int(TID), "status": "WAIT_SELLER_SEND_GOODS",
                        "modified": local.format(3)}),
        env("shop", 4, {"tid": int(OTHER_TID), "status": "WAIT_BUYER_PAY",
                        "modified": local.format(4)}),  # an order the OMS never links
        env("erp", 5, {"order_id": OID, "channel": "Taobao", "platform_order_id": TID,
                       "status": "待支付", "updated_at": "2026-03-02T08:05:00Z"}),
        env("parcel", 6, {"mailno": MAILNO, "opCode": "50", "acceptTime": local.format(6)}),
        env("erp", 7, {"order_id": OID, "channel": "Taobao", "platform_order_id": TID,
                       "status": "已发货", "tracking_no": MAILNO, "carrier": "sf",
                       "updated_at": "2026-03-02T08:07:00Z"}),
        env("erp", 59, {"order_id": "TB2026030300001", "status": "待支付",
                        "updated_at": "2026-03-03T08:59:00Z"}
            ) | {"received_at": "2026-03-03T08:59:00Z"},  # a day later: the bound is reached
    ]  # fmt: skip


def replay(tmp: Path, workers: int) -> dict[str, list[dict[str, Any]]]:
    src = tmp / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in _lines()))
    out = tmp / f"out{workers}"
    run_replay(
        SETTINGS,
        [src],
        out,
        workers=workers,
        show_progress=False,
        wall_clock=lambda: T0 + 86_400_000 * 30,
    )
    docs: dict[str, list[dict[str, Any]]] = {}
    for topic in ("corrected", "alerts", "dead_letters"):
        rows = [orjson.loads(x) for x in (out / f"{topic}.jsonl").read_bytes().splitlines()]
        for r in rows:
            r.pop("emitted_at", None)
            if topic == "dead_letters":
                del r["at"]  # the wall clock when written
        docs[topic] = rows
    return docs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One input file for every run: a dead letter's id names the file it came from."""
    return tmp_path_factory.mktemp("identity")


@pytest.fixture(scope="module")
def outputs(workdir: Path) -> dict[str, list[dict[str, Any]]]:
    return replay(workdir, 1)


def test_an_order_named_by_its_channel_payment_and_parcel_ids_ends_under_its_oms_id(outputs):
    mine = [c for c in outputs["corrected"] if c["order_id"] == OID]
    # the OMS's report first, then what waited for its link, in input order: the payment
    # (attempt suffix stripped), the channel's PAID; then the scan behind the label
    assert [(c["status"], c["evidence"][0]["source"]) for c in mine] == [
        ("PENDING_PAYMENT", "erp"),
        ("PAID", "pay"),
        ("LABEL_CREATED", "erp"),
        ("PICKED_UP", "parcel"),
    ]
    assert mine[-1]["ids"] == [f"taobao:{TID}", f"tracking:{MAILNO}"]
    assert all(c["order_id"] != f"taobao:{TID}" for c in outputs["corrected"])


def test_a_channel_id_nobody_links_is_dead_lettered_with_its_input(outputs):
    [dl] = outputs["dead_letters"]
    assert (dl["reason"], dl["value"], dl["source"]) == (
        "unlinked_reference",
        f"taobao:{OTHER_TID}",
        "shop",
    )
    assert orjson.loads(dl["raw"])["payload"]["tid"] == int(OTHER_TID)


def test_two_workers_replay_it_the_same(outputs, workdir):
    assert replay(workdir, 2) == outputs
