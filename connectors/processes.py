"""Child processes that run in a process group of their own (`start_new_session=True`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
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
