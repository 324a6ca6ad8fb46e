"""`orderguard gateway` as a subprocess, and a provider's side of it, for integration tests.

The gateway is started exactly as an operator starts it (`python -m dataflows.cli
gateway`, configured by environment overrides only) and always stopped; requests are
signed with `schemas.provider_requests.signed_request`, the providers' side of the
verifiers.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from connectors.broker import free_port
from connectors.processes import Service, stop_group
from schemas.config import Settings
from schemas.provider_requests import ProviderKeys, signed_request
from tests.helpers import ROOT, settings_of
from tests.integration.test_run_live import read_topic

SECRETS = {
    "stripe": "whsec_stripe_test",
    "yto": "yto-test-secret",
    "aftership": "aftership-test-secret",
    "dhl": "dhl-test-secret",
    "zto": "zto-test-secret",
}
"""The JSON sources given a secret (HMAC schemes, DHL's static key); every other
configured source (paypal, ...) has none. The providers' own formats:
tests/integration/test_gateway_providers.py."""

RFC3339_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def gateway_env(bootstrap: str, redis_url: str | None, **overrides: str) -> dict[str, str]:
    """Fresh input topics and Redis key prefix per gateway (the broker and Redis are shared).

    `overrides`: more settings, `GATEWAY__PRODUCE_TIMEOUT="2s"` for
    ORDERGUARD__GATEWAY__PRODUCE_TIMEOUT.
    """
    suffix = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGUARD__")}
    env["ORDERGUARD__KAFKA__BOOTSTRAP_SERVERS"] = bootstrap
    env["ORDERGUARD__KAFKA__PARTITIONS"] = "2"
    for stream in ("orders", "payments", "tracking"):
        env[f"ORDERGUARD__KAFKA__INPUT_TOPICS__{stream.upper()}"] = f"gw.{stream}.{suffix}"
    for out in ("corrected", "alerts", "breakers", "dead_letters"):
        env[f"ORDERGUARD__KAFKA__OUTPUT_TOPICS__{out.upper()}"] = f"gw.{out}.{suffix}"
    env["ORDERGUARD__KAFKA__CONTROL_TOPIC"] = f"gw.control.{suffix}"
    env["ORDERGUARD__METRICS__PORT"] = "0"
    env["ORDERGUARD__GATEWAY__PORT"] = str(free_port())
    env["ORDERGUARD__GATEWAY__METRICS_PORT"] = "0"
    if redis_url is not None:
        env["ORDERGUARD__REDIS__URL"] = redis_url
        env["ORDERGUARD__REDIS__KEY_PREFIX"] = f"gwtest-{suffix}:"
        env["ORDERGUARD__REDIS__RETRY_INTERVAL"] = "200ms"
        env["ORDERGUARD__REDIS__SOCKET_TIMEOUT"] = "500ms"
    for source, secret in SECRETS.items():
        env[f"ORDERGUARD__GATEWAY__SOURCES__{source.upper()}__SECRET"] = secret
    for k, v in overrides.items():
        env[f"ORDERGUARD__{k}"] = v
    return env


def free_port_pair() -> int:
    """A port p with p and p + 1 free (metrics of processes 0 and 1)."""
    for _ in range(50):
        p = free_port()
        if p < 65535 and _free(p + 1):
            return p
    raise RuntimeError("no two consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class GatewayProcess(Service):
    """`orderguard gateway [--processes N]` in its own process group, output collected."""

    def __init__(
        self, env: dict[str, str], processes: int = 1, open_files: int | None = None
    ) -> None:
        self.env = env
        self.processes = processes
        self.open_files = open_files
        """`ulimit -n` of the gateway's process (None: inherited)."""
        self.settings: Settings = settings_of(env)
        gw = self.settings.gateway
        self.url = f"http://{gw.host}:{gw.port}"
        self.metrics_port = gw.metrics_port
        self.proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "".join(self._lines)

    @property
    def topics(self) -> dict[str, str]:
        return self.settings.kafka.input_topics.model_dump()

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        cmd = [sys.executable, "-m", "dataflows.cli", "gateway"]
        if self.processes > 1:
            cmd += ["--processes", str(self.processes)]
        self.proc = subprocess.Popen(
            cmd,
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=None if self.open_files is None else self._limit_open_files,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while self.output.count("gateway listening on") < self.processes:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the gateway did not start:\n{self.output}")
            time.sleep(0.05)
        return self

    def _limit_open_files(self) -> None:
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Signal the gateway (the launcher, with --processes), not its children directly."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, SIGKILL after `grace`; safe to call twice."""
        if self.proc is None:
            return
        stop_group(self.proc, signal.SIGTERM, grace=grace)  # type: ignore[arg-type]
        if self._reader is not None:
            self._reader.join(timeout=5)


# ------------------------------------------------------------------ the provider's side
@dataclass(frozen=True)
class Webhook:
    """One HTTP request as a provider sends it."""

    source: str
    body: bytes
    headers: dict[str, str]


def signed(
    settings: Settings,
    source: str,
    body: bytes,
    *,
    secret: str | None = None,
    now: float | None = None,
    content_type: str = "application/json",
) -> Webhook:
    """`body` signed for `source` with its test secret (or `secret`) at `now`."""
    hook = settings.gateway.sources[source]
    key = (secret if secret is not None else SECRETS[source]).encode()
    made = signed_request(hook, body, ProviderKeys(secret=key), time.time() if now is None else now)
    return Webhook(source, body, {**made.headers, "Content-Type": content_type})


@dataclass(frozen=True)
class Answer:
    status: int
    """0: no HTTP answer (refused, reset or cut off)."""
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return self.body.get("error")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


async def post_async(
    session: aiohttp.ClientSession, base_url: str, hook: Webhook, timeout: float = 30.0
) -> Answer:
    try:
        async with session.post(
            f"{base_url}/webhooks/{hook.source}",
            data=hook.body,
            headers=hook.headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as r:
            raw = await r.read()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = {"raw": raw.decode(errors="replace")}
            return Answer(r.status, body, dict(r.headers))
    except (aiohttp.ClientError, OSError, TimeoutError):
        return Answer(0)


def post_all(base_url: str, hooks: list[Webhook], concurrency: int = 20) -> list[Answer]:
    """Send every request, up to `concurrency` at a time; the answers in the same order."""

    async def run() -> list[Answer]:
        gate = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(hook: Webhook) -> Answer:
                async with gate:
                    return await post_async(session, base_url, hook)

            return await asyncio.gather(*(one(h) for h in hooks))

    return asyncio.run(run())


def post(base_url: str, hook: Webhook) -> Answer:
    return post_all(base_url, [hook])[0]


def get(base_url: str, path: str) -> Answer:
    async def run() -> Answer:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base_url}{path}", timeout=aiohttp.ClientTimeout(total=10)) as r,
        ):
            return Answer(r.status, orjson.loads(await r.read()), dict(r.headers))

    try:
        return asyncio.run(run())
    except (aiohttp.ClientError, OSError, TimeoutError):
        return Answer(0)


# ------------------------------------------------------------------ what Kafka holds
@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    envelope: dict[str, Any]


def records(bootstrap: str, topic: str) -> list[Record]:
    """Every record of `topic` (all partitions assigned from offset 0, read to EOF)."""
    return [Record(k, v, orjson.loads(v)) for k, v in read_topic(bootstrap, topic)]


def event_ids(recs: list[Record]) -> list[str]:
    return [r.envelope.get("event_id", "") for r in recs]


def stripe_body(event_id: str, order_id: str, amount: int = 1999) -> bytes:
    """A Stripe event as Stripe formats it (spaces, nesting, a non-ASCII character)."""
    return (
        b'{\n  "id": "%s",\n  "object": "event",  "type": "payment_intent.succeeded",\n'
        b'  "created": %d,\n  "data": {"object": {"amount": %d, "currency": "eur", '
        b'"description": "caf\xc3\xa9 \\u00e9",\n "metadata": {"order_id": "%s"}}}}\n'
        % (event_id.encode(), int(time.time()), amount, order_id.encode())
    )


def run_id() -> str:
    """A fresh suffix for one test's ids, so that redeliveries of another test never match."""
    return uuid.uuid4().hex[:10]
