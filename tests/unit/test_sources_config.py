"""ops/sources.yaml: one valid entry per source, and a broken one says where it is broken."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
import yaml

from schemas.config import DEFAULT_CONFIG, ConfigError, SourceSpec, load_settings
from schemas.event import Event
from schemas.normalize import Normalizer
from schemas.statuses import CLAIMABLE, conditional

SOURCES = DEFAULT_CONFIG.parent / "sources.yaml"
TELEMETRY_KEYS = ("carrier", "operation", "latency_ms", "ok", "error")
SETTINGS = load_settings()

EXPECTED = {
    "taobao": ("orders", "channel"),
    "pinduoduo": ("orders", "channel"),
    "douyin": ("orders", "channel"),
    "shopee": ("orders", "channel"),
    "shopify": ("orders", "channel"),
    "oms": ("orders", "oms"),
    "wms": ("orders", "wms"),
    "wechatpay": ("payments", "gateway"),
    "alipay": ("payments", "gateway"),
    "stripe": ("payments", "gateway"),
    "paypal": ("payments", "gateway"),
    "sf": ("tracking", "carrier"),
    "zto": ("tracking", "carrier"),
    "yto": ("tracking", "carrier"),
    "jt": ("tracking", "carrier"),
    "dhl": ("tracking", "carrier"),
    "aftership": ("tracking", "carrier"),
    "carrier_api": ("tracking", "telemetry"),
}


def test_every_source_is_registered_on_its_stream_with_its_kind() -> None:
    got = {name: (s.stream, s.kind) for name, s in SETTINGS.sources.items()}
    assert got == EXPECTED


def specs() -> list[tuple[str, SourceSpec]]:
    """Every source as it reads its payloads: a source without kinds, or each of its kinds."""
    out = []
    for name, spec in SETTINGS.sources.items():
        out += [(f"{name}.{k}", spec.resolve(k)) for k in spec.kinds] or [(name, spec)]
    return out


def test_channel_sources_name_their_channel_and_carriers_their_carrier() -> None:
    for name, spec in SETTINGS.sources.items():
        if spec.kind == "channel":
            assert spec.channel == name
        if spec.kind == "carrier" and name != "aftership":
            assert spec.carrier == name
    aftership = [s for name, s in specs() if name.startswith("aftership.")]
    assert aftership and all(s.fields.carrier[-1].endswith("slug") for s in aftership)


def test_every_claim_is_canonical() -> None:
    for _, spec in specs():
        for f in spec.statuses:
            for claim in [*f.map.values(), f.present, *(r.status for r in f.refine)]:
                if claim is not None:
                    assert all(p in CLAIMABLE for p in conditional(claim) or (claim,)), claim


def test_chinese_platforms_read_naive_times_in_shanghai() -> None:
    for name in ("taobao", "pinduoduo", "alipay", "sf", "zto", "yto", "jt"):
        spec = SETTINGS.sources[name]
        assert (spec.time_format, spec.zone) == ("naive", "Asia/Shanghai"), name
    for name in ("douyin", "shopee", "stripe"):
        assert SETTINGS.sources[name].time_format == "epoch_s", name


def test_the_shipped_file_loads_through_the_main_config() -> None:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert raw["sources"] == "sources.yaml"
    assert set(yaml.safe_load(SOURCES.read_text(encoding="utf-8"))) == set(EXPECTED)


# ---------------------------------------------------------------- broken files
def _broken(tmp_path: Path, edit: str, replacement: str) -> str:
    """Load a copy of the configuration whose sources file has one edit; the error text."""
    shutil.copy(DEFAULT_CONFIG, tmp_path / "orderguard.yaml")
    text = SOURCES.read_text(encoding="utf-8")
    assert edit in text, edit
    (tmp_path / "sources.yaml").write_text(text.replace(edit, replacement, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "orderguard.yaml")
    return str(info.value)


def test_a_claim_that_is_not_canonical(tmp_path: Path) -> None:
    msg = _broken(tmp_path, "WAIT_BUYER_PAY: PENDING_PAYMENT", "X: NOPE")
    assert f"{tmp_path / 'sources.yaml'}: sources.taobao.statuses.0.map.X: " in msg
    assert "'NOPE' is not a canonical status" in msg


def test_half_of_a_conditional_claim_that_is_not_canonical(tmp_path: Path) -> None:
    msg = _broken(tmp_path, "TRADE_CLOSED: REFUNDED/CANCELLED", "TRADE_CLOSED: REFUNDED/GONE")
    assert "sources.taobao.statuses.0.map.TRADE_CLOSED: 'GONE' is not a canonical status" in msg


def test_an_unknown_time_format(tmp_path: Path) -> None:
    msg = _broken(
        tmp_path,
        "  time_format: epoch_s\n  identity: {namespace: douyin",
        "  time_format: epoch_us\n  identity: {namespace: douyin",
    )
    assert "sources.douyin.time_format: Input should be" in msg


def test_an_unknown_zone(tmp_path: Path) -> None:
    msg = _broken(tmp_path, "zone: Asia/Shanghai", "zone: Asia/Atlantis")
    assert "sources.taobao.zone: unknown time zone 'Asia/Atlantis'" in msg


def test_an_unknown_key_is_refused(tmp_path: Path) -> None:
    msg = _broken(tmp_path, "  channel: taobao\n", "  channel: taobao\n  chanel: taobao\n")
    assert "sources.taobao.chanel: Extra inputs are not permitted" in msg


def test_an_unknown_channel(tmp_path: Path) -> None:
    msg = _broken(tmp_path, "  channel: taobao\n", "  channel: tmall\n")
    assert "sources.taobao.channel: unknown channel 'tmall'" in msg


def test_a_source_without_statuses(tmp_path: Path) -> None:
    text = SOURCES.read_text(encoding="utf-8")
    start = text.index("wms:\n")
    end = text.index("  signals:", start)
    msg = _broken(
        tmp_path,
        text[start:end],
        "wms:\n  stream: orders\n  kind: wms\n"
        "  time_format: rfc3339\n  fields: {order_id: [order_id], event_time: [at]}\n",
    )
    assert "sources.wms: a source needs at least one entry in `statuses`" in msg


def test_a_telemetry_source_without_paths(tmp_path: Path) -> None:
    block = "  telemetry:\n" + "".join(f"    {k}: {k}\n" for k in TELEMETRY_KEYS)
    msg = _broken(tmp_path, block, "")
    assert "sources.carrier_api: a telemetry source needs `telemetry:` field paths" in msg


def test_a_signal_for_a_value_no_map_knows(tmp_path: Path) -> None:
    msg = _broken(tmp_path, "    RESHIP_REQUESTED: reship", "    RESHIP: reship")
    assert "sources.wms: signals: 'RESHIP' is not a value of any status map" in msg


def test_envelope_time_for_a_value_no_map_knows(tmp_path: Path) -> None:
    msg = _broken(tmp_path, "envelope_time: [REFUND]", "envelope_time: [REFUNDED]")
    assert "sources.wechatpay: kinds.transaction: envelope_time: 'REFUNDED' is not a value" in msg


def test_a_refinement_that_is_not_a_regular_expression(tmp_path: Path) -> None:
    msg = _broken(tmp_path, "match: '^PICKED_UP$'", "match: '^(PICKED_UP'")
    assert "sources.dhl.kinds.push.statuses.0.refine.0.match: not a regular expression" in msg


def test_an_outcome_that_is_neither_success_nor_failure(tmp_path: Path) -> None:
    msg = _broken(tmp_path, "    SUCCESS: success", "    SUCCESS: great")
    want = "sources.wechatpay.kinds.transaction.outcomes.SUCCESS: Input should be 'success'"
    assert want in msg


def test_an_unquoted_numeric_map_key_is_named(tmp_path: Path) -> None:
    msg = _broken(tmp_path, '        "50": PICKED_UP', "        50: PICKED_UP")
    assert "sources.sf.kinds.json.statuses.0.map.50.[key]: Input should be a valid string" in msg


def test_a_sources_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    shutil.copy(DEFAULT_CONFIG, tmp_path / "orderguard.yaml")
    (tmp_path / "sources.yaml").write_text("- taobao\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sources\.yaml: the top level must be a mapping"):
        load_settings(tmp_path / "orderguard.yaml")


def test_the_readme_example_provider_is_one_config_entry(tmp_path: Path) -> None:
    """README "Adding a provider": its example entry (and a carriers: line) is all it takes."""
    readme = (DEFAULT_CONFIG.parents[1] / "README.md").read_text()
    section = readme[readme.index("## Adding a provider") :]
    block = section[section.index("```yaml\n") + 8 :]
    entry = yaml.safe_load(block[: block.index("```")])
    for name in ("orderguard.yaml", "sources.yaml"):
        shutil.copy(DEFAULT_CONFIG.parent / name, tmp_path / name)
    sources = yaml.safe_load((tmp_path / "sources.yaml").read_text())
    merged = yaml.safe_dump({**sources, **entry}, allow_unicode=True)
    (tmp_path / "sources.yaml").write_text(merged, encoding="utf-8")
    cfg = yaml.safe_load((tmp_path / "orderguard.yaml").read_text())
    cfg["carriers"]["acme"] = {"pattern": "^AC[0-9]{10}$", "backup": "sf"}
    (tmp_path / "orderguard.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    settings = load_settings(tmp_path / "orderguard.yaml")

    push = {
        "waybill": "AC0123456789",
        "traces": [
            {"code": "PU", "time": "2026-12-01 09:00:00"},
            {"code": "DL", "time": "2026-12-02 10:30:00"},
        ],
    }
    envelope = {"stream": "tracking", "source": "acme", "received_at": "2026-12-02T03:00:00Z"}
    result = Normalizer(settings).normalize(orjson.dumps({**envelope, "payload": push}), origin={})
    assert isinstance(result, tuple) and all(isinstance(e, Event) for e in result)
    assert [(e.tracking_no, e.carrier, e.tracking_valid, e.claims) for e in result] == [
        ("AC0123456789", "acme", True, ("PICKED_UP",)),
        ("AC0123456789", "acme", True, ("DELIVERED",)),
    ]
    assert result[1].event_ms == 1796178600000  # 10:30 in Shanghai is 02:30 UTC
