"""The cyclic garbage collector, tuned for a dataflow whose state only grows.

Almost everything a run allocates is either short-lived and acyclic (freed by reference
counting) or state that lives for the run (orders, windows, holds). CPython's default
thresholds (700, 10, 10) still run a young collection every 700 container allocations
and, as the state grows, full collections that walk all of it, to free almost nothing
(a 200k-event replay: 12 full collections, 5 objects freed in all). So, where a run
starts (replay, live run, every process of a cluster):

- `gc.freeze()` what start-up (and a restore from snapshots) built: the collector never
  walks it again;
- collect the young generation every `GC_THRESHOLD[0]` allocations instead of 700.

Cycles are still collected, only less often; frozen objects are still freed by
reference counting. `pipeline.gc_tuning: false` switches all of it off (the benchmark
runs both, side by side: `python -m benchmarks.replay_bench --gc`).
"""

from __future__ import annotations

import gc

GC_THRESHOLD = (50_000, 20, 100)
"""Measured on replay (200k events): +10% events/s over the default, as much as with the
collector off; the same peak RSS."""

_tuned = False


def tune_gc(enabled: bool = True) -> None:
    """At the start of a run: freeze what start-up built, collect less often."""
    global _tuned
    if not enabled:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    _tuned = True


def freeze_restored() -> None:
    """After a step restored its state from a snapshot (once `tune_gc` ran): freeze it,
    it lives for the run. Cheap (a list splice), so every step calls it for itself."""
    if _tuned:
        gc.freeze()
