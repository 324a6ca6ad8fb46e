"""The cyclic garbage collector, tuned for a dataflow whose state only grows.

Almost everything a run allocates is either short-lived and acyclic (freed by reference
counting) or state that lives for the run (orders, windows, holds). CPython's default
thresholds (700, 10, 10) still run ever more full collections that walk all of that
state, to free almost nothing: replaying 806k events (40,000 orders) ran 49 full
collections that freed 5 objects in all, and cost 30.9 CPU seconds against 26.3 tuned
(and 25.9 with the collector off); on 200k events the difference is within noise.
So, where a run starts (replay, live run, every process of a cluster):

- `gc.freeze()` what start-up (and a restore from snapshots) built: the collector never
  walks it again;
- collect the young generation every `GC_THRESHOLD[0]` allocations instead of 700.

Cycles are still collected, only less often; frozen objects are still freed by
reference counting. `pipeline.gc_tuning: false` switches all of it off (the benchmark
runs both, side by side: `python -m benchmarks.replay_bench --compare`).
"""

from __future__ import annotations

import gc

GC_THRESHOLD = (50_000, 20, 100)
"""Young collections every 50,000 allocations; full ones practically never (after 100
middle ones, and only when the long-lived heap grew by a quarter). Replay of 806k events:
as fast as with the collector off (10,000/10/10 too), the same peak RSS."""

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
