"""State benchmark: memory per open order and the cost of snapshotting the order state.

    python -m benchmarks.state_bench [--orders N] [--before REF] [--repeat R] [--tracemalloc]

Loads the replay benchmark's dataset (`benchmarks.replay_bench.dataset`) into the bare
core (`benchmarks.replay_bench.Core`: router, reference index, order shards), each
tree in a fresh process, side by side: this tree and the tree at `--before` (a git
ref, `git archive`d into a temp dir and run with this venv). For each it reports:

- core events/s while loading (wall and CPU seconds);
- RSS growth per open order (as `replay_bench` measures it);
- with `--tracemalloc`, a separate run: traced bytes per open order by line, top lines;
- what an epoch close costs: `pickle.dumps` of every order shard's `__getstate__()` and
  of every reference-index shard (the objects `dataflows/flow.py` pickles), then
  `pickle.loads` and `OrderShard.restore`, min of `--repeat` runs, and the sizes;
- whether a restored shard and index pickle back to the same bytes (a round trip).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import gc, json, os, pickle, sys, time
from pathlib import Path
from benchmarks.replay_bench import Core, read_batches
from schemas.config import load_settings
from dataflows.gc_tuning import tune_gc

path, mode, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = load_settings()
if mode.startswith("pending"):
    # events waiting in the reference index for their reference (tracking-first scans)
    from schemas.normalize import Normalizer
    from state.reference_index import ReferenceIndex
    n = int(mode.split(":")[1])
    normalize = Normalizer(settings).normalize
    idx = ReferenceIndex(settings)
    waiting = []
    for batch in read_batches(Path(path), 2000):
        for seq, raw, origin in batch:
            r = normalize(raw, origin=origin, seq=seq)
            e = r[0] if isinstance(r, tuple) else r
            if getattr(e, "kind", None) == "carrier" and e.tracking_no:
                e.order_id = None
                e.tracking_no = f"X{len(waiting)}{e.tracking_no}"  # nobody's: it waits
                e.raw, e.origin = raw[:256], origin
                waiting.append(e)
        if len(waiting) >= n:
            break
    idx._pending_max = idx._pending_max_bytes = 10**12
    idx.process(waiting[:n], waiting[n - 1].received_ms)
    P = pickle.HIGHEST_PROTOCOL
    ts = []
    for _ in range(repeat):
        c = time.process_time(); b = pickle.dumps(idx, protocol=P); d = time.process_time() - c
        c = time.process_time(); back = pickle.loads(b); l = time.process_time() - c
        ts.append((d, l))
    assert back.pending_count == idx.pending_count == n, (back.pending_count, n)
    same = all(back.waiting(k) == idx.waiting(k) for k in idx.pending)
    print(json.dumps({"pending_events": n, "pending_dumps_cpu_s": round(min(t[0] for t in ts), 3),
                      "pending_loads_cpu_s": round(min(t[1] for t in ts), 3),
                      "pending_bytes": len(b), "pending_round_trip": same}))
    sys.exit()

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

core = Core(settings)
batches = read_batches(Path(path), settings.pipeline.batch_size)
core.feed(0, next(batches))
gc.collect()
if mode == "trace":
    import tracemalloc
    tracemalloc.start()
before = rss()
n, t0, c0 = 0, time.perf_counter(), time.process_time()
for i, batch in enumerate(batches, 1):
    core.feed(i, batch)
    n += len(batch)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
gc.collect()
after = rss()
orders = core.open_orders()
out = {"events": n, "open_orders": orders, "core_events_per_s": round(n / wall),
       "core_wall_s": round(wall, 2), "core_cpu_s": round(cpu, 2),
       "rss_per_order": round((after - before) / orders)}
if mode == "trace":
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = snap.statistics("lineno")
    out["traced_per_order"] = round(sum(s.size for s in stats) / orders, 1)
    out["top"] = [(f"{s.traceback[0].filename.split('/')[-2:]!s}:{s.traceback[0].lineno}",
                   round(s.size / orders, 1)) for s in stats[:14]]
    print(json.dumps(out))
    sys.exit()

tune_gc()  # as a live run is when it snapshots: what loading built is frozen
from state.shard import OrderShard
def best(fn):
    times = []
    for _ in range(repeat):
        c = time.process_time(); w = time.perf_counter(); r = fn()
        times.append((time.perf_counter() - w, time.process_time() - c))
    return r, min(t[0] for t in times), min(t[1] for t in times)

P = pickle.HIGHEST_PROTOCOL
blobs, dw, dc = best(lambda: [pickle.dumps(s.__getstate__(), protocol=P) for s in core.shards])
_, lw, lc = best(lambda: [pickle.loads(b) for b in blobs])
def restore():
    out = []
    for b in blobs:
        s = OrderShard(settings); s.restore(pickle.loads(b), settings); out.append(s)
    return out
shards, rw, rc = best(restore)
def rows(sh):
    return {k: o.__getstate__() for k, o in sh.orders.items()}
same = all(rows(a) == rows(b) and a.clock == b.clock for a, b in zip(shards, core.shards))
iblobs, idw, idc = best(lambda: [pickle.dumps(ix, protocol=P) for ix in core.index])
index, ilw, ilc = best(lambda: [pickle.loads(b) for b in iblobs])
def ixstate(ix):
    return (ix.current, ix.previous, ix.rotated_at, list(ix.pending), list(ix.pending_queue),
            ix.pending_count, ix.pending_bytes, ix.conflicts)
isame = [ixstate(ix) for ix in index] == [ixstate(ix) for ix in core.index]
out.update({
    "shards_dumps_s": round(dw, 3), "shards_dumps_cpu_s": round(dc, 3),
    "shards_loads_s": round(lw, 3), "shards_restore_s": round(rw, 3),
    "shards_restore_cpu_s": round(rc, 3),
    "shards_bytes": sum(map(len, blobs)), "shards_round_trip": same,
    "index_dumps_s": round(idw, 3), "index_dumps_cpu_s": round(idc, 3),
    "index_loads_s": round(ilw, 3), "index_loads_cpu_s": round(ilc, 3),
    "index_bytes": sum(map(len, iblobs)), "index_round_trip": isame,
    "index_entries": sum(len(ix.current) + len(ix.previous) for ix in core.index),
})
print(json.dumps(out))
"""


def _tree(ref: str, into: Path) -> Path:
    from benchmarks.replay_bench import _tree as unpacked

    into.mkdir(parents=True)
    return unpacked(ref, into)


def _child(tree: Path, path: Path, mode: str, repeat: int) -> dict:
    from benchmarks.replay_bench import tree_child

    return tree_child(tree, _CHILD, [str(path), mode, str(repeat)], dict(os.environ), str(tree))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--orders", type=int, default=240_000)
    ap.add_argument("--open-share", type=float, default=0.9)
    ap.add_argument("--before", default=None, help="a git ref to run side by side")
    ap.add_argument("--after", default=None, help="a git ref instead of this tree")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="alternate before/after this often")
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--pending", type=int, default=0, help="only: N events waiting in the index")
    args = ap.parse_args()
    from benchmarks.replay_bench import dataset

    path = dataset(args.orders, args.open_share)
    mode = "trace" if args.tracemalloc else "time"
    if args.pending:
        mode = f"pending:{args.pending}"
    with tempfile.TemporaryDirectory(prefix="og-state-") as tmp:
        trees = {"after": HERE.parent}
        if args.after:
            trees = {"after": _tree(args.after, Path(tmp) / "after")}
        if args.before:
            trees = {"before": _tree(args.before, Path(tmp) / "before"), **trees}
        results: dict[str, list[dict]] = {k: [] for k in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                r = _child(tree, path, mode, args.repeat)
                results[name].append(r)
                print(name, json.dumps(r), flush=True)
    print(f"\ndataset {path.name}")
    keys = [k for k in results["after"][0] if k != "top"]
    print(f"  {'':<24}" + "".join(f"{n:>16}" for n in results))
    for k in keys:
        row = []
        for runs in results.values():
            vals = [r[k] for r in runs]
            v = (
                max(vals)
                if k.endswith("per_s")
                else min(vals)
                if isinstance(vals[0], float | int) and not isinstance(vals[0], bool)
                else vals[0]
            )
            number = isinstance(v, int) and not isinstance(v, bool)
            row.append(f"{v:>16,}" if number else f"{v!s:>16}")
        print(f"  {k:<24}" + "".join(row))


if __name__ == "__main__":
    main()
