"""Which stack the operator commands talk to (dataflows/stack.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataflows.stack import BROKER_VAR, PREFIX_VAR, REDIS_VAR, published, resolve, running_demo

DEMO_ENV = {BROKER_VAR: "127.0.0.1:1234", REDIS_VAR: "redis://127.0.0.1:1/0", PREFIX_VAR: "og:d:"}


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for var in (BROKER_VAR, REDIS_VAR, PREFIX_VAR):  # resolve() sets them: restored after
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    return tmp_path / "orderguard" / "demo.json"


def test_a_running_demo_is_found_and_its_file_goes_with_it(runtime: Path):
    with published({**DEMO_ENV, "ORDERGUARD__RECOVERY__DIR": "/x"}, None) as path:
        assert path == runtime and runtime.stat().st_mode & 0o777 == 0o600
        stack = resolve(None)
        assert stack.demo is not None and stack.demo.pid == os.getpid()
        assert "the demo started" in stack.describe()
        for var, value in DEMO_ENV.items():  # only the connection settings are published
            assert os.environ[var] == value
        assert stack.demo.env == DEMO_ENV
    assert not runtime.exists()
    assert resolve(None).demo is None


@pytest.mark.parametrize("explicit", ["config", BROKER_VAR, REDIS_VAR])
def test_a_named_deployment_wins_over_a_running_demo(
    runtime: Path, monkeypatch: pytest.MonkeyPatch, explicit: str
):
    with published(DEMO_ENV, None):
        if explicit == "config":
            stack = resolve(Path("ops/orderguard.yaml"))
        else:
            monkeypatch.setenv(explicit, "somewhere")
            stack = resolve(None)
    assert stack.demo is None
    assert "set ORDERGUARD__REDIS__URL, or redis.url in" in stack.hint(REDIS_VAR, "redis.url")


def test_a_killed_demo_s_file_is_ignored(runtime: Path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    runtime.parent.mkdir(parents=True)
    runtime.write_text(
        f'{{"pid": {dead.stdout.strip()}, "started_at": "x", "config": null, "env": {{}}}}'
    )
    assert running_demo() is None
    assert resolve(None).demo is None
