"""`orderguard demo` as a user runs it: broker, Redis, simulator and pipeline in one command."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, run_cli


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_open(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError:
        return False
    return True


def _started(text: str) -> tuple[str, int]:
    broker = re.search(r"broker (\S+) \(Tansu", text)
    pid = re.search(r"pipeline pid (\d+)", text)
    assert broker and pid, text
    return broker.group(1), int(pid.group(1))


def _count(text: str, label: str) -> int:
    m = re.search(rf"^{label}\s+([\d,]+)", text, re.M)
    assert m, f"no {label!r} line in:\n{text}"
    return int(m.group(1).replace(",", ""))


def test_demo_runs_live_and_reports_what_the_guard_raised():
    r = run_cli(
        "demo", "--orders", "3000", "--history", "6", "--duration", "25",
        "--incident", "lost_payment_callback", timeout=240,
    )  # fmt: skip
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    broker, pid = _started(out)
    # the backlog went through the pipeline, read from Kafka, into the output topics
    read = re.findall(r"pipeline read ([\d,]+)", out)
    assert read and int(read[-1].replace(",", "")) > 1000, out
    assert _count(out, "corrections") > 500
    # a lost payment callback leaves paid orders unreflected in the OMS: the guard says so
    firing = re.search(r"PAYMENT_NOT_REFLECTED\s+([\d,]+) /", out)
    assert firing and int(firing.group(1).replace(",", "")) > 0, out
    assert "stopped: the pipeline, the broker" in out
    assert not _alive(pid) and not _port_open(broker)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_stops_everything_cleanly(inherited):
    """`ignored`: started in the background by a non-interactive shell (`make demo &`),
    the demo and the pipeline it starts inherit SIGINT ignored; it must stop them anyway."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataflows.cli", "demo", "--orders", "2000", "--history", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_ignore_sigint if inherited == "ignored" else None,
    )
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 120
    while "pipeline read" not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert "pipeline read" in seen, seen
    broker, pid = _started(seen)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    rest, _ = proc.communicate(timeout=90)
    out = seen + rest
    assert proc.returncode == 0, out
    assert "stopping" in out and "stopped: the pipeline, the broker" in out
    assert "kept" not in out  # the pipeline stopped on SIGINT, not killed after the grace
    assert "Traceback" not in out
    assert not _alive(pid) and not _port_open(broker)
