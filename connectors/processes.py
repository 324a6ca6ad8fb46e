"""Child processes that run in a process group of their own (`start_new_session=True`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


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
