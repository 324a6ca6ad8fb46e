"""The live path: Kafka in, Kafka out, with Bytewax recovery always on.

A restart resumes from the last snapshot (input offsets and all shard state), so
outputs are at least once: what was emitted after the last snapshot is emitted
again, with the same record ids, for consumers to de-duplicate.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

from connectors.broker import BrokerError, ensure_topics
from connectors.kafka_sink import KafkaOutputSink
from connectors.kafka_source import KafkaInputSource, stream_of_part
from dataflows.flow import build_flow
from dataflows.router import index_shards
from schemas.config import Settings

CONNECT_TIMEOUT = 5.0
"""Seconds to wait for the broker's first answer: a wrong address should fail fast."""


class RecoveryDirError(RuntimeError):
    """The recovery directory cannot be used (not a directory, not writable, not a store)."""


class Stopped(Exception):
    """The run was stopped by SIGINT or SIGTERM; it resumes from the last snapshot."""


@dataclass
class LiveResult:
    """What a run that ended (caught up) did; a run that never ends never returns one."""

    topics_created: list[str]
    recovery_initialized: bool
    records_delivered: int


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Bytewax stops on SIGINT only; an orchestrator sends SIGTERM: treat it the same."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def prepare_recovery(settings: Settings) -> bool:
    """Initialize the recovery store on first use; return whether it was initialized now.

    An existing non-empty directory is left alone: it holds a previous run's
    snapshots (or something that is not a store, which Bytewax then refuses).
    """
    from bytewax.recovery import init_db_dir

    rdir = settings.recovery.dir
    if rdir.exists() and not rdir.is_dir():
        raise RecoveryDirError(f"recovery.dir {rdir} is not a directory")
    if rdir.is_dir() and any(rdir.iterdir()):
        if not any(rdir.glob("part-*.sqlite3")):
            raise RecoveryDirError(
                f"recovery.dir {rdir} is not empty and holds no Bytewax recovery partitions"
            )
        _check_layout(settings)
        return False
    try:
        rdir.mkdir(parents=True, exist_ok=True)
        init_db_dir(rdir, settings.recovery.partitions)
        (rdir / LAYOUT_FILE).write_text(json.dumps(_layout(settings)) + "\n")
    except OSError as e:
        raise RecoveryDirError(f"cannot initialize recovery.dir {rdir}: {e}") from None
    return True


LAYOUT_FILE = "orderguard-layout.json"
"""The shard layout a store was written with: state is keyed by shard, and the
barriers wait for every shard, so another layout would orphan the state and stall."""


def _layout(settings: Settings) -> dict[str, int]:
    return {"shards": settings.pipeline.shards, "index_shards": index_shards(settings)}


def _check_layout(settings: Settings) -> None:
    path = settings.recovery.dir / LAYOUT_FILE
    want = _layout(settings)
    try:
        have = json.loads(path.read_text())
    except FileNotFoundError:
        path.write_text(json.dumps(want) + "\n")  # a store from before the layout was kept
        return
    except (OSError, ValueError) as e:
        raise RecoveryDirError(f"cannot read {path}: {e}") from None
    if have != want:
        raise RecoveryDirError(
            f"recovery.dir {settings.recovery.dir} was written with pipeline.shards="
            f"{have.get('shards')}; this configuration says {want['shards']}. Keep the "
            "shard count, or start from a new recovery.dir (the old state would be orphaned)"
        )


def run_live(
    settings: Settings,
    *,
    workers: int = 1,
    exit_when_caught_up: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> LiveResult:
    """Create missing topics, initialize recovery, run the dataflow until stopped.

    With `exit_when_caught_up` every input partition ends once it has been read to
    its end, and the run returns; otherwise it runs until SIGINT or SIGTERM, which
    raise `Stopped`. Raises
    `BrokerUnreachable` (a `BrokerError`) with a one-line message when the broker
    does not answer within `connect_timeout` seconds.
    """
    from bytewax.errors import BytewaxRuntimeError
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    kafka = settings.kafka
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    client = kafka.client_config()
    created = ensure_topics(
        kafka.bootstrap_servers, kafka.topic_partitions(), timeout=connect_timeout, config=client
    )
    initialized = prepare_recovery(settings)

    source = KafkaInputSource(
        kafka.bootstrap_servers,
        kafka.input_topics.model_dump(),
        config=client,
        batch_size=settings.pipeline.batch_size,
        stop_at_eof=exit_when_caught_up,
        metadata_timeout=connect_timeout,
    )
    sink = KafkaOutputSink(
        kafka.bootstrap_servers,
        kafka.output_topics.model_dump(),
        config=client,
        flush_timeout=kafka.flush_timeout / 1000,
    )
    flow = build_flow(settings, source, sink, stream_of=stream_of_part, recovery=True)
    recovery = RecoveryConfig(
        settings.recovery.dir,
        backup_interval=timedelta(milliseconds=settings.recovery.backup_interval),
    )
    try:
        with _sigterm_as_interrupt():
            cli_main(
                flow,
                workers_per_process=workers,
                epoch_interval=timedelta(milliseconds=settings.recovery.snapshot_interval),
                recovery_config=recovery,
            )
    except KeyboardInterrupt:
        raise Stopped() from None
    except BytewaxRuntimeError as e:
        # Bytewax reports a signal it noticed as a runtime error ("signal received").
        if isinstance(e.__cause__, KeyboardInterrupt) or "signal received" in str(e):
            raise Stopped() from None
        raise
    delivered = sum(p.delivered for p in sink.partitions)
    return LiveResult(created, initialized, delivered)


__all__ = [
    "BrokerError",
    "LiveResult",
    "RecoveryDirError",
    "Stopped",
    "prepare_recovery",
    "run_live",
]
