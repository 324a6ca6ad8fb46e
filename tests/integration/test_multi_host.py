"""A 2-process cluster as two hosts: network namespaces, each with its own recovery share.

Two network namespaces joined by a veth pair (10.231.0.1 and 10.231.0.2) stand for two
machines: each `orderguard run -i K -a '10.231.0.1:P;10.231.0.2:P'` runs in its own
namespace, so the cluster traffic really crosses an interface and a process cannot
reach the other's loopback. The broker (Tansu, on the root side) listens on all
addresses and advertises 10.231.9.1, an address on the root namespace's loopback that
each namespace routes to over a veth of its own. Each process gets only its share of
the recovery store, as docs/scale-out.md "Several machines" prescribes: initialized
once, the `part-*.sqlite3` files split between the two directories, the layout file
copied to both.

The scenario: a 1-process run to the end of a recording (the reference), then the
2-host cluster over the same input, one host's process `kill -9`ed mid-run; the other
cannot go on without its peer and fails. A share cannot drop the snapshots of epochs
the cluster never completed (connectors/recovery_store.py), so both hosts refuse to
restart; the documented procedure (gather the files, `python -m
connectors.recovery_store`, move them back) clears them, both restart from their own
shares and read to the end. The outputs must be the reference's, record for record (by
id). A cluster that ended by itself then restarts without the procedure.

Needs root (`ip netns add`); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.broker import EmbeddedBroker, free_port
from dataflows.live import LAYOUT_FILE, prepare_recovery
from tests.helpers import settings_of
from tests.integration.test_crash_restart import (
    ROOT,
    Tail,
    assert_same_records,
    by_id,
    compare,
    create_topics,
    ended,
    output_topic,
    pipeline_env,
    produce_day,
    read_outputs,
)
from tests.integration.test_run_live import ok, orderguard

BROKER_IP = "10.231.9.1"
HOST_IPS = ("10.231.0.1", "10.231.0.2")
CLUSTER_PORT = 2101  # each namespace has its own ports
PARTITIONS = 2  # 6 input partitions over 2 workers: even (#556)
RECOVERY_PARTITIONS = 8


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[str, str]]:
    """Two namespaces: a veth between them, and one from each to the root namespace."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns add)")
    tag = uuid.uuid4().hex[:4]
    names = (f"og-mh-a-{tag}", f"og-mh-b-{tag}")
    created: list[str] = []
    try:
        for ns in names:
            try:
                _ip("netns", "add", ns)
            except (OSError, subprocess.CalledProcessError) as e:
                detail = getattr(e, "stderr", "") or str(e)
                pytest.skip(f"cannot create a network namespace (ip netns add): {detail.strip()}")
            created.append(ns)
        a, b = names
        _ip("link", "add", f"oga{tag}", "type", "veth", "peer", "name", f"ogb{tag}")
        _ip("link", "set", f"oga{tag}", "netns", a)
        _ip("link", "set", f"ogb{tag}", "netns", b)
        with contextlib.suppress(subprocess.CalledProcessError):  # left by a killed test
            _ip("addr", "add", f"{BROKER_IP}/32", "dev", "lo")
        for i, (ns, ip, peer) in enumerate(
            zip(names, HOST_IPS, (f"oga{tag}", f"ogb{tag}"), strict=True)
        ):
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", peer)
            _ip("-n", ns, "link", "set", peer, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            root_if, ns_if = f"ogr{i}{tag}", f"ogn{i}{tag}"
            _ip("link", "add", root_if, "type", "veth", "peer", "name", ns_if)
            _ip("link", "set", ns_if, "netns", ns)
            _ip("addr", "add", f"10.231.{i + 1}.254/24", "dev", root_if)
            _ip("link", "set", root_if, "up")
            _ip("-n", ns, "addr", "add", f"10.231.{i + 1}.{i + 1}/24", "dev", ns_if)
            _ip("-n", ns, "link", "set", ns_if, "up")
            _ip("-n", ns, "route", "add", f"{BROKER_IP}/32", "via", f"10.231.{i + 1}.254")
        yield names
    finally:
        for ns in created:  # deleting a namespace deletes its veths, and their peers
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(
            ["ip", "addr", "del", f"{BROKER_IP}/32", "dev", "lo"], capture_output=True, timeout=30
        )


class ReachableBroker(EmbeddedBroker):
    """Tansu on every address, advertised at BROKER_IP (which both namespaces reach)."""

    def __init__(self) -> None:
        super().__init__(port=free_port())
        self.bootstrap = f"{BROKER_IP}:{self.port}"

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--listener-url") + 1] = f"tcp://0.0.0.0:{self.port}"
        return cmd


@pytest.fixture(scope="module")
def broker(hosts) -> Iterator[EmbeddedBroker]:
    with ReachableBroker() as b:
        yield b


def env_for(bootstrap: str, rdir: Path, inputs: dict[str, str] | None = None) -> dict[str, str]:
    env = pipeline_env(bootstrap, rdir, inputs)
    env["ORDERGUARD__KAFKA__PARTITIONS"] = str(PARTITIONS)
    env["ORDERGUARD__RECOVERY__PARTITIONS"] = str(RECOVERY_PARTITIONS)
    return env


def split_store(init: Path, shares: tuple[Path, Path]) -> None:
    """docs/scale-out.md: each partition file in exactly one share, the layout in both."""
    for d in shares:
        d.mkdir(parents=True)
        shutil.copy(init / LAYOUT_FILE, d / LAYOUT_FILE)
    parts = sorted(init.glob("part-*.sqlite3"))
    assert len(parts) == RECOVERY_PARTITIONS, parts
    for i, part in enumerate(parts):
        shutil.move(part, shares[i % 2] / part.name)
    assert not list(init.glob("part-*"))


def start_host(ns: str, k: int, env: dict[str, str], rdir: Path) -> subprocess.Popen[str]:
    addresses = ";".join(f"{ip}:{CLUSTER_PORT}" for ip in HOST_IPS)
    host_env = {**env, "ORDERGUARD__RECOVERY__DIR": str(rdir)}
    return subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-m",
            "dataflows.cli",
            "run",
            "-i",
            str(k),
            "-a",
            addresses,
            "--exit-when-caught-up",
        ],
        env=host_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[str], grace: float = 60) -> str:
    """How a host's process ended; SIGKILLed if it does not end within `grace` s."""
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
    return ended(proc)


def test_two_hosts_with_split_stores_survive_a_kill_9(hosts, broker, tmp_path):
    bootstrap = broker.bootstrap
    reference_env = env_for(bootstrap, tmp_path / "reference")
    assert produce_day(reference_env) > 0
    ok(orderguard(reference_env, "run", "--exit-when-caught-up"))
    reference, _, _ = by_id(read_outputs(bootstrap, reference_env))
    assert all(reference[o] for o in ("corrected", "alerts", "dead_letters")), {
        o: len(v) for o, v in reference.items()
    }

    # The store, initialized once and split between the two hosts.
    env = env_for(bootstrap, tmp_path / "init", inputs=reference_env)
    assert prepare_recovery(settings_of(env))
    shares = (tmp_path / "host-a", tmp_path / "host-b")
    split_store(tmp_path / "init", shares)

    create_topics(env)  # the output topics, so the tail follows them from the start
    tail = Tail(bootstrap, output_topic(env, "corrected"), partitions=PARTITIONS)
    try:
        procs = [start_host(ns, k, env, shares[k]) for k, ns in enumerate(hosts)]
        total = len(reference["corrected"])
        while tail.poll() < total // 5:  # some of the output written, not all of it
            assert all(p.poll() is None for p in procs), [
                ended(p) for p in procs if p.poll() is not None
            ]
        procs[1].send_signal(signal.SIGKILL)
        killed_after = tail.count
        first = [stop(p) for p in procs]
        assert procs[1].returncode == -signal.SIGKILL, first[1]
    finally:
        tail.close()
    assert killed_after < total, f"the kill came after the whole output ({killed_after})"

    # A share cannot tell which of its snapshots are of epochs the cluster never
    # completed (that takes every partition's progress): both hosts refuse to restart.
    procs = [start_host(ns, k, env, shares[k]) for k, ns in enumerate(hosts)]
    refused = [stop(p) for p in procs]
    for p, out in zip(procs, refused, strict=True):
        assert p.returncode not in (0, -signal.SIGKILL), out
        assert "did not end by itself" in out and "python -m connectors.recovery_store" in out, out

    # The documented procedure: gather the files, drop the stale snapshots, move back.
    gathered = tmp_path / "gathered"
    gathered.mkdir()
    home = {part.name: d for d in shares for part in d.glob("part-*.sqlite3")}
    for name, d in home.items():
        shutil.move(d / name, gathered / name)
    dropped = subprocess.run(
        [sys.executable, "-m", "connectors.recovery_store", str(gathered)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert dropped.returncode == 0 and "8 partition files were marked" in dropped.stdout, dropped
    for name, d in home.items():
        shutil.move(gathered / name, d / name)

    # Both hosts restart, each from its own share, and read to the end.
    procs = [start_host(ns, k, env, shares[k]) for k, ns in enumerate(hosts)]
    second = [stop(p, grace=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), second
    assert "recovery resumed from" in second[0] + second[1], second

    got, conflicts, _ = by_id(read_outputs(bootstrap, env))
    assert not conflicts, conflicts[:3]
    summary = compare(f"killed after {killed_after} corrections", got, reference)
    print(summary)
    assert_same_records(got, reference)

    # A cluster that ended by itself restarts from its shares as they are.
    procs = [start_host(ns, k, env, shares[k]) for k, ns in enumerate(hosts)]
    third = [stop(p) for p in procs]
    assert all(p.returncode == 0 for p in procs), third
    assert all("caught up: 0 records delivered" in out for out in third), third
