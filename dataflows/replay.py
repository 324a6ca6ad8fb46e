"""Run the dataflow over recorded input and summarize what came out.

`processes` (`orderguard replay --processes N`): the recording is first split into the
partitions Kafka would have put its envelopes in (`connectors.replay.KafkaSplit`), then
read by N local processes (`dataflows.cluster.run_local_cluster`, each one
`python -m dataflows.replay`) as `orderguard run --processes N` reads Kafka. The split
does not depend on N, and every step handles its lines in one canonical order, so
the outputs are the same for every N (and worker count).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
from dataflows.flow import build_flow, wall_clock_ms
from schemas.config import Settings, load_settings


class ReplayFailed(RuntimeError):
    """A process of a multi-process replay failed (the others were stopped)."""


@dataclass
class Summary:
    events_in: int = 0
    seconds: float = 0.0
    split_seconds: float = 0.0
    """Splitting the recording into Kafka's partitions (`--processes`), before `seconds`."""
    processes: int | None = None
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
) -> Summary:
    """Replay `inputs` through the dataflow; write one JSONL file per output topic.

    `wall_clock`: what "now" is for the `received_at` bound (tests pin it; with
    `processes` > 1 each process reads its own). `processes`: split the input into
    Kafka's partitions and run this many processes (None: one partition, in this
    process); they load `config_path` (None: the default), as `settings` was loaded.
    Raises `ReplayFailed` if a process fails.
    """
    from bytewax.testing import cluster_main, run_main

    from dataflows.gc_tuning import tune_gc

    out_dir.mkdir(parents=True, exist_ok=True)
    parts = out_dir / ".parts"
    if parts.exists():
        shutil.rmtree(parts)
    batch = batch_size or settings.pipeline.batch_size
    summary = Summary(processes=processes)
    progress = Progress(show=show_progress if processes is None else False)
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
        source = SplitReplaySource(split_dir, split.parts(), inputs, batch)
    tune_gc(settings.pipeline.gc_tuning)
    started = time.perf_counter()
    try:
        if processes is not None and processes > 1:
            _run_processes(processes, workers, batch, inputs, out_dir, config_path)
        else:
            flow = build_flow(
                settings,
                source,
                PartsSink(parts),
                wall_clock=wall_clock,
                observer=Metrics(),
                parts=source.list_parts(),
            )
            if workers == 1:
                run_main(flow)
            else:
                cluster_main(flow, [], 0, worker_count_per_proc=workers)
    finally:
        if processes is not None:
            shutil.rmtree(out_dir / ".split", ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    progress.done()
    summary.events_in = progress.read
    summary.counts = merge_parts(parts, out_dir, summary.observe if summarize else None)
    return summary


def _run_processes(
    processes: int,
    workers: int,
    batch_size: int,
    inputs: list[Path],
    out_dir: Path,
    config_path: Path | None,
) -> None:
    from dataflows.cluster import describe_exit, run_local_cluster

    args = ["-w", str(workers), "--batch-size", str(batch_size), "--out", str(out_dir)]
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

    from dataflows.cluster import parse_addresses
    from dataflows.gc_tuning import tune_gc

    ap = argparse.ArgumentParser(prog="python -m dataflows.replay")
    ap.add_argument("-i", "--process-id", type=int, required=True)
    ap.add_argument("-a", "--addresses", required=True)
    ap.add_argument("-w", "--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("inputs", type=Path, nargs="+")
    args = ap.parse_args(argv)
    settings = load_settings(args.config)
    split = KafkaSplit(settings)
    source = SplitReplaySource(args.out / ".split", split.parts(), args.inputs, args.batch_size)
    flow = build_flow(
        settings,
        source,
        PartsSink(args.out / ".parts"),
        observer=Metrics(),
        parts=split.parts(),
    )
    tune_gc(settings.pipeline.gc_tuning)
    cluster_main(
        flow,
        parse_addresses(args.addresses),
        args.process_id,
        worker_count_per_proc=args.workers,
    )


if __name__ == "__main__":  # pragma: no cover - a child of run_replay
    _process_main()
