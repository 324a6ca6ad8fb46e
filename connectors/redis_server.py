"""A Redis to talk to: the configured one (redis.url), else 127.0.0.1:6379, else our own.

The demo and the tests need a real Redis but must not depend on how the machine was
set up: when nothing answers, a throwaway `redis-server` (no persistence, loopback
only, its own process group) is started on a free port and stopped afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import redis

from connectors.broker import free_port
from connectors.processes import Service, stop_group

DEFAULT_URL = "redis://127.0.0.1:6379/0"


class RedisUnavailable(RuntimeError):
    """No Redis answered and none could be started."""


def _answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _redacted(url: str) -> str:
    """The URL without its password: it may end up in a log or an error."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user + ':***' if user else '***'}@{host}"


class LocalRedis(Service):
    """A Redis URL for the duration of a `with` block, started here only when needed.

    `url`: the configured one if given (it must answer: a configured Redis that is down
    is an error, not a reason to start another), else the machine's default, else a
    `redis-server` of our own. `started` says whether we started it.
    """

    def __init__(self, url: str | None = None, startup_timeout: float = 10.0) -> None:
        self._wanted = url
        self.startup_timeout = startup_timeout
        self.url = ""
        self.started = False
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def display_url(self) -> str:
        return _redacted(self.url)

    def start(self) -> LocalRedis:
        if self._wanted:
            if not _answers(self._wanted):
                raise RedisUnavailable(
                    f"Redis at redis.url={_redacted(self._wanted)} does not answer "
                    "(ORDERGUARD__REDIS__URL or the configuration file)"
                )
            self.url = self._wanted
            return self
        if _answers(DEFAULT_URL):
            self.url = DEFAULT_URL
            return self
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable(
                "no Redis answers at 127.0.0.1:6379 and redis-server is not installed "
                "(set ORDERGUARD__REDIS__URL, or install Debian's redis-server)"
            )
        port = free_port()
        self._proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"redis://127.0.0.1:{port}/0"
        self.started = True
        deadline = time.monotonic() + self.startup_timeout
        while not _answers(self.url, timeout=0.2):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RedisUnavailable(f"redis-server on port {port} did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop the redis-server we started (if any); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc)


def delete_prefixed(url: str, prefix: str, options: dict[str, object]) -> int:
    """Delete every key starting with `prefix` (SCAN, then UNLINK in batches); the count."""
    pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix) + "*"
    client = redis.Redis.from_url(url, **options)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) == 1000:
                deleted += client.unlink(*batch)
                batch = []
        if batch:
            deleted += client.unlink(*batch)
    finally:
        client.close()
    return deleted
