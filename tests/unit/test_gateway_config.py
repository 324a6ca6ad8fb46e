"""The `gateway:` section: every provider has an endpoint, and secrets live only in the environment.

A secret in the YAML would be committed, copied and shown in reviews, so the loader refuses
it; a secret from the environment must not leak through any printed form of the settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.config import (
    DEFAULT_CONFIG,
    ENVELOPE_RESERVE,
    ConfigError,
    Gateway,
    Settings,
    load_settings,
)
from tests.helpers import ROOT, settings_of

SECRET = "whsec_Zq9!-gateway-never-print-me"
SHIPPED = settings_of({})  # the file alone, whatever the environment says


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ORDERGUARD__"):
            monkeypatch.delenv(key)


def config_file(
    tmp_path: Path,
    gateway: dict[str, Any],
    kafka: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
) -> Path:
    """The shipped configuration with another `gateway:` section (sources stay shared)
    and `kafka` and `limits` keys replaced."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    data["sources"] = str(DEFAULT_CONFIG.parent / data["sources"])
    data["gateway"] = gateway
    data["kafka"] = {**data["kafka"], **(kafka or {})}
    data["limits"] = {**data.get("limits", {}), **(limits or {})}
    path = tmp_path / "orderguard.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def refusal(path: Path | None = None) -> str:
    """The error `load_settings` raises for this file (None: the shipped one)."""
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return str(info.value)


def shipped_gateway() -> dict[str, Any]:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    gateway = data["gateway"]
    assert isinstance(gateway, dict)
    return gateway


# ---------------------------------------------------------------- coverage of the registry
@pytest.mark.parametrize("stream", ["payments", "tracking"])
def test_every_payments_and_tracking_source_has_a_webhook_endpoint(stream: str) -> None:
    """Providers push these streams; a registry source without an endpoint could not be fed."""
    registry = {name for name, spec in SHIPPED.sources.items() if spec.stream == stream}
    assert registry, stream
    missing = sorted(registry - set(SHIPPED.gateway.sources))
    assert not missing, f"ops/sources.yaml {stream} sources without a gateway source: {missing}"


def test_gateway_sources_are_registry_sources_of_pushed_streams() -> None:
    """Payments and tracking are pushed; of the channels, Shopify and Shopee push orders."""
    for name in SHIPPED.gateway.sources:
        pushed = SHIPPED.sources[name].stream in ("payments", "tracking")
        assert pushed or name in ("shopify", "shopee"), name
    assert SHIPPED.sources["shopify"].stream == SHIPPED.sources["shopee"].stream == "orders"


def test_the_shipped_file_carries_no_secret() -> None:
    for name, hook in SHIPPED.gateway.sources.items():
        assert hook.secret is None, name
    assert "secret:" not in DEFAULT_CONFIG.read_text(encoding="utf-8").split("gateway:", 1)[1]


def test_shipped_signature_settings() -> None:
    sources = SHIPPED.gateway.sources
    assert sources["stripe"].auth.scheme == "timestamped"
    assert sources["stripe"].auth.tolerance == 300_000
    assert sources["stripe"].delivery_id.body == "id"
    assert sources["wechatpay"].delivery_id.body == "id"
    assert sources["aftership"].auth.encoding == "base64"
    assert sources["aftership"].delivery_id.body is None
    schemes = {name: hook.auth.scheme for name, hook in sources.items()}
    assert schemes == {
        "stripe": "timestamped",
        "paypal": "paypal",
        "wechatpay": "wechatpay_v3",
        "alipay": "alipay_rsa2",
        "shopify": "hmac",
        "shopee": "hmac_url_body",
        "aftership": "hmac",
        "sf": "digest_md5",
        "zto": "hmac",
        "yto": "hmac",
        "jt": "digest_md5",
        "dhl": "static_key",
        "carrier_api": "hmac",
    }
    assert sources["paypal"].delivery_id.header == "PAYPAL-TRANSMISSION-ID"
    assert sources["alipay"].delivery_id.body == "notify_id" and sources["alipay"].body == "form"
    assert sources["shopify"].delivery_id == sources["shopee"].delivery_id  # body hashes
    assert sources["shopify"].delivery_id.body is sources["shopify"].delivery_id.header is None


# ---------------------------------------------------------------- secrets
@pytest.mark.parametrize("source", ["stripe", "dhl"])
def test_a_secret_in_the_file_is_refused_naming_file_key_and_variable(
    tmp_path: Path, source: str
) -> None:
    gateway = shipped_gateway()
    gateway["sources"][source]["secret"] = SECRET
    path = config_file(tmp_path, gateway)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert str(path) in text
    assert f"gateway.sources.{source}.secret" in text
    assert f"ORDERGUARD__GATEWAY__SOURCES__{source.upper()}__SECRET" in text
    assert SECRET not in text and SECRET not in repr(info.value)


@pytest.mark.parametrize(
    "where",
    [
        lambda s: s["stripe"].__setitem__("Secret", SECRET),
        lambda s: s["stripe"]["auth"].__setitem__("secret", SECRET),
        lambda s: s["stripe"].__setitem__("secret", {"value": SECRET}),
        lambda s: s["stripe"].__setitem__("secret", None),
    ],
    ids=["capitalized", "nested", "mapping", "null"],
)
def test_secret_like_keys_in_the_file_are_refused_without_the_value(tmp_path: Path, where) -> None:
    gateway = shipped_gateway()
    where(gateway["sources"])
    text = refusal(config_file(tmp_path, gateway))
    assert "gateway.sources.stripe" in text
    assert SECRET not in text


def test_the_environment_secret_loads_and_is_never_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERGUARD__GATEWAY__SOURCES__STRIPE__SECRET", SECRET)
    s = load_settings()
    hook = s.gateway.sources["stripe"]
    assert hook.secret is not None and hook.secret.get_secret_value() == SECRET
    assert hook.auth.header == "Stripe-Signature"  # the file's keys of that source stay
    assert s.gateway.sources["paypal"].secret is None
    for text in (
        str(s),
        repr(s),
        str(s.gateway),
        repr(s.gateway),
        repr(hook),
        str(hook.secret),
        s.model_dump_json(),
        str(s.model_dump()),
    ):
        assert SECRET not in text


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_environment_secret_is_no_secret(monkeypatch: pytest.MonkeyPatch, blank) -> None:
    monkeypatch.setenv("ORDERGUARD__GATEWAY__SOURCES__STRIPE__SECRET", blank)
    assert load_settings().gateway.sources["stripe"].secret is None


def test_an_environment_secret_with_another_error_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERGUARD__GATEWAY__SOURCES__STRIPE__SECRET", SECRET)
    monkeypatch.setenv("ORDERGUARD__GATEWAY__PORT", "eighty")
    text = refusal()
    assert "gateway.port" in text
    assert SECRET not in text


def test_an_environment_secret_for_an_unknown_source_is_refused_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERGUARD__GATEWAY__SOURCES__NOPE__SECRET", SECRET)
    text = refusal()
    assert "gateway.sources.nope" in text
    assert SECRET not in text


def test_cli_output_never_shows_the_secret() -> None:
    """`config check` and `gateway --openapi` as an operator runs them, secrets set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGUARD__")}
    for name in SHIPPED.gateway.sources:
        env[f"ORDERGUARD__GATEWAY__SOURCES__{name.upper()}__SECRET"] = f"{SECRET}-{name}"
    env["ORDERGUARD__GATEWAY__SOURCES__WECHATPAY__SECRET"] = SECRET[:32]  # the APIv3 key
    for args in (["config", "check"], ["gateway", "--openapi"]):
        proc = subprocess.run(
            [sys.executable, "-m", "dataflows.cli", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip()
        assert SECRET[:32] not in proc.stdout + proc.stderr


# ---------------------------------------------------------------- validation
def test_an_unknown_gateway_source_in_the_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    gateway = shipped_gateway()
    gateway["sources"]["fedex"] = {"auth": {"scheme": "hmac", "header": "X-Fedex-Signature"}}
    path = config_file(tmp_path, gateway)
    text = refusal(path)
    assert "gateway.sources.fedex" in text and "not a source of the registry" in text
    assert str(path) in text


@pytest.mark.parametrize(
    "header", ["X Sig", "X-Sig:", "", "Stripé-Signature", "X-Sig\n", "a" * 129, "X(Sig)"]
)
def test_bad_header_names_are_refused_naming_the_key(tmp_path: Path, header: str) -> None:
    gateway = shipped_gateway()
    gateway["sources"]["sf"]["auth"]["header"] = header
    text = refusal(config_file(tmp_path, gateway))
    assert "gateway.sources.sf.auth.header" in text


def test_a_delivery_id_header_is_refused_no_signature_covers_it(tmp_path: Path) -> None:
    gateway = shipped_gateway()
    gateway["sources"]["wechatpay"]["delivery_id"] = {"header": "X-Delivery-Id"}
    text = refusal(config_file(tmp_path, gateway))
    assert "gateway.sources.wechatpay: delivery_id.header" in text
    assert "no signature covers a header" in text


def test_the_shipped_max_body_fits_kafkas_limit_with_its_envelope() -> None:
    assert SHIPPED.gateway.max_body + ENVELOPE_RESERVE <= SHIPPED.kafka.message_max_bytes()
    assert Gateway().max_body == SHIPPED.gateway.max_body


@pytest.mark.parametrize(
    ("max_body", "client"),
    [(1_048_576, {}), (990_000, {}), (60_000, {"message.max.bytes": "70000"})],
)
def test_a_max_body_kafka_could_refuse_is_a_config_error_naming_both_keys(
    tmp_path: Path, max_body: int, client: dict[str, str]
) -> None:
    gateway = {**shipped_gateway(), "max_body": max_body}
    # the pipeline's own records made small enough for the smaller message.max.bytes
    limits = {"output_record": 40_000}
    text = refusal(config_file(tmp_path, gateway, kafka={"client": client}, limits=limits))
    assert "gateway.max_body" in text and "message.max.bytes" in text


def test_a_max_body_the_pipeline_would_dead_letter_is_a_config_error_naming_both_keys(
    tmp_path: Path,
) -> None:
    gateway = {**shipped_gateway(), "max_body": 600_000}
    text = refusal(config_file(tmp_path, gateway))
    assert "gateway.max_body" in text and "limits.input_record" in text
    assert SHIPPED.gateway.max_body + ENVELOPE_RESERVE <= SHIPPED.limits.input_record


def test_the_connection_bounds_have_defaults_and_refuse_nonsense(tmp_path: Path) -> None:
    gw = SHIPPED.gateway
    assert (gw.idle_timeout, gw.body_timeout, gw.max_connections) == (30_000, 30_000, 1024)
    for key, value in (("idle_timeout", "0s"), ("body_timeout", "10ms"), ("max_connections", 0)):
        text = refusal(config_file(tmp_path, {**shipped_gateway(), key: value}))
        assert f"gateway.{key}" in text


@pytest.mark.parametrize("tolerance", ["999ms", "0s", "0.5s", "0"])
def test_a_tolerance_under_one_second_is_refused(tmp_path: Path, tolerance: str) -> None:
    gateway = shipped_gateway()
    gateway["sources"]["stripe"]["auth"]["tolerance"] = tolerance
    text = refusal(config_file(tmp_path, gateway))
    assert "gateway.sources.stripe.auth.tolerance" in text


def test_a_one_second_tolerance_is_allowed(tmp_path: Path) -> None:
    gateway = shipped_gateway()
    gateway["sources"]["stripe"]["auth"]["tolerance"] = "1s"
    s = load_settings(config_file(tmp_path, gateway))
    assert s.gateway.sources["stripe"].auth.tolerance == 1000


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda g: g["sources"]["sf"]["auth"].__setitem__("scheme", "rsa"), "auth.scheme"),
        (lambda g: g["sources"]["sf"]["auth"].__setitem__("encoding", "hexx"), "auth.encoding"),
        (lambda g: g["sources"]["sf"].__delitem__("auth"), "gateway.sources.sf.auth"),
        (lambda g: g.__setitem__("max_body", 0), "gateway.max_body"),
        (lambda g: g.__setitem__("rate_limit", {"rate": 0, "burst": 1}), "rate_limit.rate"),
        (lambda g: g.__setitem__("produce_timeout", "10ms"), "gateway.produce_timeout"),
        (lambda g: g["sources"]["sf"].__setitem__("retry_horizon", "0s"), "retry_horizon"),
    ],
)
def test_other_gateway_mistakes_name_their_key(tmp_path: Path, change, key: str) -> None:
    gateway = shipped_gateway()
    change(gateway)
    text = refusal(config_file(tmp_path, gateway))
    assert key in text


def test_the_defaults_match_the_shipped_gateway_section() -> None:
    defaults = Settings().gateway
    shipped = SHIPPED.gateway
    for field in ("host", "port", "metrics_port", "max_body", "produce_timeout"):
        assert getattr(shipped, field) == getattr(defaults, field), field
    assert shipped.idempotency_timeout == defaults.idempotency_timeout == 250
    assert shipped.rate_limit == defaults.rate_limit
