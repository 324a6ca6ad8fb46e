"""The `kafka:` and `recovery:` sections: defaults, overrides, errors naming keys, secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from schemas.config import DEFAULT_CONFIG, ConfigError, Settings, load_settings

SECRET = "hunter2-Zq9!-never-print-me"


def config_file(tmp_path: Path, **sections: object) -> Path:
    """The shipped configuration with some sections replaced (sources stay shared)."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    data["sources"] = str(DEFAULT_CONFIG.parent / data["sources"])
    data.update(sections)
    path = tmp_path / "orderguard.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("ORDERGUARD__"):
            monkeypatch.delenv(key)


def test_defaults_match_the_shipped_file():
    shipped = load_settings()
    assert shipped.kafka == Settings().kafka
    assert shipped.recovery == Settings().recovery
    k, r = shipped.kafka, shipped.recovery
    assert k.bootstrap_servers == "127.0.0.1:9092"
    assert k.input_topics.model_dump() == {
        "orders": "orders",
        "payments": "payments",
        "tracking": "tracking",
    }
    assert k.output_topics.corrected == "orderguard.corrected"
    assert k.output_topics.dead_letters == "orderguard.dead_letters"
    assert (k.partitions, k.flush_timeout, k.client, k.sasl_password) == (6, 30_000, {}, None)
    assert (r.dir, r.partitions, r.snapshot_interval, r.backup_interval) == (
        Path("recovery"),
        8,
        10_000,
        0,
    )
    partitions = k.topic_partitions()
    assert len(partitions) == 8 and partitions.pop("orderguard.control") == 1
    assert set(partitions.values()) == {6}


def test_environment_overrides_nested_keys(monkeypatch, tmp_path):
    monkeypatch.setenv("ORDERGUARD__KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("ORDERGUARD__KAFKA__INPUT_TOPICS__ORDERS", "shop.orders.v2")
    monkeypatch.setenv("ORDERGUARD__KAFKA__CLIENT", '{"security.protocol": "SASL_SSL"}')
    monkeypatch.setenv("ORDERGUARD__RECOVERY__DIR", str(tmp_path / "rec"))
    monkeypatch.setenv("ORDERGUARD__RECOVERY__SNAPSHOT_INTERVAL", "2m")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "kafka-1:9093,kafka-2:9093"
    assert s.kafka.input_topics.orders == "shop.orders.v2"
    assert s.kafka.input_topics.payments == "payments"  # the rest of the section stays
    assert s.kafka.client == {"security.protocol": "SASL_SSL"}
    assert s.recovery.dir == tmp_path / "rec"
    assert s.recovery.snapshot_interval == 120_000


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"kafka": {"partitions": 0}}, "kafka.partitions"),
        ({"kafka": {"flush_timeout": "soon"}}, "kafka.flush_timeout"),
        ({"kafka": {"input_topics": {"orders": "has space"}}}, "kafka.input_topics.orders"),
        ({"kafka": {"output_topics": {"corected": "x"}}}, "kafka.output_topics.corected"),
        ({"kafka": {"client": {"linger.ms": [5]}}}, "kafka.client.linger.ms"),
        ({"kafka": {"bootstrap_servers": ""}}, "kafka.bootstrap_servers"),
        ({"recovery": {"partitions": 0}}, "recovery.partitions"),
        ({"recovery": {"snapshot_interval": "0s"}}, "recovery.snapshot_interval"),
        ({"recovery": {"backup_interval": "-5s"}}, "recovery.backup_interval"),
        ({"recovery": {"dirr": "x"}}, "recovery.dirr"),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path, sections, key):
    path = config_file(tmp_path, **sections)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert f"{path}: {key}" in str(info.value)


def test_one_topic_for_two_purposes_is_refused(tmp_path):
    path = config_file(tmp_path, kafka={"output_topics": {"alerts": "orders"}})
    with pytest.raises(ConfigError, match="topic 'orders' is used for more than one"):
        load_settings(path)


def test_env_error_names_the_variable(monkeypatch):
    monkeypatch.setenv("ORDERGUARD__RECOVERY__PARTITIONS", "many")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "recovery.partitions" in str(info.value)
    assert "ORDERGUARD__RECOVERY__PARTITIONS" in str(info.value)


def test_secret_is_merged_into_client_config_only():
    s = Settings(kafka={"client": {"sasl.mechanism": "PLAIN"}, "sasl_password": SECRET})
    assert s.kafka.client_config() == {"sasl.mechanism": "PLAIN", "sasl.password": SECRET}
    assert "sasl.password" not in s.kafka.client  # the passthrough itself never holds it
    for text in (str(s), repr(s), str(s.kafka), repr(s.kafka), s.model_dump_json()):
        assert SECRET not in text


def test_secret_never_in_errors(monkeypatch, tmp_path):
    # The password set by the environment, some other key wrong: the error lists
    # nothing of the secret.
    monkeypatch.setenv("ORDERGUARD__KAFKA__SASL_PASSWORD", SECRET)
    path = config_file(tmp_path, kafka={"partitions": -1})
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "kafka.partitions" in str(info.value) and SECRET not in str(info.value)
    # The password where it does not belong (in the passthrough), or of the wrong type:
    # the key is named, the value is not.
    for kafka in ({"client": {"sasl.password": SECRET}}, {"sasl_password": {"x": SECRET}}):
        monkeypatch.delenv("ORDERGUARD__KAFKA__SASL_PASSWORD")
        path = config_file(tmp_path, kafka=kafka)
        with pytest.raises(ConfigError) as info:
            load_settings(path)
        assert "kafka." in str(info.value)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)
        monkeypatch.setenv("ORDERGUARD__KAFKA__SASL_PASSWORD", SECRET)


def test_config_check_and_errors_from_the_cli_do_not_print_the_secret(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGUARD__")}
    env["ORDERGUARD__KAFKA__SASL_PASSWORD"] = SECRET
    good = subprocess.run(
        [sys.executable, "-m", "dataflows.cli", "config", "check"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    env["ORDERGUARD__KAFKA__PARTITIONS"] = "zero"
    bad = subprocess.run(
        [sys.executable, "-m", "dataflows.cli", "run"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "kafka.partitions" in bad.stderr
    for proc in (good, bad):
        assert SECRET not in proc.stdout + proc.stderr
