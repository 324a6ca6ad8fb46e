"""The channel sync service's id rules, tracking-number patterns and name aliases."""

from __future__ import annotations

import pytest

from schemas.config import CarrierSpec, ChannelSpec, load_settings
from schemas.ids import IdRules, OrderRef

RULES = IdRules.from_settings(load_settings())


# ---------------------------------------------------------------- order ids
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("TB2026012700123", OrderRef("TB2026012700123", None, "taobao")),
        ("PDD2026012700456", OrderRef("PDD2026012700456", None, "pinduoduo")),
        ("DY2026012700789", OrderRef("DY2026012700789", None, "douyin")),
        ("SP2026013100001", OrderRef("SP2026013100001", None, "shopee")),
        ("SH2026011500042", OrderRef("SH2026011500042", None, "shopify")),
        ("WEB2026020900007", OrderRef("WEB2026020900007", None, "web")),
        ("WEB20260209123456789", OrderRef("WEB20260209123456789", None, "web")),
        ("  TB2026012700123\n", OrderRef("TB2026012700123", None, "taobao")),  # noise stripped
    ],
)
def test_global_ids(value: str, expected: OrderRef) -> None:
    assert RULES.parse_order_id(value) == expected


@pytest.mark.parametrize(
    ("value", "original", "refund"),
    [
        ("REF-TB2026012700124-01", "TB2026012700124", "REF-TB2026012700124-01"),
        ("REF-SH2026011500042-12", "SH2026011500042", "REF-SH2026011500042-12"),
        (" REF-PDD2026012700456-03 ", "PDD2026012700456", "REF-PDD2026012700456-03"),
    ],
)
def test_refund_ids_route_to_the_original(value: str, original: str, refund: str) -> None:
    ref = RULES.parse_order_id(value)
    assert ref is not None
    assert (ref.order_id, ref.refund_id) == (original, refund)
    assert ref.channel == RULES.parse_order_id(original).channel  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "tb2026012700123",  # case-sensitive
        "Tb2026012700123",
        "XX2026012700123",  # no such channel code
        "TAOBAO2026012700123",
        "TB20260127",  # no sequence
        "TB2026132700123",  # month 13
        "TB2026013200123",  # day 32
        "TB2026012700123X",
        "TB 2026012700123",
        "TB２０２６012700123",  # full-width digits
        "2026012700123",
        "ref-TB2026012700124-01",
        "REF-TB2026012700124",  # no nn
        "REF-TB2026012700124-1",  # nn is two digits
        "REF-tb2026012700124-01",
        "REF-XX2026012700124-01",
        "REF-REF-TB2026012700124-01-01",
    ],
)
def test_invalid_ids(value: str) -> None:
    assert RULES.parse_order_id(value) is None
    assert RULES.parse_order_id(value) is None  # the cache remembers "invalid" too


def test_channel_for_code_is_case_sensitive() -> None:
    assert RULES.channel_for_code("PDD") == "pinduoduo"
    assert RULES.channel_for_code("pdd") is None


def test_codes_that_prefix_each_other() -> None:
    rules = IdRules(
        {"sh": ChannelSpec(code="SH"), "shx": ChannelSpec(code="SHX")},
        {"sf": CarrierSpec(pattern="^SF[0-9]{12}$")},
    )
    assert rules.parse_order_id("SHX2026010100001") == OrderRef("SHX2026010100001", None, "shx")
    assert rules.parse_order_id("SH2026010100001") == OrderRef("SH2026010100001", None, "sh")


# ---------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("sf", "sf"),
        ("SF", "sf"),
        ("Sf", "sf"),
        ("shunfeng", "sf"),
        ("顺丰", "sf"),
        ("UPS", "ups"),
        ("ups", "ups"),
        ("J&T", "jt"),
        ("j&t", "jt"),
        ("jtexpress", "jt"),
        ("ZTO", "zto"),
        ("dhl-express", "dhl"),
        (" DHL ", "dhl"),
        ("fedex", None),
        ("", None),
    ],
)
def test_carrier_aliases(name: str, key: str | None) -> None:
    assert RULES.resolve_carrier(name) == key


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("taobao", "taobao"),
        ("TaoBao", "taobao"),
        ("own_site", "web"),
        ("WEBSITE", "web"),
        ("WEB", "web"),  # the code names its channel too
        ("PDD", "pinduoduo"),
        ("amazon", None),
    ],
)
def test_channel_aliases(name: str, key: str | None) -> None:
    assert RULES.resolve_channel(name) == key


def test_an_alias_of_two_carriers_is_refused() -> None:
    with pytest.raises(ValueError, match="'x' is an alias of both a and b"):
        IdRules(
            {},
            {
                "a": CarrierSpec(pattern="^A$", aliases=["X"]),
                "b": CarrierSpec(pattern="^B$", aliases=["x"]),
            },
        )


# ---------------------------------------------------------------- tracking numbers
@pytest.mark.parametrize(
    ("value", "expected"), [("  SF123456789012 ", "SF123456789012"), ("", None), ("  ", None)]
)
def test_clean_tracking(value: str, expected: str | None) -> None:
    assert IdRules.clean_tracking(value) == expected


@pytest.mark.parametrize(
    ("tracking", "carrier", "valid"),
    [
        ("SF123456789012", "sf", True),
        ("SF12345678901", "sf", False),
        ("sf123456789012", "sf", False),  # case-sensitive like the carrier's system
        ("751234567890123", "zto", True),
        ("751234567890", "zto", True),
        ("7512345678901234", "zto", False),
        ("YT8841234567", "yto", True),
        ("YT884123456", "yto", False),
        ("JT0001234567890", "jt", True),
        ("JT000123456789", "jt", False),
        ("1234567890", "dhl", True),
        ("123456789", "dhl", False),
        ("1Z999AA10123456784", "ups", True),
        ("1Z999AA1012345678", "ups", False),
        ("SF123456789012\n", "sf", False),  # a trailing newline is not accepted by `$`
    ],
)
def test_tracking_patterns(tracking: str, carrier: str, valid: bool) -> None:
    assert RULES.check_tracking(tracking, carrier) == (carrier, valid)


def test_a_stated_carrier_is_kept_even_when_its_pattern_fails() -> None:
    # the WMS says SF; the number looks like YTO's: it stays SF's, flagged invalid
    assert RULES.check_tracking("YT8841234567", "sf") == ("sf", False)


@pytest.mark.parametrize(
    ("tracking", "carrier"),
    [
        ("SF123456789012", "sf"),
        ("751234567890123", "zto"),
        ("YT8841234567", "yto"),
        ("JT0001234567890", "jt"),
        ("1234567890", "dhl"),
        ("1Z999AA10123456784", "ups"),
    ],
)
def test_carrier_inferred_from_the_only_matching_pattern(tracking: str, carrier: str) -> None:
    assert RULES.check_tracking(tracking, None) == (carrier, True)
    assert RULES.infer_carrier(tracking) == carrier


def test_no_inference_when_nothing_or_several_match() -> None:
    assert RULES.check_tracking("XX000", None) == (None, False)
    rules = IdRules(
        {},
        {"a": CarrierSpec(pattern="^[0-9]{10}$"), "b": CarrierSpec(pattern="^1[0-9]{9}$")},
    )
    assert rules.check_tracking("1234567890", None) == (None, False)  # a and b both match
    assert rules.check_tracking("2234567890", None) == ("a", True)
