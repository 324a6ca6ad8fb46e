"""Run the dataflow over recorded input and summarize what came out."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from connectors.replay import PartsSink, Progress, ReplaySource, merge_parts
from dataflows.flow import build_flow, wall_clock_ms
from schemas.config import Settings


@dataclass
class Summary:
    events_in: int = 0
    seconds: float = 0.0
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
) -> Summary:
    """Replay `inputs` through the dataflow; write one JSONL file per output topic.

    `wall_clock`: what "now" is for the `received_at` bound (tests pin it)."""
    from bytewax.testing import cluster_main, run_main

    from dataflows.gc_tuning import tune_gc

    out_dir.mkdir(parents=True, exist_ok=True)
    parts = out_dir / ".parts"
    if parts.exists():
        shutil.rmtree(parts)
    progress = Progress(show=show_progress)
    source = ReplaySource(inputs, batch_size or settings.pipeline.batch_size, progress)
    flow = build_flow(settings, source, PartsSink(parts), wall_clock=wall_clock)
    tune_gc(settings.pipeline.gc_tuning)
    started = time.perf_counter()
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    elapsed = time.perf_counter() - started
    progress.done()
    summary = Summary(events_in=progress.read, seconds=elapsed)
    summary.counts = merge_parts(parts, out_dir, summary.observe if summarize else None)
    return summary
