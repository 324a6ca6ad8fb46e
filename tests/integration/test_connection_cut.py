"""The connection to Kafka is cut mid-run for a few seconds: the run rides it out.

A TCP proxy (`tests/tcp_proxy.py`) stands between `orderguard run` and a Tansu broker
that advertises the proxy's address, so every connection the pipeline makes, its
consumers' and its producer's, the bootstrap and the ones metadata points to, goes
through the proxy. Halfway through a run the proxy resets every connection and
refuses new ones for `CUT_SECONDS` (well under `kafka.flush_timeout`, 30 s), then lets
them through again. The run must end normally once caught up, and its outputs must
hold what an uninterrupted run's hold: the same last status for every order, every
dead letter (and no dead letter made of the cut itself), no gap anywhere, and no id
written twice with different content, and record for record the same records (the
every step merges the input partitions in one canonical order: `state/watermark.py`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from connectors.broker import EmbeddedBroker, free_port
from tests.integration.test_crash_restart import (
    ORDERS,
    OUTPUTS,
    Records,
    assert_breaker_chains,
    assert_chains_link,
    assert_nothing_lost,
    assert_same_records,
    by_id,
    compare,
    ended,
    last_written,
    ok,
    orderguard,
    pipeline_env,
    produce_day,
    read_outputs,
    start_run,
)
from tests.tcp_proxy import TcpProxy

CUT_SECONDS = 4.0
CUT_AT = 0.3
"""Cut once this share of an uninterrupted run's traffic has gone through the proxy."""


class ProxiedBroker(EmbeddedBroker):
    """Tansu listening on its own port but advertising another (the proxy's) in metadata."""

    def __init__(self, advertised_port: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.advertised_port = advertised_port

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--advertised-listener-url") + 1] = f"tcp://127.0.0.1:{self.advertised_port}"
        return cmd


@pytest.fixture(scope="module")
def proxy() -> Iterator[TcpProxy]:
    """A broker of its own that only the proxy leads to (its clients bypass no proxy)."""
    port = free_port()
    with TcpProxy(port) as proxy, ProxiedBroker(proxy.port, port=port):
        yield proxy


def traffic(proxy: TcpProxy) -> int:
    return proxy.bytes_up + proxy.bytes_down


@dataclass
class Cut:
    reference: Records
    cut: Records
    connections: int
    """Connections the cut reset."""
    refused: int
    """Connections refused while cut."""
    out: str


@pytest.fixture(scope="module")
def cut_run(proxy, tmp_path_factory) -> Cut:
    tmp = tmp_path_factory.mktemp("cut")
    reference_env = pipeline_env(proxy.address, tmp / "reference")
    assert produce_day(reference_env) > 10 * ORDERS
    accepted = proxy.accepted
    assert accepted > 0, "the producer did not go through the proxy"

    # The reference: an uninterrupted run, through the proxy too.
    before = traffic(proxy)
    ok(orderguard(reference_env, "run", "--exit-when-caught-up"))
    run_traffic = traffic(proxy) - before
    assert proxy.accepted > accepted  # the run's clients came through the proxy

    # The same input again; the connection is cut while it runs.
    env = pipeline_env(proxy.address, tmp / "cut", inputs=reference_env)
    start = traffic(proxy)
    proc = start_run(env)
    try:
        deadline = time.monotonic() + 60
        while traffic(proxy) - start < CUT_AT * run_traffic:
            assert proc.poll() is None, f"run ended before the cut: {ended(proc)}"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        cut = proxy.cut()
        time.sleep(CUT_SECONDS)
        assert proc.poll() is None, f"the run did not survive the cut: {ended(proc)}"
        at_restore = traffic(proxy)
        proxy.restore()
        out, err = proc.communicate(timeout=90)
    finally:
        proxy.restore()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n...{err[-3000:]}"
    assert "caught up" in out and "Traceback" not in err, err[-3000:]
    assert cut > 0, "no connection was open to cut"
    assert proxy.refused > 0, "nothing tried to reconnect during the cut"
    assert traffic(proxy) - at_restore > 0.1 * run_traffic, "little was left after the cut"
    return Cut(
        read_outputs(proxy.address, reference_env),
        read_outputs(proxy.address, env),
        cut,
        proxy.refused,
        out,
    )


def test_connection_cut_mid_run_loses_nothing_and_the_run_ends_normally(cut_run):
    reference, raw = cut_run.reference, cut_run.cut
    ref, _, _ = by_id(reference)
    ours, conflicts, repeats = by_id(raw)
    summary = (
        f"cut {cut_run.connections} connections for {CUT_SECONDS:g}s, refused "
        f"{cut_run.refused} reconnects; {repeats} records repeated\n"
        + compare("cut run", ours, ref)
    )
    print(summary)
    assert all(ref[o] for o in OUTPUTS), summary
    want = last_written(reference["corrected"])
    assert len(want) == ORDERS
    got = last_written(raw["corrected"])
    differ = {o: (got.get(o), s) for o, s in want.items() if got.get(o) != s}
    assert not differ, f"{len(differ)} orders end elsewhere (ours, reference): {differ}\n{summary}"
    assert set(got) == set(want)
    # The cut is no input: no dead letter of its own, every real one there.
    assert ours["dead_letters"] == ref["dead_letters"], summary
    assert_nothing_lost(raw)
    assert_breaker_chains(raw["breakers"])
    assert_chains_link(ours["corrected"])
    # Without a restart nothing is re-processed: a record written twice (a retried
    # produce) is the very same record.
    assert not conflicts, conflicts[:3]


def test_connection_cut_run_writes_the_uninterrupted_runs_records(cut_run):
    assert_same_records(by_id(cut_run.cut)[0], by_id(cut_run.reference)[0])
