"""The live path: Kafka in, Kafka out, with Bytewax recovery always on.

A restart resumes from the last snapshot (input offsets and all shard state), so
outputs are at least once: what was emitted after the last snapshot is emitted
again, with the same record ids, for consumers to de-duplicate.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from connectors.broker import BrokerError, ensure_topics
from connectors.increments import IncrementsError, chain_dir, check_chain
from connectors.kafka_sink import KafkaOutputSink
from connectors.kafka_source import KafkaInputSource, MissingTopicError, stream_of_part
from connectors.metrics import Metrics, serve
from connectors.processes import await_listening, stop_signals_interrupt
from connectors.recovery_store import (
    PARTITION_GLOB,
    RecoveryStoreError,
    drop_unfinished_snapshots,
    mark_running,
    marked_running,
    read_progress,
    resumed_snapshots,
    unmark_running,
)
from connectors.redis_view import RedisViewSink
from dataflows.flow import FLOW_ID, Chained, build_flow
from dataflows.gc_tuning import tune_gc
from dataflows.router import index_shards
from schemas.config import Settings
from schemas.keys import DEFAULT_PARTITIONER, KEY_FUNCTION
from state.watermark import Alignment

log = logging.getLogger("orderguard.recovery")

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


def prepare_recovery(settings: Settings, input_partitions: dict[str, int] | None = None) -> bool:
    """Initialize the recovery store on first use; return whether it was initialized now.

    `input_partitions` (partitions per input stream, as found on the broker) is
    recorded in the layout and checked on every later start (`compare_layout`).

    An existing non-empty directory is left alone: it holds a previous run's
    snapshots (or something that is not a store, which Bytewax then refuses).
    """
    from bytewax.recovery import init_db_dir

    rdir = settings.recovery.dir
    if rdir.exists() and not rdir.is_dir():
        raise RecoveryDirError(f"recovery.dir {rdir} is not a directory")
    if rdir.is_dir() and any(rdir.iterdir()):
        if not any(rdir.glob(PARTITION_GLOB)):
            raise RecoveryDirError(
                f"recovery.dir {rdir} is not empty and holds no Bytewax recovery partitions"
            )
        _check_layout(settings, input_partitions)
        resume_epoch = _drop_unfinished_snapshots(rdir)
        if resume_epoch is not None:  # None: unused, or a share of a split store
            _check_increments(rdir, resume_epoch)
        return False
    try:
        rdir.mkdir(parents=True, exist_ok=True)
        init_db_dir(rdir, settings.recovery.partitions)
        (rdir / LAYOUT_FILE).write_text(json.dumps(_layout(settings, input_partitions)) + "\n")
    except OSError as e:
        raise RecoveryDirError(f"cannot initialize recovery.dir {rdir}: {e}") from None
    return True


def _drop_unfinished_snapshots(rdir: Path) -> int | None:
    """Before a run: snapshots a killed run left of epochs it never completed would be
    loaded by a later resume beside newer state (`connectors.recovery_store`). Returns
    the epoch the run resumes at (None for an unused store or a share)."""
    try:
        pruned = drop_unfinished_snapshots(rdir)
    except RecoveryStoreError as e:
        raise RecoveryDirError(str(e)) from None
    if pruned.dropped:  # nothing with a share (pruned.missing): see claim_share
        log.info(
            "dropped %d snapshots of epochs from %d on, which no run completed",
            pruned.dropped,
            pruned.resume_epoch,
        )
    return pruned.resume_epoch


def _check_increments(rdir: Path, resume_epoch: int) -> None:
    """Before a run: the chain of increments every resumed step names is all here
    (`connectors.increments`), so a store whose `increments/` did not move with it is
    refused in one line now, not from inside Bytewax once it restores the step. A share
    of a split store is not checked (no resume epoch is known there): its keys' chains
    are on the machines that run them."""
    prefix = f"{FLOW_ID}."
    try:
        for step_id, _key, snapshot in resumed_snapshots(rdir, resume_epoch):
            state = pickle.loads(snapshot) if isinstance(snapshot, bytes) else None
            if isinstance(state, Chained):
                step = step_id.removeprefix(prefix)
                check_chain(chain_dir(rdir, step, state.name), state.version)
    except (RecoveryStoreError, IncrementsError) as e:
        raise RecoveryDirError(str(e)) from None


def claim_share(rdir: Path) -> bool:
    """Before a run: with only a share of the store here (one machine of several), its
    stale snapshots cannot be dropped here, so refuse a share a run did not end cleanly
    on, and mark it for this run. Returns whether `rdir` holds a share."""
    try:
        progress = read_progress(rdir)
        if not progress.missing:
            return False
        marked = marked_running(rdir)
        if marked:
            raise RecoveryDirError(
                f"recovery.dir {rdir} holds a share of the store (partitions "
                f"{', '.join(map(str, progress.missing))} are elsewhere) and the last run "
                "here did not end by itself, so it may hold snapshots of epochs that run "
                "never completed. Stop every process of the cluster, gather all "
                "part-*.sqlite3 files in one directory, run `python -m "
                "connectors.recovery_store DIR` there, move the files back to their "
                'machines and start again (docs/scale-out.md, "Several machines")'
            )
        mark_running(rdir)
    except RecoveryStoreError as e:
        raise RecoveryDirError(str(e)) from None
    return True


LAYOUT_FILE = "orderguard-layout.json"
"""The shard layout a store was written with: state is keyed by shard and partition,
and every step waits for every partition, so another layout would orphan the state
and stall."""


LAYOUT_VERSION = 9
"""Bumped when the dataflow's stateful steps change shape (2: the input sequencer;
3: two more times per order, for the stage durations; 4: forced breakers, and
operator commands in the order shards' barrier; 5: the sequencer's plausible-time
limits; 6: the reference index in place of the tracking index, known refs per order;
7: the barriers hold the typed messages of `dataflows.messages`, not tuples; 8: no
sequencer: merge keys stamped per partition, each step merging to its watermark; orders
as packed arrays, snapshots in columns, the timer wheel rebuilt on restore; 9: orders and
references in chains of increments beside the store, `connectors.increments`)."""


def _layout(settings: Settings, input_partitions: dict[str, int] | None) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "version": LAYOUT_VERSION,
        "shards": settings.pipeline.shards,
        "index_shards": index_shards(settings),
        "partitioner": str(settings.kafka.client.get("partitioner", DEFAULT_PARTITIONER)),
        "key_function": KEY_FUNCTION,
    }
    if input_partitions is not None:
        layout["input_partitions"] = dict(sorted(input_partitions.items()))
    return layout


def input_partition_counts(parts: list[str]) -> dict[str, int]:
    """Partitions per input stream, from `KafkaInputSource.list_parts` names."""
    return dict(Counter(stream_of_part(p) for p in parts))


def _counts(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return repr(value)


_FIXED = (
    # (layout field, the setting it comes from, what else to do than a new recovery.dir)
    ("shards", "pipeline.shards", "keep the shard count"),
    (
        "input_partitions",
        "the input topics' partition counts on the broker (kafka.partitions, "
        "kafka.input_topics, kafka.control_topic)",
        "restore the old topic layout (topics with the old partition counts)",
    ),
    ("partitioner", "kafka.client partitioner", "restore the old partitioner"),
    (
        "key_function",
        "the message key function (schemas.keys.KEY_FUNCTION)",
        "run the orderguard that wrote it",
    ),
)
"""What is fixed for the life of a store: state is keyed by shard and input offsets
by partition, and a key lands on a partition by the partitioner and the key function,
so a change would orphan state, stall the barriers or split one order's events."""


def compare_layout(have: dict[str, Any], want: dict[str, Any], rdir: Path) -> dict[str, Any]:
    """The layout to keep for a store written with `have`, now started with `want`.

    Raises `RecoveryDirError` naming the setting, both values, `rdir` and what to do
    when a recorded field differs. A field the store does not record yet (written
    before it was kept) is taken from `want`, so an older store keeps working.
    A field `want` lacks (not known at this start) is kept as recorded.
    """
    if have.get("version", 1) != LAYOUT_VERSION:
        raise RecoveryDirError(
            f"recovery.dir {rdir} was written by an older orderguard "
            f"(layout version {have.get('version', 1)}, this one is {LAYOUT_VERSION}) whose "
            "steps hold state differently; start from a new recovery.dir"
        )
    for field, setting, instead in _FIXED:
        if field in have and field in want and have[field] != want[field]:
            raise RecoveryDirError(
                f"recovery.dir {rdir} was written with {setting} = {_counts(have[field])}; "
                f"this start has {_counts(want[field])}. It is fixed for the life of a "
                f"recovery store: start from a new recovery.dir, or {instead}"
            )
    return {**want, **have}  # index_shards follows from shards


def _check_layout(settings: Settings, input_partitions: dict[str, int] | None = None) -> None:
    path = settings.recovery.dir / LAYOUT_FILE
    want = _layout(settings, input_partitions)
    try:
        have = json.loads(path.read_text())
    except FileNotFoundError:
        path.write_text(json.dumps(want) + "\n")  # a store from before the layout was kept
        return
    except (OSError, ValueError) as e:
        raise RecoveryDirError(f"cannot read {path}: {e}") from None
    keep = compare_layout(have, want, settings.recovery.dir)
    if keep != have:  # a store from before a field was kept: record it now
        try:
            path.write_text(json.dumps(keep) + "\n")
        except OSError as e:
            raise RecoveryDirError(f"cannot write {path}: {e}") from None


SETUP_TIMEOUT = 60.0
"""Seconds a process other than 0 waits for process 0 to create topics and the store."""


def setup_live(
    settings: Settings,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    source: KafkaInputSource | None = None,
) -> tuple[list[str], bool]:
    """Create missing topics and initialize the recovery store (one process does this).

    The input topics' partition counts are those found on the broker (a topic that
    existed keeps its own), recorded in the store and checked against it.
    Returns the topics created and whether the store was initialized now.
    """
    kafka = settings.kafka
    created = ensure_topics(
        kafka.bootstrap_servers,
        kafka.topic_partitions(),
        timeout=connect_timeout,
        config=kafka.client_config(),
    )
    if source is None:
        source = KafkaInputSource(
            kafka.bootstrap_servers,
            kafka.source_topics(),
            config=kafka.client_config(),
            metadata_timeout=connect_timeout,
        )
    try:
        counts = input_partition_counts(source.list_parts())
    except MissingTopicError as e:
        raise RecoveryDirError(f"cannot count the input partitions: {e}") from None
    return created, prepare_recovery(settings, counts)


def wait_for_setup(
    settings: Settings,
    source: KafkaInputSource,
    *,
    timeout: float = SETUP_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> None:
    """For processes other than 0: wait until process 0 (or the launcher) has set up.

    Only one process creates topics and initializes the store, so that processes
    starting together do not race. The store is complete once its layout file is
    written (after the partitions). On another machine the directory must hold
    this machine's share of the partition files and the layout file (docs/scale-out.md).
    """
    kafka = settings.kafka
    rdir = settings.recovery.dir
    # the broker must answer at all: fail fast on a wrong address, as process 0 does
    client = kafka.client_config()
    ensure_topics(kafka.bootstrap_servers, {}, timeout=connect_timeout, config=client)
    deadline = time.monotonic() + timeout
    counts: dict[str, int] | None = None
    while True:
        missing = ""
        if not (rdir / LAYOUT_FILE).is_file() or not any(rdir.glob(PARTITION_GLOB)):
            missing = (
                f"recovery.dir {rdir} holds no initialized store (part-*.sqlite3 and "
                f"{LAYOUT_FILE}); process 0 initializes it, and on another machine it must "
                "hold this machine's share of the partition files"
            )
        else:
            try:
                counts = input_partition_counts(source.list_parts())
            except MissingTopicError as e:
                missing = str(e)
        if not missing:
            break
        if time.monotonic() > deadline:
            raise RecoveryDirError(f"gave up after {timeout:g}s waiting for process 0: {missing}")
        time.sleep(0.2)
    _check_layout(settings, counts)


def run_live(
    settings: Settings,
    *,
    workers: int = 1,
    exit_when_caught_up: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT,
    process_id: int | None = None,
    addresses: list[str] | None = None,
    setup_timeout: float = SETUP_TIMEOUT,
) -> LiveResult:
    """Create missing topics, initialize recovery, run the dataflow until stopped.

    With `exit_when_caught_up` every input partition ends once it has been read to
    its end, and the run returns; otherwise it runs until SIGINT or SIGTERM, which
    raise `Stopped`. Raises
    `BrokerUnreachable` (a `BrokerError`) with a one-line message when the broker
    does not answer within `connect_timeout` seconds.

    In a cluster (`process_id` and `addresses`, Bytewax's `-i`/`-a`) process 0 sets
    up topics and the store; the others wait up to `setup_timeout` seconds for it.
    Process 0 (or a single process) warns when the input partitions do not spread
    evenly over all workers (bytewax#556, see `dataflows.cluster`).
    """
    from bytewax.recovery import RecoveryConfig
    from bytewax.testing import cluster_main

    from dataflows.cluster import check_process_id, warn_if_unbalanced

    kafka = settings.kafka
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if (process_id is None) != (addresses is None):
        raise ValueError("process_id and addresses go together")
    if process_id is not None and addresses is not None:
        check_process_id(process_id, addresses)
    processes = len(addresses) if addresses else 1
    client = kafka.client_config()
    alignment = Alignment(settings.pipeline.max_partition_skew)
    source = KafkaInputSource(
        kafka.bootstrap_servers,
        kafka.source_topics(),
        config=client,
        batch_size=settings.pipeline.batch_size,
        stop_at_eof=exit_when_caught_up,
        metadata_timeout=connect_timeout,
        alignment=alignment,
    )
    if not process_id:
        created, initialized = setup_live(settings, connect_timeout=connect_timeout, source=source)
        # the control topic is nearly idle: its partition cannot unbalance the workers
        parts = sum(stream_of_part(p) != "control" for p in source.list_parts())
        warn_if_unbalanced(parts, processes * workers, per_topic=kafka.partitions)
    else:
        created, initialized = [], False
        try:
            with stop_signals_interrupt():
                wait_for_setup(
                    settings, source, timeout=setup_timeout, connect_timeout=connect_timeout
                )
        except KeyboardInterrupt:
            raise Stopped() from None
    part_names = source.list_parts()
    sink = KafkaOutputSink(
        kafka.bootstrap_servers,
        kafka.output_topics.model_dump(),
        part_names,
        config=client,
        flush_timeout=kafka.flush_timeout / 1000,
        limits=settings.limits,
    )
    view_sink = RedisViewSink(settings.redis) if settings.redis.url else None
    flow = build_flow(
        settings,
        source,
        sink,
        stream_of=stream_of_part,
        recovery=settings.recovery.dir,
        view_sink=view_sink,
        observer=Metrics(),
        parts=part_names,
        alignment=alignment,
    )
    metrics = settings.metrics
    if metrics.port:
        serve(metrics.host, metrics.port + (process_id or 0))
    page = settings.page
    if page.port:
        from dataflows.page import PageError, PageServer

        if not metrics.port:
            raise PageError("page.port needs metrics.port: the page reads the metrics endpoint")

        k = process_id or 0
        here = f"http://{metrics.host}:{metrics.port + k}/metrics"
        PageServer(here, settings.redis, page.host, page.port + k).start()
    recovery = RecoveryConfig(
        settings.recovery.dir,
        backup_interval=timedelta(milliseconds=settings.recovery.backup_interval),
    )
    tune_gc(settings.pipeline.gc_tuning)  # every process of a cluster runs this
    share = claim_share(settings.recovery.dir)
    if addresses and process_id:
        await_listening(addresses[:process_id])
    try:
        # cluster_main even for one worker in one process (cli_main would take run_main):
        # its main thread notices the signal and the workers stop on a shared flag, while
        # run_main's worker stops by panicking, and Rust prints the panic on stderr.
        with stop_signals_interrupt():
            cluster_main(
                flow,
                addresses,
                process_id or 0,
                epoch_interval=timedelta(milliseconds=settings.recovery.snapshot_interval),
                recovery_config=recovery,
                worker_count_per_proc=workers,
            )
    except KeyboardInterrupt:
        raise Stopped() from None  # interrupted mid-epoch: the share stays marked
    if share:
        unmark_running(settings.recovery.dir)
    delivered = sum(p.delivered for p in sink.producers)
    return LiveResult(created, initialized, delivered)


__all__ = [
    "BrokerError",
    "LiveResult",
    "RecoveryDirError",
    "Stopped",
    "prepare_recovery",
    "run_live",
    "setup_live",
    "wait_for_setup",
]
