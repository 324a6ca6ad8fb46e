"""Which stack the operator commands talk to: a running demo, or the configuration.

`orderguard demo` publishes, while it runs, the connection settings its pipeline runs
with (as the `ORDERGUARD__` variables it sets) in a well-known file, readable by its
user only, and removes the file when it stops. The operator commands (`lookup`,
`breaker force`, `hold release`) use that file when nothing names a deployment:
no `--config`, and neither `ORDERGUARD__KAFKA__BOOTSTRAP_SERVERS` nor
`ORDERGUARD__REDIS__URL` in the environment. Otherwise the usual configuration
applies, and a connection error names the variable to set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from schemas.config import DEFAULT_CONFIG

BROKER_VAR = "ORDERGUARD__KAFKA__BOOTSTRAP_SERVERS"
REDIS_VAR = "ORDERGUARD__REDIS__URL"
PREFIX_VAR = "ORDERGUARD__REDIS__KEY_PREFIX"
CONTROL_KEY_VAR = "ORDERGUARD__CONTROL__KEYS__DEMO"
PUBLISHED = (BROKER_VAR, REDIS_VAR, PREFIX_VAR, CONTROL_KEY_VAR)
"""What the demo publishes: where its broker and its Redis data are, and the key its
pipeline accepts commands signed with (the file is readable by its user only)."""


def demo_file() -> Path:
    """$XDG_RUNTIME_DIR, else ${XDG_CACHE_HOME:-~/.cache}, then orderguard/demo.json."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(base or Path.home() / ".cache") / "orderguard" / "demo.json"


@dataclass(frozen=True)
class DemoInfo:
    """A running demo, as its file describes it."""

    pid: int
    started_at: str
    config: str | None
    env: dict[str, str]
    path: Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not our demo
        return False
    return True


@contextmanager
def published(env: dict[str, str], config: Path | None) -> Iterator[Path]:
    """Publish the demo's connection settings while the block runs (mode 0600)."""
    path = demo_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc = {
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "config": str(config.resolve()) if config is not None else None,
        "env": {k: env[k] for k in PUBLISHED if k in env},
    }
    tmp = path.with_name(f".demo.{os.getpid()}.json")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    tmp.replace(path)  # whole or not at all, for a command reading it meanwhile
    try:
        yield path
    finally:
        mine = running_demo()
        if mine is not None and mine.pid == os.getpid():  # a later demo's file stays
            with suppress(FileNotFoundError):
                path.unlink()


def running_demo() -> DemoInfo | None:
    """The demo whose file is there and whose process runs (a killed demo's file is stale)."""
    path = demo_file()
    try:
        doc = json.loads(path.read_text())
        info = DemoInfo(
            int(doc["pid"]), str(doc["started_at"]), doc["config"], dict(doc["env"]), path
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if _alive(info.pid) else None


@dataclass(frozen=True)
class Stack:
    """What a command talks to: the demo it found, or the configuration."""

    config: Path | None
    demo: DemoInfo | None

    def describe(self) -> str:
        if self.demo is not None:
            return (
                f"the demo started {self.demo.started_at} (pid {self.demo.pid}, {self.demo.path})"
            )
        return f"{self.config or DEFAULT_CONFIG} and ORDERGUARD__ variables"

    def hint(self, var: str, key: str) -> str:
        """Which setting to change when a connection fails."""
        if self.demo is not None:
            return f"(talking to {self.describe()}; is it still starting or stopping?)"
        return (
            f"(set {var}, or {key} in {self.config or DEFAULT_CONFIG}; "
            "no `orderguard demo` is running)"
        )


def resolve(config: Path | None) -> Stack:
    """The running demo when nothing names a deployment; its settings become the environment."""
    if config is not None or os.environ.get(BROKER_VAR) or os.environ.get(REDIS_VAR):
        return Stack(config, None)
    demo = running_demo()
    if demo is None:
        return Stack(None, None)
    os.environ.update(demo.env)
    return Stack(Path(demo.config) if demo.config else None, demo)
