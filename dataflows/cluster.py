"""Running the live dataflow as a cluster of Bytewax processes.

Bytewax's cluster model: every process runs the same dataflow with the same
`workers_per_process`, knows the addresses of all processes (`-a host:port;...`,
in process-id order) and its own index in that list (`-i N`). Input partitions are
spread over all workers of the cluster as evenly as possible (worker 0 assigns each
partition to the worker with the fewest so far), so with P input partitions and W
workers some own ceil(P/W) and some floor(P/W) when W does not divide P.

Bytewax 0.21.1 then slows to a crawl (bytewax/bytewax#556, "fix: a stall when
multiple workers read from partitioned input"): a worker with fewer partitions is
ahead of the cluster's output frontier, waits for it, and that waiting counts
towards its epoch (snapshot interval); once the busier worker's epoch closes, the
waiting worker gets one `next_batch` per partition before its own epoch is due
again, so its partitions' lag keeps growing. The fix (reset the epoch timer while
waiting) is not in 0.21.1. `check_partitions` says whether a layout is affected.

`run_local_cluster` launches N processes of `orderguard run -i k -a ...` on loopback.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

log = logging.getLogger("orderguard.cluster")

INPUT_TOPICS = 3
"""orders, payments, tracking: each has `kafka.partitions` partitions."""


# ---------------------------------------------------------------- addresses
def parse_addresses(text: str) -> list[str]:
    """`host:port;host:port` (Bytewax's `-a`) into a list; raise ValueError on a bad one."""
    addresses = [a.strip() for a in text.split(";")]
    if addresses and addresses[-1] == "":  # a trailing ';'
        addresses.pop()
    if not addresses:
        raise ValueError("no addresses given")
    for a in addresses:
        host, sep, port = a.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{a!r} is not host:port")
    dup = sorted({a for a in addresses if addresses.count(a) > 1})
    if dup:
        raise ValueError(f"address {dup[0]} is given more than once")
    return addresses


def check_process_id(process_id: int, addresses: Sequence[str]) -> None:
    """The process id indexes the address list."""
    if not 0 <= process_id < len(addresses):
        raise ValueError(
            f"process id {process_id} is not in 0..{len(addresses) - 1} "
            f"({len(addresses)} addresses given)"
        )


def local_addresses(processes: int) -> list[str]:
    """One free loopback port per process (picked by the OS, released before use)."""
    from connectors.broker import free_port

    ports: set[int] = set()
    while len(ports) < processes:
        ports.add(free_port())
    return [f"127.0.0.1:{p}" for p in sorted(ports)]


# ---------------------------------------------------------------- partitions vs workers
@dataclass(frozen=True)
class PartitionCheck:
    """How the input partitions spread over the cluster's workers."""

    partitions: int
    """All partitions of all input topics."""
    workers: int
    """processes x workers per process."""
    fewest: int
    most: int
    suggested_per_topic: int
    """The smallest per-topic count >= the current one that spreads evenly."""

    @property
    def balanced(self) -> bool:
        return self.fewest == self.most

    @property
    def idle_workers(self) -> int:
        return max(0, self.workers - self.partitions)

    def message(self) -> str:
        """The warning for an unbalanced layout (empty when balanced)."""
        if self.balanced:
            return ""
        text = (
            f"{self.partitions} input partitions over {self.workers} workers: some workers "
            f"read {self.most} partitions, others {self.fewest}. Bytewax 0.21.1 stalls the "
            "workers with fewer partitions when workers own unequal numbers of partitions "
            "(bytewax/bytewax#556): their lag keeps growing. "
        )
        if self.idle_workers:
            text += f"{self.idle_workers} workers read nothing. "
        return text + (
            f"Use kafka.partitions={self.suggested_per_topic} "
            f"({INPUT_TOPICS * self.suggested_per_topic} input partitions), or a worker "
            f"count that divides {self.partitions}."
        )


def check_partitions(
    partitions: int, workers: int, *, topics: int = INPUT_TOPICS, per_topic: int | None = None
) -> PartitionCheck:
    """Whether `partitions` input partitions spread evenly over `workers` workers.

    Bytewax assigns every partition to the worker with the fewest so far, so each
    worker gets floor(P/W) or ceil(P/W): even exactly when W divides P. The
    suggestion is the smallest per-topic count p >= `per_topic` (default P/topics,
    rounded up) with topics*p a multiple of W.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if topics < 1:
        raise ValueError(f"topics must be at least 1, got {topics}")
    current = per_topic if per_topic is not None else -(-partitions // topics)
    step = workers // math.gcd(topics, workers)
    suggested = max(step, -(-current // step) * step)
    return PartitionCheck(
        partitions=partitions,
        workers=workers,
        fewest=partitions // workers,
        most=-(-partitions // workers),
        suggested_per_topic=suggested,
    )


def warn_if_unbalanced(
    partitions: int, workers: int, *, per_topic: int | None = None
) -> PartitionCheck:
    """Log the #556 warning (WARNING, on `orderguard.cluster`) when it applies."""
    check = check_partitions(partitions, workers, per_topic=per_topic)
    if not check.balanced:
        log.warning("%s", check.message())
    return check


# ---------------------------------------------------------------- local launcher
_CAUGHT_UP = re.compile(r"^caught up: ([\d,]+) records delivered")


@dataclass
class ClusterResult:
    """How the processes of a local cluster ended."""

    returncodes: list[int]
    stopped: bool
    """A SIGINT or SIGTERM was forwarded to the processes."""
    failed: int | None = None
    """The first process that failed on its own (the others were then terminated)."""
    records_delivered: int = 0
    lines: list[list[str]] = field(default_factory=list)
    """Each process's stdout lines (also echoed, prefixed with its id)."""

    @property
    def exit_code(self) -> int:
        if self.failed is not None:
            return self.returncodes[self.failed] or 1
        if self.stopped:
            return 130
        return next((rc for rc in self.returncodes if rc != 0), 0)


def first_failure(returncodes: list[int | None]) -> int | None:
    """The process whose end most likely brought the cluster down, among those ended.

    When a Bytewax process vanishes its peers panic ("Send thread panic") and exit 1
    within the same moment, so the first non-zero code seen is often a victim's: a
    process killed by a signal (a negative code: kill -9, the OOM killer) is preferred.
    """
    failed = [k for k, rc in enumerate(returncodes) if rc not in (None, 0)]
    killed = [k for k in failed if returncodes[k] < 0]  # type: ignore[operator]
    return (killed or failed or [None])[0]


def describe_exit(returncode: int) -> str:
    """`exit 1`, or `killed by SIGKILL` for a negative (signal) code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM if the launcher dies (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _relay(
    stream: IO[str], prefix: str, out: IO[str], keep: list[str] | None, lock: threading.Lock
) -> None:
    for line in stream:
        if keep is not None:
            keep.append(line.rstrip("\n"))
        with lock:
            out.write(f"{prefix}{line}")
            out.flush()


def run_local_cluster(
    processes: int,
    argv_for: Callable[[int, str], list[str]],
    *,
    env: dict[str, str] | None = None,
    grace: float = 30.0,
    poll: float = 0.1,
) -> ClusterResult:
    """Start `processes` children (`argv_for(k, "a;b;...")`) and wait for all of them.

    Each child runs in its own process group, so a terminal's Ctrl-C reaches the
    launcher only; SIGINT and SIGTERM are forwarded to every child that still runs.
    When a child fails (non-zero exit) while no signal was forwarded, the others are
    sent SIGTERM (a Bytewax cluster cannot go on without one of its processes) and
    killed after `grace` seconds. Child output is echoed line by line, prefixed `[k]`.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    joined = ";".join(local_addresses(processes))
    lock = threading.Lock()
    children: list[subprocess.Popen[str]] = []
    lines: list[list[str]] = [[] for _ in range(processes)]
    relays: list[threading.Thread] = []
    stopped = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopped
        stopped = True
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                    child.send_signal(signum)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, forward)
    try:
        for k in range(processes):
            child = subprocess.Popen(
                argv_for(k, joined),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                process_group=0,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            children.append(child)
            for stream, out, keep in (
                (child.stdout, sys.stdout, lines[k]),
                (child.stderr, sys.stderr, None),
            ):
                assert stream is not None
                t = threading.Thread(
                    target=_relay, args=(stream, f"[{k}] ", out, keep, lock), daemon=True
                )
                t.start()
                relays.append(t)
        failed: int | None = None
        deadline: float | None = None
        while [c.poll() for c in children].count(None):  # poll() each: no short cut
            if failed is None and not stopped:
                failed = first_failure([c.returncode for c in children])
                if failed is not None:
                    log.error(
                        "process %d: %s; stopping the other processes",
                        failed,
                        describe_exit(children[failed].returncode),
                    )
                    for other in children:
                        if other.poll() is None:
                            with contextlib.suppress(ProcessLookupError):
                                other.terminate()
                    deadline = time.monotonic() + grace
            if stopped and deadline is None:
                deadline = time.monotonic() + grace
            if deadline is not None and time.monotonic() > deadline:
                for c in children:
                    if c.poll() is None:
                        log.error("process %d did not stop within %gs; killing it", c.pid, grace)
                        c.kill()
            time.sleep(poll)
    finally:
        for c in children:  # an exception here must not leave a cluster behind
            if c.poll() is None:
                c.kill()
                c.wait()
        if in_main:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    for t in relays:
        t.join(timeout=5)
    codes = [c.returncode for c in children]
    if failed is None and not stopped:  # all ended between two polls
        failed = first_failure(codes)
    delivered = 0
    for out in lines:
        for line in out:
            m = _CAUGHT_UP.match(line)
            if m:
                delivered += int(m.group(1).replace(",", ""))
    return ClusterResult(codes, stopped, failed, delivered, lines)
