"""Run the dataflow over recorded input and summarize what came out.

`processes` (`orderguard replay --processes N`): the recording is first split into the
partitions Kafka would have put its envelopes in (`connectors.replay.KafkaSplit`), then
read by N local processes (`dataflows.cluster.run_local_cluster`, each one
`python -m dataflows.replay`) as `orderguard run --processes N` reads Kafka. The split
does not depend on N, and every step handles its lines in one canonical order, so
the outputs are the same for every N (and worker count).

`recovery_dir` (`orderguard replay --recovery-dir`): Bytewax snapshots at every epoch
close (`snapshot_interval`) into a store (`dataflows.replay_recovery`), and the same
replay run again after a kill resumes from the last completed epoch instead of the
start. Outputs are then at least once: records written after that epoch are written
again, identical but for `emitted_at`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from connectors.metrics import Metrics
from connectors.replay import (
    KafkaSplit,
    PartsSink,
    Progress,
    ReplaySource,
    SplitReplaySource,
    merge_parts,
    split_recording,
)
from dataflows.flow import build_flow
from schemas.config import Settings, load_settings
from schemas.timeparse import wall_clock_ms
from state.watermark import Alignment


class ReplayFailed(RuntimeError):
    """A process of a multi-process replay failed (the others were stopped)."""


@dataclass
class Summary:
    events_in: int = 0
    seconds: float = 0.0
    split_seconds: float = 0.0
    """Splitting the recording into Kafka's partitions (`--processes`), before `seconds`."""
    processes: int | None = None
    resumed: bool | None = None
    """With a recovery dir: whether the run resumed from its snapshots (None: no store)."""
    counts: dict[str, int] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    alerts_firing: Counter[str] = field(default_factory=Counter)
    alerts_resolved: Counter[str] = field(default_factory=Counter)
    breaker_changes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)

    def observe(self, topic: str, line: bytes) -> None:
        doc = orjson.loads(line)
        if topic == "dead_letters":
            self.dead_letters[doc["reason"]] += 1
        elif topic == "alerts":
            target = self.alerts_firing if doc["state"] == "firing" else self.alerts_resolved
            target[doc["type"]] += 1
        elif topic == "breakers":
            # customers are many: count them by state; channels and carriers by key
            key = "customers" if doc["breaker"] == "customer" else f"{doc['breaker']}:{doc['key']}"
            self.breaker_changes[f"{key} -> {doc['state']}"] += 1
        elif topic == "corrected":
            self.statuses[doc["status"]] += 1

    def render(self) -> str:
        rate = self.events_in / self.seconds if self.seconds else 0.0
        lines = [
            f"events in        {self.events_in:>10,}   "
            f"({rate:,.0f} events/s over {self.seconds:.1f} s)",
        ]
        if self.processes is not None:
            lines.append(
                f"processes        {self.processes:>10,}   (after splitting the input into "
                f"Kafka's partitions in {self.split_seconds:.1f} s)"
            )
        if self.resumed is not None:
            how = "resumed from its last snapshot" if self.resumed else "started afresh"
            lines.append(f"recovery         {how}")
        lines += [
            f"dead letters     {self.counts.get('dead_letters', 0):>10,}",
            f"corrections      {self.counts.get('corrected', 0):>10,}",
            f"alerts           {self.counts.get('alerts', 0):>10,}",
            f"breaker changes  {self.counts.get('breakers', 0):>10,}",
        ]
        if self.dead_letters:
            lines.append("dead letters by reason:")
            lines += [f"  {k:<28}{v:>8,}" for k, v in sorted(self.dead_letters.items())]
        if self.alerts_firing:
            lines.append("alerts by type (firing / resolved):")
            for k in sorted(self.alerts_firing):
                lines.append(
                    f"  {k:<28}{self.alerts_firing[k]:>8,} / {self.alerts_resolved.get(k, 0):,}"
                )
        if self.breaker_changes:
            lines.append("breaker changes:")
            lines += [f"  {k:<40}{v:>6,}" for k, v in sorted(self.breaker_changes.items())]
        if self.statuses:
            lines.append("corrected statuses:")
            lines += [f"  {k:<28}{v:>8,}" for k, v in self.statuses.most_common()]
        return "\n".join(lines)


def run_replay(
    settings: Settings,
    inputs: list[Path],
    out_dir: Path,
    *,
    workers: int = 1,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    summarize: bool = True,
    wall_clock: Callable[[], int] = wall_clock_ms,
    processes: int | None = None,
    config_path: Path | None = None,
    recovery_dir: Path | None = None,
    snapshot_interval: float | None = None,
) -> Summary:
    """Replay `inputs` through the dataflow; write one JSONL file per output topic.

    `wall_clock`: what "now" is for the `received_at` bound (tests pin it; with
    `processes` > 1 each process reads its own). `processes`: split the input into
    Kafka's partitions and run this many processes (None: one partition, in this
    process); they load `config_path` (None: the default), as `settings` was loaded.
    `recovery_dir`: snapshot every `snapshot_interval` seconds (None: the configured
    `recovery.snapshot_interval`) and resume an unfinished replay of the same inputs
    from there. Raises `ReplayFailed` if a process fails, `RecoveryDirError` for a
    store that is not this replay's.
    """
    from bytewax.testing import cluster_main, run_main

    from dataflows.gc_tuning import tune_gc

    out_dir.mkdir(parents=True, exist_ok=True)
    batch = batch_size or settings.pipeline.batch_size
    summary = Summary(processes=processes)
    store = None
    if recovery_dir is not None:
        from dataflows.replay_recovery import prepare_replay_store

        names = KafkaSplit(settings).parts() if processes is not None else ["replay"]
        store = prepare_replay_store(settings, recovery_dir, inputs, names)
        summary.resumed = store.resumed
        parts = store.parts
        if snapshot_interval is None:
            snapshot_interval = settings.recovery.snapshot_interval / 1000
    else:
        parts = out_dir / ".parts"
        if parts.exists():
            shutil.rmtree(parts)
    progress = Progress(show=show_progress if processes is None else False)
    alignment = None
    if processes is None:
        source: ReplaySource | SplitReplaySource = ReplaySource(inputs, batch, progress)
    else:
        split_dir = out_dir / ".split"
        if split_dir.exists():
            shutil.rmtree(split_dir)
        started = time.perf_counter()
        split = KafkaSplit(settings)
        progress.read = split_recording(inputs, split_dir, split)
        summary.split_seconds = time.perf_counter() - started
        alignment = Alignment(settings.pipeline.max_partition_skew)
        source = SplitReplaySource(split_dir, split.parts(), inputs, batch, alignment)
    tune_gc(settings.pipeline.gc_tuning)
    started = time.perf_counter()
    try:
        if processes is not None and processes > 1:
            extra = [] if store is None else _recovery_args(store.dir, snapshot_interval)
            _run_processes(processes, workers, batch, inputs, out_dir, config_path, extra)
        else:
            flow = build_flow(
                settings,
                source,
                PartsSink(parts, flush=store is not None),
                wall_clock=wall_clock,
                recovery=None if store is None else store.dir,
                observer=Metrics(),
                parts=source.list_parts(),
                alignment=alignment,
            )
            kwargs = {} if store is None else _recovery_kwargs(store.dir, snapshot_interval)
            if workers == 1:
                run_main(flow, **kwargs)
            else:
                cluster_main(flow, [], 0, worker_count_per_proc=workers, **kwargs)
    finally:
        if processes is not None:
            shutil.rmtree(out_dir / ".split", ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    progress.done()
    summary.events_in = progress.read
    on_line = summary.observe if summarize else None
    summary.counts = merge_parts(parts, out_dir, on_line, keep=store is not None)
    if store is not None:
        from dataflows.replay_recovery import mark_complete

        mark_complete(store)
    return summary


def _recovery_kwargs(rdir: Path, snapshot_interval: float | None) -> dict[str, Any]:
    """`run_main`/`cluster_main` arguments: snapshot at every epoch close."""
    from bytewax.recovery import RecoveryConfig

    assert snapshot_interval is not None
    return {
        "epoch_interval": timedelta(seconds=snapshot_interval),
        "recovery_config": RecoveryConfig(rdir),
    }


def _recovery_args(rdir: Path, snapshot_interval: float | None) -> list[str]:
    return ["--recovery-dir", str(rdir), "--snapshot-interval", repr(snapshot_interval)]


def _run_processes(
    processes: int,
    workers: int,
    batch_size: int,
    inputs: list[Path],
    out_dir: Path,
    config_path: Path | None,
    extra: list[str],
) -> None:
    from dataflows.cluster import describe_exit, run_local_cluster

    args = ["-w", str(workers), "--batch-size", str(batch_size), "--out", str(out_dir), *extra]
    if config_path is not None:
        args += ["--config", str(config_path)]
    me = [sys.executable, "-m", "dataflows.replay"]
    result = run_local_cluster(
        processes, lambda k, joined: [*me, "-i", str(k), "-a", joined, *args, *map(str, inputs)]
    )
    if result.exit_code != 0:
        raise ReplayFailed(
            f"replay process {result.failed} of {processes} failed "
            f"({describe_exit(result.exit_code)}); the others were stopped"
        )


def _process_main(argv: list[str] | None = None) -> None:
    """One process of `run_replay(processes=N)`: the split is in OUT/.split already."""
    from bytewax.testing import cluster_main

    from connectors.processes import await_listening
    from dataflows.cluster import parse_addresses
    from dataflows.gc_tuning import tune_gc

    ap = argparse.ArgumentParser(prog="python -m dataflows.replay")
    ap.add_argument("-i", "--process-id", type=int, required=True)
    ap.add_argument("-a", "--addresses", required=True)
    ap.add_argument("-w", "--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--recovery-dir", type=Path, default=None, help="prepared by the launcher")
    ap.add_argument("--snapshot-interval", type=float, default=None)
    ap.add_argument("inputs", type=Path, nargs="+")
    args = ap.parse_args(argv)
    settings = load_settings(args.config)
    split = KafkaSplit(settings)
    alignment = Alignment(settings.pipeline.max_partition_skew)
    source = SplitReplaySource(
        args.out / ".split", split.parts(), args.inputs, args.batch_size, alignment
    )
    rdir = args.recovery_dir
    if rdir is None:
        sink, kwargs = PartsSink(args.out / ".parts"), {}
    else:
        from dataflows.replay_recovery import PARTS_DIR

        sink = PartsSink(rdir / PARTS_DIR, flush=True)
        kwargs = _recovery_kwargs(rdir, args.snapshot_interval)
    flow = build_flow(
        settings,
        source,
        sink,
        recovery=rdir,
        observer=Metrics(),
        parts=split.parts(),
        alignment=alignment,
    )
    tune_gc(settings.pipeline.gc_tuning)
    addresses = parse_addresses(args.addresses)
    await_listening(addresses[: args.process_id])
    cluster_main(
        flow,
        addresses,
        args.process_id,
        worker_count_per_proc=args.workers,
        **kwargs,
    )


if __name__ == "__main__":  # pragma: no cover - a child of run_replay
    _process_main()
