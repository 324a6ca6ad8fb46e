"""`orderguard demo --gateway`: the webhook gateway as a child process, and its traffic.

The demo starts `orderguard gateway` beside the pipeline, on free loopback ports. At
start it generates each webhook source's provider test keys (`schemas.provider_requests.
gateway_keys`): HMAC secrets, WeChat Pay's APIv3 key, SF's checkword, DHL's key exist
only in this process and in the gateway's environment (never on a command line, in a
file or on the screen); the RSA private keys (WeChat Pay's platform key, Alipay's key,
PayPal's certificate key) only in this process; the public keys and PayPal's (pinned)
certificate are written to a private temporary directory (0700) that the gateway's
environment names, removed when the gateway stops. A `WebhookSender` then posts the
simulator's real-time envelopes of every source the gateway has an endpoint for, each
in its provider's real request format and signature. The others (channel syncs, OMS,
WMS) go to Kafka directly, as their real connectors would put them there.

Only the real-time part goes over HTTP. The gateway stamps `received_at` with its
own clock, as it must for real providers; the backlog (yesterday's traffic, produced
at start-up) would be re-dated to "now" if it went through the gateway, and the
pipeline would see a day of history arrive in one second. So the backlog goes to
Kafka directly with its historical `received_at`, and from the demo's start on, each
tracking and payment envelope is posted when the wall clock reaches its time.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from connectors.broker import free_port
from connectors.processes import spawn_logged, stop_group
from connectors.webhook_client import WebhookSender, WebhookStats
from schemas.config import Settings
from schemas.provider_requests import ProviderKeys, gateway_keys

READY_TIMEOUT = 60.0
"""Seconds the gateway gets to answer /readyz 200 (Python start-up on a busy machine)."""


class GatewayNotReady(RuntimeError):
    """The gateway exited, or did not become ready in time, while the demo started."""


@dataclass
class DemoGateway:
    """The running gateway child and what the demo needs to talk to it."""

    proc: subprocess.Popen[bytes]
    url: str
    metrics_url: str
    log: Path
    keys: dict[str, ProviderKeys]
    key_dir: Path
    """The public keys and certificates the gateway reads (removed by `stop`)."""

    def sender(self, settings: Settings) -> WebhookSender:
        """A provider-side client holding the keys whose public halves the gateway has."""
        return WebhookSender(settings, self.url, self.keys)

    def stop(self, grace: float) -> int | None:
        """SIGINT: the gateway finishes the requests in flight and flushes its producer."""
        try:
            return stop_group(self.proc, signal.SIGINT, grace)
        finally:
            shutil.rmtree(self.key_dir, ignore_errors=True)


def provider_keys(settings: Settings) -> tuple[dict[str, ProviderKeys], Path, dict[str, str]]:
    """Fresh provider keys for every webhook source the pipeline reads, their public
    halves written to a new private directory, and the environment naming them."""
    hooks = {n: h for n, h in settings.gateway.sources.items() if n in settings.sources}
    key_dir = Path(tempfile.mkdtemp(prefix="orderguard-demo-keys-"))  # mode 0700
    keys, files, env = gateway_keys(hooks, str(key_dir))
    for path, data in files.items():
        Path(path).write_bytes(data)
    return keys, key_dir, env


def start_gateway(
    settings: Settings, config: Path | None, env: dict[str, str], log: Path
) -> DemoGateway:
    """`orderguard gateway` in a session of its own (the demo stops it), logging to `log`."""
    keys, key_dir, key_vars = provider_keys(settings)
    port, metrics = free_port(), free_port()
    # The simulator's delivery ids repeat from run to run (same seed): in a Redis that
    # outlives the run (the machine's), the delivery ledger of an earlier run would
    # answer them "duplicate" and they would never reach Kafka. The gateway keeps its
    # ledger under the demo's key prefix (`env`), this run's own.
    child = {
        **env,
        "ORDERGUARD__GATEWAY__HOST": "127.0.0.1",
        "ORDERGUARD__GATEWAY__PORT": str(port),
        "ORDERGUARD__GATEWAY__METRICS_PORT": str(metrics),
        **key_vars,
    }
    cmd = [sys.executable, "-m", "dataflows.cli", "gateway"]
    if config is not None:
        cmd += ["--config", str(config)]
    try:
        proc = spawn_logged(cmd, child, log)
    except BaseException:
        shutil.rmtree(key_dir, ignore_errors=True)
        raise
    return DemoGateway(
        proc,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{metrics}/metrics",
        log,
        keys,
        key_dir,
    )


def wait_ready(gw: DemoGateway, timeout: float = READY_TIMEOUT) -> None:
    """Poll `GET /readyz` until 200 (a broker answers); raise if the child exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise GatewayNotReady(f"the gateway exited with status {gw.proc.returncode}")
        try:
            with urllib.request.urlopen(f"{gw.url}/readyz", timeout=1.0) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise GatewayNotReady(f"the gateway was not ready within {timeout:g} s")


def describe(gw: DemoGateway) -> str:
    """The start-up line (no secret in it)."""
    return (
        f"gateway pid {gw.proc.pid}, {gw.url} (metrics {gw.metrics_url}): "
        f"live webhooks of {', '.join(sorted(gw.keys))} in their providers' formats, "
        f"signed with test keys made for this run"
    )


def webhook_status(stats: WebhookStats) -> str:
    """`webhooks 120 via gateway (2 retried, last 503 kafka_unavailable)` for the screen."""
    text = f"webhooks {stats.done:,} via gateway"
    extra = []
    if stats.duplicates:
        extra.append(f"{stats.duplicates:,} redelivered")
    extra.append(f"{stats.retried:,} retried")
    if stats.pending:
        extra.append(f"{stats.pending:,} pending")
    if stats.retried and stats.last_failure:
        extra.append(f"last {stats.last_failure}")
    return f"{text} ({', '.join(extra)})"
