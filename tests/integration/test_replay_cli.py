"""`orderguard replay` end to end: the real Bytewax dataflow over files, as a user runs it."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLE = FIXTURES / "day-in-the-life.jsonl"


orderguard = run_cli


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sample_day_gives_every_order_its_full_lifecycle_and_no_alerts(tmp_path):
    result = orderguard("replay", str(SAMPLE), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "events in" in result.stdout and "74" in result.stdout
    lives: dict[str, list[str]] = defaultdict(list)
    for rec in read(tmp_path / "corrected.jsonl"):
        lives[rec["order_id"]].append(rec["status"])
    shipped = ["LABEL_CREATED", "PICKED_UP", "IN_TRANSIT", "OUT_FOR_DELIVERY", "DELIVERED"]
    assert lives == {
        "SH2026011500042": ["PENDING_PAYMENT", "PAID", "LABEL_CREATED", *shipped[2:]],
        "DY2026012700789": ["PENDING_PAYMENT", "PAID", "FULFILLING", *shipped, "COMPLETED"],
        "TB2026012700123": ["PENDING_PAYMENT", "PAID", "FULFILLING", *shipped, "COMPLETED"],
        "TB2026012700124": ["PENDING_PAYMENT", "PAID", "REFUND_REQUESTED", "REFUNDED"],
        "PDD2026012700456": ["PAID", *shipped, "COMPLETED"],
        "WEB2026020900007": ["PENDING_PAYMENT", "PAID", *shipped],
    }
    assert read(tmp_path / "alerts.jsonl") == []
    assert read(tmp_path / "dead_letters.jsonl") == []
    assert read(tmp_path / "breakers.jsonl") == []
    final = {r["order_id"]: r for r in read(tmp_path / "corrected.jsonl")}
    assert final["TB2026012700123"]["standard_status"] == "已完成"
    assert final["TB2026012700124"]["standard_status"] == "已退款"
    # corrections are emitted when the derived status changes, carrying the OMS's view then
    delivered = final["WEB2026020900007"]
    assert (delivered["status"], delivered["reported_status"]) == ("DELIVERED", "LABEL_CREATED")
    assert delivered["mismatch"] is True
    assert delivered["evidence"][0]["source"] == "dhl"
    versions = [
        r["version"]
        for r in read(tmp_path / "corrected.jsonl")
        if r["order_id"] == "TB2026012700123"
    ]
    assert versions == list(range(1, len(versions) + 1))


def test_bad_lines_become_dead_letters_with_reasons_not_crashes(tmp_path):
    src = tmp_path / "in.jsonl"
    good = SAMPLE.read_text().splitlines()[:3]
    src.write_text(
        "\n".join(
            [
                *good,
                "{not json",
                "[1, 2]",
                json.dumps(
                    {
                        "stream": "orders",
                        "source": "nope",
                        "received_at": "2026-01-15T14:00:02.000Z",
                        "payload": {},
                    }
                ),
            ]
        )
        + "\n"
    )
    out = tmp_path / "out"
    result = orderguard("replay", str(src), "--out", str(out))
    assert result.returncode == 0, result.stderr
    dead = read(out / "dead_letters.jsonl")
    assert [d["reason"] for d in dead] == ["not_json", "not_object", "unknown_source"]
    assert dead[0]["raw"] == "{not json"
    assert dead[0]["origin"] == {"file": str(src), "line": 4}


def test_missing_input_is_a_one_line_error(tmp_path):
    result = orderguard("replay", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "o"))
    assert result.returncode != 0
    assert "absent.jsonl" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_names_the_file_and_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("thresholds:\n  pickup_missing: soon\n")
    result = orderguard("replay", str(SAMPLE), "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert result.returncode != 0
    assert "bad.yaml" in result.stderr and "thresholds.pickup_missing" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("breakers:\n  channel:\n    bad_ratio: 2\n", "breakers.channel.bad_ratio"),
        ("pipeline:\n  shards: 0\n", "pipeline.shards"),
        ("nonsense: 1\n", "nonsense"),
    ],
)
def test_config_check_says_what_is_wrong_and_where(tmp_path, text, expected):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    result = orderguard("config", "check", str(cfg))
    assert result.returncode != 0
    assert f"{cfg}: {expected}" in result.stderr


def test_config_check_accepts_the_shipped_config():
    result = orderguard("config", "check")
    assert result.returncode == 0, result.stderr
    assert "18 sources" in result.stdout


def test_environment_overrides_the_file_and_errors_say_so(tmp_path):
    import os

    env = dict(os.environ, ORDERGUARD__THRESHOLDS__PICKUP_MISSING="forever")
    result = orderguard("config", "check", env=env)
    assert result.returncode != 0
    assert "ORDERGUARD__THRESHOLDS__PICKUP_MISSING" in result.stderr
