"""A real Prometheus server on a free loopback port, for end-to-end tests of the ops files.

The `prometheus` binary is Debian's package (`make tools` installs it); without it the
test fails with that instruction rather than skipping. Its data lives in a directory
the caller owns; `stop` (or leaving the `with` block) always ends the process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from connectors.broker import free_port
from connectors.processes import Service, stop_group

READY_TIMEOUT = 60.0


class PrometheusServer(Service):
    """`prometheus --config.file CONFIG` on 127.0.0.1:<free port>, storage under `workdir`."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.port = 0
        self.log = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.fail(
                "prometheus is not installed: run `make tools` (Debian package `prometheus`)",
                pytrace=False,
            )
        self.port = free_port()
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    exe,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop_group ends it and only it
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready():
            if self._proc.poll() is not None:
                pytest.fail(f"prometheus exited {self._proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"prometheus not ready after {READY_TIMEOUT:g}s:\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a GET on the HTTP API, e.g. api("alerts")."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self._proc is not None:
            stop_group(self._proc, grace=10.0)
