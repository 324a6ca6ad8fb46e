"""Builders for normalized events, so state tests read like the scenario they check."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.config import Settings, load_settings
from schemas.event import Event

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
    """An event received at `at` (ms) about `order_id`; its own time defaults to `at`."""
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
