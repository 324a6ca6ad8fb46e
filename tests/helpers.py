"""Builders for normalized events, so state tests read like the scenario they check."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from connectors.processes import stop_group
from dataflows.messages import Mark
from schemas.config import Settings, load_settings
from schemas.event import Event
from schemas.statuses import CLAIMABLE, conditional
from state.packing import IdTable
from state.timers import TimerWheel

T0 = int(datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
HOUR = 60 * MIN

_STREAM = {
    "channel": "orders",
    "oms": "orders",
    "wms": "orders",
    "gateway": "payments",
    "carrier": "tracking",
    "telemetry": "tracking",
}
_seq = itertools.count(1)


def ev(
    source: str,
    kind: str,
    order_id: str | None,
    *claims: str,
    at: int,
    event_at: int | None = None,
    event_id: str | None = None,
    **fields: object,
) -> Event:
    """An event received at `at` (ms) about `order_id`; its own time defaults to `at`.

    Its claims are what a validated status map can produce (`schemas.config` refuses any
    other), so a test cannot feed the core a claim real input never carries."""
    for claim in claims:
        for part in conditional(claim) or (claim,):
            assert part in CLAIMABLE, f"{claim!r} is not a claim a status map can produce"
    seq = next(_seq)
    e = Event(
        stream=_STREAM[kind],
        source=source,
        kind=kind,
        event_id=event_id or f"{source}-{seq}",
        received_ms=at,
        event_ms=at if event_at is None else event_at,
        order_id=order_id,
        claims=tuple(claims),
        raw_status=",".join(claims),
        seq=seq,
    )
    for k, v in fields.items():
        setattr(e, k, v)
    return e


def oms(order_id: str, status: str, at: int, **kw: object) -> Event:
    kw.setdefault("customer_id", "C1")
    return ev("oms", "oms", order_id, status, at=at, **kw)


def pay(order_id: str, at: int, **kw: object) -> Event:
    return ev("wechatpay", "gateway", order_id, "PAID", at=at, outcome="success", **kw)


def label(order_id: str, tracking: str, at: int, carrier: str = "sf", **kw: object) -> Event:
    return ev(
        "wms",
        "wms",
        order_id,
        "LABEL_CREATED",
        at=at,
        tracking_no=tracking,
        tracking_valid=True,
        carrier=carrier,
        **kw,
    )


def scan(order_id: str | None, status: str, at: int, tracking: str = "SF123456789012", **kw):
    kw.setdefault("carrier", "sf")
    return ev(
        "sf", "carrier", order_id, status, at=at, tracking_no=tracking, tracking_valid=True, **kw
    )


ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`orderguard ARGS` as a user runs it: a subprocess in the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "dataflows.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def settings_of(env: dict[str, str]) -> Settings:
    """The configuration a subprocess with `env` loads."""
    with pytest.MonkeyPatch.context() as mp:
        for k in os.environ:
            if k.startswith("ORDERGUARD__"):
                mp.delenv(k)
        for k, v in env.items():
            if k.startswith("ORDERGUARD__"):
                mp.setenv(k, v)
        return load_settings()


def wait_until(
    what: str, done: Callable[[], bool], timeout: float = 180.0, interval: float = 0.5
) -> None:
    """Poll `done` until true; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class PrivateRedis:
    """A redis-server of a test's own on a fixed port, stopped and started at will.

    Not the shared Redis: outage tests stop it. It keeps nothing on disk, so a
    restart on the same port comes back empty.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        wait_until("redis-server to answer", lambda: _pings(client), timeout=20, interval=0.05)
        client.close()
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc)


def drain(wheel: TimerWheel, now: int, dues: dict[str, int]) -> list[tuple[int, str]]:
    """Every deadline before `now` the wheel gives, each cleared as the shard clears it
    (`dues`: key -> due ms, 0 for none)."""
    out = []
    while (entry := wheel.pop_next(now, lambda k: dues.get(k, 0))) is not None:
        out.append(entry)
        dues[entry[1]] = 0
    return out


def mark(part: str = "p", clock: int = 0) -> Mark:
    """A router's `Mark` for a batch of partition `part` (one partition in all)."""
    return Mark(part, clock, 1, False, False)


def simulated_day(path: Path, orders: int, seed: int, incidents: tuple[str, ...]) -> Path:
    """A simulated day (2026-03-02, UTC) with `incidents`, as JSONL envelopes in `path`."""
    from sim import generate, write_jsonl

    start = datetime(2026, 3, 2, tzinfo=UTC)
    envelopes = generate(
        orders=orders, seed=seed, start=start, hours=24, incidents=frozenset(incidents)
    )
    write_jsonl(path, envelopes)
    return path


def orders_logic(
    settings: Settings,
    resume: bytes | None,
    recovery_dir: Path | None,
    restored: IdTable | None = None,
):
    """The orders step's logic as Bytewax builds it (`dataflows.flow.adapter`), resuming
    through `restored` as `build_flow`'s steps do."""
    from dataflows.flow import OrdersStep, adapter
    from dataflows.observer import NULL_OBSERVER

    return adapter(
        "orders",
        resume,
        lambda: OrdersStep(settings, NULL_OBSERVER),
        lambda state: OrdersStep(settings, NULL_OBSERVER, state=state, ids=restored),
        recovery_dir,
        NULL_OBSERVER,
        restored,
    )
