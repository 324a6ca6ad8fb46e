"""docker/ checked statically (no Docker engine runs here): the compose stack and the
image agree with the code's configuration, its CLI and the ops files they mount."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import SecretStr

from dataflows.cli import main as cli
from schemas.config import SECRET_SCHEMES, Settings
from tests.helpers import settings_of

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PIPELINE = "orderguard"  # the compose service running `orderguard run`
GATEWAY = "gateway"  # the compose service running `orderguard gateway`
SERVICES = {"kafka", "redis", PIPELINE, GATEWAY, "prometheus", "alertmanager", "grafana"}
HOST_VAR = re.compile(r"\$\{(\w+):\?[^}]+\}")  # ${NAME:?message}: required from the host


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def mounts(name: str) -> dict[str, str]:
    """Container path -> host path (resolved) or named volume, of a service's volumes."""
    out: dict[str, str] = {}
    for v in service(name).get("volumes", []):
        source, target = v.split(":")[:2]
        if source.startswith((".", "/")):
            source = str((COMPOSE_FILE.parent / source).resolve())
        out[target] = source
    return out


def host_path_at(name: str, container_path: str) -> Path | None:
    """The host file a container path of a service is, through its bind mounts."""
    path = PurePosixPath(container_path)
    for target, source in mounts(name).items():
        if path == PurePosixPath(target) or PurePosixPath(target) in path.parents:
            if not source.startswith("/"):
                return None  # a named volume
            return Path(source) / path.relative_to(target)
    return None


def flag(args: list[str], name: str) -> str:
    """The value of `--name=value` or `--name value` in an argument list."""
    for i, a in enumerate(args):
        if a.startswith(f"{name}="):
            return a.split("=", 1)[1]
        if a == name:
            return args[i + 1]
    raise AssertionError(f"no {name} in {args}")


def orderguard_services() -> dict[str, dict[str, Any]]:
    """The services that run the orderguard image (the pipeline, the simulator)."""
    image = service(PIPELINE)["image"]
    return {
        n: s for n, s in compose()["services"].items() if n == PIPELINE or s.get("image") == image
    }


def setting(settings: Settings, dotted: str) -> object:
    value: object = settings
    for part in dotted.split("."):
        if isinstance(value, dict):  # gateway.sources.<source>
            assert part in value, f"{dotted} is not a Settings key"
            value = value[part]
            continue
        assert hasattr(value, part), f"{dotted} is not a Settings key"
        value = getattr(value, part)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


# ---------------------------------------------------------------- compose structure
def test_compose_is_yaml_with_every_service_built_or_pulled():
    services = compose()["services"]
    assert set(services) >= SERVICES
    for name, s in services.items():
        assert "image" in s or "build" in s, name
    declared = set(compose().get("volumes") or {})
    for name in services:
        for target, source in mounts(name).items():
            assert target.startswith("/"), (name, target)
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: mounted {source} does not exist"
                assert Path(source).is_relative_to(ROOT), f"{name}: {source} outside the repo"
            else:
                assert source in declared, f"{name}: volume {source} not declared"


def test_healthy_dependencies_have_healthchecks():
    services = compose()["services"]
    for name in SERVICES:
        assert "healthcheck" in services[name], f"{name}: no healthcheck"
    for name, s in services.items():
        for dep, cond in (s.get("depends_on") or {}).items():
            assert dep in services, (name, dep)
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
    for name in (PIPELINE, GATEWAY):
        deps = service(name)["depends_on"]
        assert {d for d, c in deps.items() if c["condition"] == "service_healthy"} >= {
            "kafka",
            "redis",
        }, name


# ---------------------------------------------------------------- the image
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def dockerignored(path: str) -> bool:
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(pre, pat) for pat in patterns for pre in prefixes)


def test_build_context_and_dockerfile_exist():
    build = service(PIPELINE)["build"]
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_image_is_python_311_slim_non_root_with_the_orderguard_entrypoint():
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [a for i, a in steps if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("ENTRYPOINT", '["orderguard"]') in steps
    exposed = {p for i, a in steps if i == "EXPOSE" for p in a.split()}
    assert exposed >= {"9464", "9465"}  # orderguard run --processes 2
    gw = settings_of({}).gateway  # the file's, not the test environment's
    assert exposed >= {str(gw.port), str(gw.metrics_port), str(gw.metrics_port + 1)}


def test_image_copies_every_package_and_the_configuration():
    copies = [shlex.split(a) for i, a in dockerfile() if i == "COPY"]
    sources = [s.rstrip("/") for c in copies for s in c[:-1] if not s.startswith("--")]
    for s in sources:
        assert (ROOT / s).exists(), f"COPY {s}: not in the build context"
        assert not dockerignored(s), f"COPY {s}: excluded by .dockerignore"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(pyproject["tool"]["setuptools"]["packages"]) <= set(sources)
    assert "pyproject.toml" in sources
    config = yaml.safe_load((ROOT / "ops" / "orderguard.yaml").read_text())
    assert {"ops/orderguard.yaml", f"ops/{config['sources']}"} <= set(sources)
    # the pipeline's --config is where the image put orderguard.yaml, with its sources beside it
    (config_copy,) = [c for c in copies if "ops/orderguard.yaml" in c]
    for name, s in orderguard_services().items():
        path = flag(s["command"], "--config")
        assert PurePosixPath(path).parent == PurePosixPath(config_copy[-1]), name
        assert PurePosixPath(path).name == "orderguard.yaml"


# ---------------------------------------------------------------- the pipeline service
def compose_env(name: str) -> dict[str, str]:
    """A service's environment, each `${NAME:?...}` the host must set given a stand-in
    (32 characters, the length WeChat Pay's APIv3 key must have)."""
    env = {k: str(v) for k, v in service(name)["environment"].items()}
    return {
        k: HOST_VAR.sub(lambda m: hashlib.sha256(m[1].encode()).hexdigest()[:32], v)
        for k, v in env.items()
    }


def test_orderguard_env_vars_are_settings_keys_with_those_values():
    for name in orderguard_services():
        env = compose_env(name)
        ours = {k: v for k, v in env.items() if k.startswith("ORDERGUARD__")}
        assert "ORDERGUARD__REDIS__URL" in ours and "ORDERGUARD__KAFKA__BOOTSTRAP_SERVERS" in ours
        settings = settings_of(ours)
        for key, value in ours.items():
            dotted = key.removeprefix("ORDERGUARD__").lower().replace("__", ".")
            assert str(setting(settings, dotted)) == value, key


def test_commands_are_valid_orderguard_cli_invocations():
    for name, s in orderguard_services().items():
        args = list(s["command"])
        ctx = cli.make_context("orderguard", list(args), resilient_parsing=False)
        cmd_name, cmd, rest = cli.resolve_command(ctx, args)
        assert cmd is not None, name
        cmd.make_context(cmd_name, rest, parent=ctx)  # raises on an unknown option or value
    assert service(PIPELINE)["command"][0] == "run"
    assert service(GATEWAY)["command"][0] == "gateway"


def pipeline_processes() -> int:
    return int(flag(service(PIPELINE)["command"], "--processes"))


def test_scrape_targets_are_the_pipeline_processes_metrics_ports():
    settings = settings_of(compose_env(PIPELINE))
    assert settings.metrics.host == "0.0.0.0"  # reachable from the Prometheus container
    ports = {settings.metrics.port + k for k in range(pipeline_processes())}
    assert ports == {9464, 9465}
    prom = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "orderguard"]
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{PIPELINE}:{p}" for p in ports}
    assert {int(p) for p in service(PIPELINE)["expose"]} == ports


def test_recovery_dir_is_on_a_named_volume():
    settings = settings_of(compose_env(PIPELINE))
    rdir = PurePosixPath(str(settings.recovery.dir))
    vols = mounts(PIPELINE)
    holding = [t for t in vols if PurePosixPath(t) == rdir or PurePosixPath(t) in rdir.parents]
    assert holding and not vols[holding[0]].startswith("/"), vols


def test_kafka_advertises_the_bootstrap_server_the_pipeline_is_given():
    settings = settings_of(compose_env(PIPELINE))
    env = {k: str(v) for k, v in service("kafka")["environment"].items()}
    advertised = dict(
        reversed(item.split("://", 1)) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    listener = advertised[settings.kafka.bootstrap_servers]  # e.g. PLAINTEXT
    host, port = settings.kafka.bootstrap_servers.rsplit(":", 1)
    assert host in ("kafka", service("kafka").get("hostname"))
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    assert listeners[listener].endswith(f":{port}")
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == listener
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].endswith(
        f"@{host}:{listeners[controller].rsplit(':', 1)[1]}"
    )


def test_redis_url_names_the_redis_service():
    settings = settings_of(compose_env(PIPELINE))
    assert settings.redis.url == "redis://redis:6379/0"
    assert "redis" in compose()["services"]


# ---------------------------------------------------------------- prometheus, alertmanager, grafana
def test_prometheus_mounts_its_config_and_the_rule_files_it_names():
    args = service("prometheus")["command"]
    config_path = PurePosixPath(flag(args, "--config.file"))
    assert host_path_at("prometheus", str(config_path)) == ROOT / "ops" / "prometheus.yml"
    prom = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    assert prom["rule_files"]
    for rule_file in prom["rule_files"]:
        in_container = config_path.parent / rule_file
        host = host_path_at("prometheus", str(in_container))
        assert host == ROOT / "ops" / rule_file, f"{in_container} is not ops/{rule_file}"
        assert host.is_file()
    alertmanagers = {
        t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"]
        for t in sc["targets"]
    }  # fmt: skip
    assert alertmanagers == {"alertmanager:9093"} and "alertmanager" in compose()["services"]


def test_alertmanager_mounts_the_example_config():
    path = flag(service("alertmanager")["command"], "--config.file")
    assert host_path_at("alertmanager", path) == ROOT / "ops" / "alertmanager.yml"


def test_grafana_provisioning_and_dashboards_are_mounted_where_they_point():
    assert host_path_at("grafana", "/etc/grafana/provisioning") == ROOT / "ops/grafana/provisioning"
    provider_file = ROOT / "ops/grafana/provisioning/dashboards/orderguard.yml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    dashboards = host_path_at("grafana", provider["options"]["path"])
    assert dashboards == ROOT / "ops/grafana/dashboards"
    assert (dashboards / "orderguard.json").is_file()
    home = service("grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path_at("grafana", home) == dashboards / "orderguard.json"
    source_file = ROOT / "ops/grafana/provisioning/datasources/prometheus.yml"
    (source,) = yaml.safe_load(source_file.read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert any(p.endswith(":9090") for p in service("prometheus")["ports"])


# ---------------------------------------------------------------- the gateway service
def test_gateway_port_metrics_ports_and_scrape_targets_agree_with_its_settings():
    settings = settings_of(compose_env(GATEWAY))
    gw = settings.gateway
    assert gw.host == "0.0.0.0"  # reachable through the published port and from Prometheus
    published = {tuple(map(int, p.split(":")[-2:])) for p in service(GATEWAY)["ports"]}
    assert published == {(gw.port, gw.port)}  # host:container, as the header's URL says
    processes = int(flag(service(GATEWAY)["command"], "--processes"))
    ports = {gw.metrics_port + k for k in range(processes)}
    assert ports == {gw.metrics_port, gw.metrics_port + 1} == {9474, 9475}
    assert {int(p) for p in service(GATEWAY)["expose"]} == ports
    prom = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "orderguard-gateway"]
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{GATEWAY}:{p}" for p in ports}
    check = " ".join(service(GATEWAY)["healthcheck"]["test"])
    assert f"{gw.port}/healthz" in check and all(f"{p}/metrics" in check for p in ports)


def test_gateway_secrets_come_from_the_host_for_every_source():
    raw = {k: str(v) for k, v in service(GATEWAY)["environment"].items()}
    secrets = {k: v for k, v in raw.items() if k.endswith("__SECRET")}
    assert all(HOST_VAR.fullmatch(v) for v in secrets.values()), "a literal secret"
    settings = settings_of(compose_env(GATEWAY))
    assert settings.gateway.sources  # the configuration names its webhook sources
    keyed = {n for n, s in settings.gateway.sources.items() if s.auth.scheme in SECRET_SCHEMES}
    wanted = {f"ORDERGUARD__GATEWAY__SOURCES__{n.upper()}__SECRET" for n in keyed}
    assert set(secrets) == wanted
    assert all(settings.gateway.sources[n].secret is not None for n in keyed)
    for name, svc in compose()["services"].items():  # no service holds a literal secret
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"SECRET|PASSWORD", key):
                assert HOST_VAR.fullmatch(str(value)), f"{name}: {key} is written in the file"
