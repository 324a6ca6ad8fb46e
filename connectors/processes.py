"""Child processes that run in a process group of their own (`start_new_session=True`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self


def stop_group(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 5.0
) -> int | None:
    """Signal the child's process group, SIGKILL it if it lingers; its exit status.

    The group is signalled only while the child is unreaped: until then its pid (and
    so its group id) cannot have been reused by an unrelated process. Safe to call twice.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def spawn_logged(cmd: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child whose output goes to `log`, in a session (process group) of its own.

    A terminal's Ctrl-C then reaches the parent only, which stops its children in order
    (with `stop_group`).
    """
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM both raise KeyboardInterrupt while the block runs.

    Bytewax stops on SIGINT only, and an orchestrator sends SIGTERM. SIGINT is set
    explicitly too: a process started in the background by a non-interactive shell
    inherits it ignored, and would then never stop on Ctrl-C or a parent's SIGINT.
    Outside the main thread signals cannot be set: they are left alone.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = {
            signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
            signal.SIGTERM: signal.signal(signal.SIGTERM, interrupt),
        }
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Service:
    """A local server (broker, Redis, Prometheus) that `with` starts and always stops."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_LOOPBACK = ("127.", "localhost", "::1", "[::1]")
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


def _listening_ports(proc_net: Path) -> set[int]:
    ports = set()
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for row in (proc_net / name).read_text().splitlines()[1:]:
                cols = row.split()
                if len(cols) > 3 and cols[3] == _LISTEN:
                    ports.add(int(cols[1].rpartition(":")[2], 16))
    return ports


def await_listening(
    addresses: list[str],
    timeout: float = 10.0,
    poll: float = 0.005,
    proc_net: Path = Path("/proc/net"),
) -> bool:
    """Wait until every `host:port` of this host in `addresses` has a listening socket.

    A Bytewax (timely) process connects to every lower-numbered process of its cluster,
    and when one does not listen yet it sleeps a whole second before trying again
    (timely_communication's `start_connections`). Processes started together, as a
    local cluster's are, reach that point within milliseconds of each other, so about
    one start in two lost that second. Reading the kernel's socket table costs no
    connection (a probe would have to speak timely's handshake). Addresses on other
    hosts, or no /proc: True at once, and timely's own retry does the rest; False if
    `timeout` passed first.
    """
    ports = {
        int(port)
        for host, _, port in (a.rpartition(":") for a in addresses)
        if host.startswith(_LOOPBACK)
    }
    if not ports or not (proc_net / "tcp").exists():
        return True
    deadline = time.monotonic() + timeout
    while not ports <= _listening_ports(proc_net):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True
