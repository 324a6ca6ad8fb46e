"""Replay benchmark: events/s through Bytewax vs the bare core, and RSS per open order.

    python -m benchmarks.replay_bench [--orders N] [--open-share S] [--quick] [--memory-only]
    python -m benchmarks.replay_bench --compare [--before REF] [--orders N] [--quick]

Generates (once, cached under benchmarks/.data/) a realistic dataset from all
sources with many orders cut off mid-life, then measures, side by side in one run:

- normalize only (parse + map, no state)                   events/s
- the bare core: router + tracking index + order shards     events/s (the ceiling)
- the Bytewax replay dataflow, 1 worker                     events/s and ratio to the core
- RSS per open order after loading the dataset into state   bytes (fresh subprocess)
- the same state saved as snapshot bases and restored in     bytes, and the restore's CPU
  another fresh process, as a restart restores it

Targets (issue 2): replay >= 150k events/s on one core; <= 600 bytes per open order.
Figures go to benchmarks/results/replay.json.

`--compare` (issue 14) runs `orderguard replay` on one simulated recording (40,000
orders, about 800k events, all sources), each run in a fresh process, side by side:

- the tree at `--before` (a git ref, `git archive`d into a temp dir and run with this
  venv), and this tree: events/s, the ratio, and whether the outputs are the same;
- both trees again, 1 worker, on the same day as the `--before` tree's own simulator
  makes it (a tree from before issue 12 cannot read today's provider shapes; this one
  reads both): the one-process before/after figure of issue 14;
- this tree with `pipeline.gc_tuning` off and on: events/s and peak RSS;
- this tree with `--processes 1` and `--processes 2`: events/s (wall clock of the
  dataflow, process start-up included; the split into Kafka's partitions apart), the
  ratio, and whether the outputs are identical (as sets, ids included).

Each run also reports its CPU seconds (all its processes, start-up and split included):
on a machine other work shares, the wall-clock figures move with that work.

Figures go to benchmarks/results/replay_compare.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
RESULTS = HERE / "results"
DAY = datetime(2026, 3, 2, tzinfo=UTC)
"""The simulated day every dataset here starts at."""


def dataset(orders: int, open_share: float, seed: int = 11) -> Path:
    from sim import generate, write_jsonl

    DATA.mkdir(exist_ok=True)
    path = DATA / f"bench-{orders}-{open_share}-{seed}.jsonl"
    if not path.exists():
        t = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        start = DAY
        end = (start + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%S")
        envelopes = generate(orders=orders, seed=seed, start=start, hours=24, open_share=open_share)
        # stop at the end of the day: what follows (buyers confirming days later) would
        # run the clock past every open order's deadlines
        n = write_jsonl(tmp, takewhile(lambda e: e.get("received_at", "") < end, envelopes))
        tmp.rename(path)
        print(f"generated {n:,} events in {time.perf_counter() - t:.1f} s -> {path}")
    return path


def read_batches(path: Path, size: int):
    seq = 0
    batch: list = []
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            batch.append((seq, line.rstrip(b"\n"), {"file": str(path), "line": lineno}))
            seq += 1
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def bench_normalize(path: Path, settings) -> tuple[int, float]:
    from schemas.normalize import Normalizer

    normalize = Normalizer(settings).normalize
    n = 0
    t = time.perf_counter()
    for batch in read_batches(path, 2000):
        for seq, raw, origin in batch:
            normalize(raw, origin=origin, seq=seq)
        n += len(batch)
    return n, time.perf_counter() - t


class Core:
    """The dataflow's steps called directly, in the order Bytewax would call them.

    Outputs are encoded to JSON as the dataflow does, so the two differ only by Bytewax.
    """

    def __init__(self, settings) -> None:
        from dataflows.router import Router, index_shards
        from state.customers import CustomerDesk
        from state.health import HealthState
        from state.reference_index import ReferenceIndex
        from state.shard import OrderShard

        self.router = Router(settings)
        self.shards = [OrderShard(settings) for _ in range(settings.pipeline.shards)]
        self.index = [ReferenceIndex(settings) for _ in range(index_shards(settings))]
        self.health = HealthState(settings)
        self.desk = CustomerDesk(settings)
        self.n_shards = settings.pipeline.shards
        self.outputs = 0
        self._stamps: dict[str, object] = {}
        self._tolerance = settings.pipeline.max_clock_ahead

    def feed(self, n: int, lines: list, stream: str | None = None) -> None:
        """One batch through router, index, shards, health and desk; `stream`: the lines'."""
        from connectors.replay import RawBatch
        from dataflows.messages import Mark, ToHealth, ToIndex, ToShard
        from dataflows.router import stable_shard
        from dataflows.stamp import PartitionStamp

        part = stream or "bench"
        stamp = self._stamps.setdefault(part, PartitionStamp())
        now = int(time.time() * 1000)
        b = stamp.stamp(RawBatch(part, n, lines), len(self._stamps) - 1, now, self._tolerance)
        if b is None:
            return
        mark = Mark(part, b.clock, 1, False, False)
        msgs = self.router.route(mark, b.lines, stream, b.limits)
        released: list[list] = [[] for _ in self.shards]
        direct: dict[int, ToShard] = {}
        signals: list = []
        clock = 0
        for msg in msgs:
            if isinstance(msg, ToIndex):
                clock = msg.mark.clock
                rel, dead = self.index[msg.index].process(msg.events, clock, self._owns(msg.index))
                for kv in rel:
                    released[stable_shard(kv[1].order_id, self.n_shards)].append(kv)
                self._emit(dead)
            elif isinstance(msg, ToShard):
                direct[msg.shard] = msg
            elif isinstance(msg, ToHealth):
                batch = msg.batch
                self._emit(self.health.apply(batch) + self.health.advance(batch.clock_ms))
            else:
                self._emit(msg.records)
        for i, shard in enumerate(self.shards):
            to_shard = direct[i]
            clock = to_shard.mark.clock
            keyed = [((e.seq, 0, e.seq), e) for e in to_shard.events] + released[i]
            keyed.sort(key=lambda kv: kv[0])
            records = []
            for kind, rec in shard.process([e for _, e in keyed], clock):
                (signals if kind == "signal" else records).append(rec)
            self._emit(records)
        self._emit(self.desk.process(signals, clock))

    def _owns(self, me: int):
        from dataflows.router import index_shard

        n = len(self.index)
        return lambda key: index_shard(key, n) == me

    def _emit(self, records: list) -> None:
        from state.encode import encode

        for r in records:
            encode(r)
        self.outputs += len(records)

    def open_orders(self) -> int:
        return sum(len(s.orders) for s in self.shards)


def bench_core(path: Path, settings) -> tuple[int, float]:
    core = Core(settings)
    n = 0
    t = time.perf_counter()
    for i, batch in enumerate(read_batches(path, settings.pipeline.batch_size)):
        core.feed(i, batch)
        n += len(batch)
    return n, time.perf_counter() - t


def bench_bytewax(path: Path, settings, workdir: Path) -> tuple[int, float]:
    from dataflows.replay import run_replay

    s = run_replay(settings, [path], workdir, show_progress=False, summarize=False)
    return s.events_in, s.seconds


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(path: str, snapshots: str | None = None) -> None:
    """Run in a fresh process: RSS growth from loading the dataset into state; with
    `snapshots`, the order shards and reference indexes are then saved there as the
    bases a snapshot writes (`restore_child` reads them back)."""
    from schemas.config import load_settings

    settings = load_settings()
    core = Core(settings)
    batches = read_batches(Path(path), settings.pipeline.batch_size)
    first = next(batches)
    core.feed(0, first)  # warm every code path and allocator arena
    gc.collect()
    before = _rss()
    for i, batch in enumerate(batches, 1):
        core.feed(i, batch)
    gc.collect()
    after = _rss()
    open_orders = core.open_orders()
    pending = sum(ix.pending_count for ix in core.index)
    if snapshots is not None:
        out = Path(snapshots)
        for i, shard in enumerate(core.shards):
            saved = (shard.clock, shard.increment(True)[1])
            (out / f"shard-{i}.pickle").write_bytes(pickle.dumps(saved, protocol=5))
        for i, ix in enumerate(core.index):
            saved = (ix.small_state(), ix.increment(True)[1])
            (out / f"index-{i}.pickle").write_bytes(pickle.dumps(saved, protocol=5))
    print(
        json.dumps(
            {
                "rss_growth": after - before,
                "open_orders": open_orders,
                "pending_scans": pending,
                "rss_total": after,
            }
        )
    )


def restore_child(snapshots: str) -> None:
    """Run in a fresh process: RSS growth from restoring what `memory_child` saved, as a
    restart restores it (every step through the restore table, `state.packing`), and
    again once the first epoch close has emptied the table; and the restore's CPU."""
    from schemas.config import load_settings
    from state.packing import IdTable
    from state.reference_index import ReferenceIndex
    from state.shard import OrderShard

    settings = load_settings()
    files = sorted(Path(snapshots).glob("*.pickle"))
    gc.collect()
    before = _rss()
    cpu = time.process_time()
    shards, indexes, ids = [], [], IdTable()
    for f in files:
        saved = pickle.loads(f.read_bytes())
        if f.name.startswith("shard-"):
            shard = OrderShard(settings)
            shard.restore_increments(saved[0], [saved[1]], settings, ids)
            shards.append(shard)
        else:
            indexes.append(ReferenceIndex.from_increments(settings, saved[0], [saved[1]], ids))
        del saved
    cpu = time.process_time() - cpu
    gc.collect()
    held = _rss()
    ids.clear()
    gc.collect()
    after = _rss()
    print(
        json.dumps(
            {
                "restored_rss_growth": after - before,
                "restored_rss_growth_table_held": held - before,
                "restored_open_orders": sum(len(s.orders) for s in shards),
                "restore_cpu_seconds": round(cpu, 2),
            }
        )
    )


def bench_memory(path: Path, restore: bool = True) -> dict:
    """`memory_child`'s figures, and with `restore` `restore_child`'s beside them."""
    import tempfile

    def child(*args: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.replay_bench", *args],
            capture_output=True,
            text=True,
            check=True,
            cwd=HERE.parent,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    if not restore:
        return child("--memory-child", str(path))
    with tempfile.TemporaryDirectory(prefix="og-restore-") as snaps:
        mem = child("--memory-child", str(path), "--snapshots", snaps)
        restored = child("--restore-child", snaps)
    if restored["restored_open_orders"] != mem["open_orders"]:
        raise RuntimeError(
            f"restored {restored['restored_open_orders']:,} open orders, not"
            f" the {mem['open_orders']:,} saved"
        )
    return {**mem, **restored}


BEFORE = "3ae51cb"
"""The last commit before issue 14's core changes (gc tuning, encode clock, split replay)."""

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from schemas.config import load_settings
from dataflows.replay import run_replay
inp, out, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
s = run_replay(load_settings(), [Path(inp)], Path(out), show_progress=False, summarize=False,
               **kwargs)
use = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(json.dumps({"events": s.events_in, "seconds": s.seconds,
                  "split_seconds": getattr(s, "split_seconds", 0.0),
                  "cpu_seconds": sum(u.ru_utime + u.ru_stime for u in use),
                  "peak_rss_kb": max(u.ru_maxrss for u in use)}))
"""


def scale_dataset(orders: int, seed: int = 11) -> Path:
    """A whole simulated day as `orderguard simulate --out` writes it (about 20 events an
    order, every source, keyed like our producers key them)."""
    from sim import generate, write_jsonl

    DATA.mkdir(exist_ok=True)
    path = DATA / f"scale-{orders}-{seed}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_jsonl(tmp, generate(orders=orders, seed=seed, start=DAY, hours=24))
        tmp.rename(path)
    return path


_OWN_DAY = """
import sys
from datetime import datetime
from pathlib import Path
from sim import generate, write_jsonl
out, orders, seed, start = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tmp = out.with_suffix(".tmp")
n = write_jsonl(tmp, generate(orders=orders, seed=seed, start=datetime.fromisoformat(start),
                              hours=24))
tmp.rename(out)
print(n)
"""


def own_dataset(tree: Path, ref: str, orders: int, seed: int = 11) -> Path:
    """`scale_dataset`'s day, made by `tree`'s own simulator (cached by commit): a tree
    from before issue 12 cannot read today's provider shapes, so its one-process figure
    is measured on its own recording, which this tree reads as well."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", f"{ref}^{{commit}}"],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = DATA / f"own-{commit}-{orders}-{seed}.jsonl"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        args = [str(path), str(orders), str(seed), DAY.isoformat()]
        tree_child(tree, _OWN_DAY, args, dict(os.environ), f"{ref}'s simulator")
    return path


def _tree(ref: str, into: Path) -> Path:
    """The committed tree at `ref`, unpacked (no checkout, no change to this worktree)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=HERE.parent, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def tree_child(tree: Path, code: str, args: list[str], env: dict[str, str], what: str) -> dict:
    """Run `code` with `args` in a fresh interpreter (this venv) on `tree`'s code; its last
    line of output is the JSON answer. Every before/after benchmark runs its trees so."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _replay_run(tree: Path, path: Path, out: Path, env: dict[str, str] | None = None, **kw):
    """One `run_replay` of `tree`'s code in a fresh interpreter (this venv)."""
    full = {**os.environ, **(env or {})}
    full = {k: v for k, v in full.items() if not k.startswith("ORDERGUARD__") or k in (env or {})}
    args = [str(path), str(out), json.dumps(kw)]
    return tree_child(tree, _CHILD, args, full, f"replay of {tree}")


def _records(out: Path) -> dict[str, list[bytes]]:
    """Every output record without its wall-clock fields, sorted: compared as sets."""
    import orjson

    result = {}
    for topic in ("corrected", "alerts", "breakers", "dead_letters"):
        rows = []
        for line in (out / f"{topic}.jsonl").read_bytes().splitlines():
            doc = orjson.loads(line)
            doc.pop("emitted_at", None)
            if topic in ("corrected", "dead_letters"):
                doc.pop("at", None)  # a dead letter's `at` is when it was written
            rows.append(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
        result[topic] = sorted(rows)
    return result


def compare(orders: int, before: str) -> None:
    import shutil
    import tempfile

    path = scale_dataset(orders)
    events = sum(1 for _ in path.open("rb"))
    here = HERE.parent
    print(f"dataset: {events:,} events, {orders:,} orders ({path.name}); before = {before}")
    with tempfile.TemporaryDirectory(prefix="og-before-") as tmp:
        old = _tree(before, Path(tmp))
        outs = DATA / "compare"
        shutil.rmtree(outs, ignore_errors=True)
        runs = {}
        plan = [
            ("before", old, {}, {}),
            ("after", here, {}, {}),
            ("after_gc_off", here, {"ORDERGUARD__PIPELINE__GC_TUNING": "false"}, {}),
            ("processes_1", here, {}, {"processes": 1}),
            ("processes_2", here, {}, {"processes": 2}),
        ]
        own = own_dataset(old, before, orders)
        plan += [("before_own_day", old, {}, {}), ("after_own_day", here, {}, {})]
        for name, tree, env, kw in plan:
            day = own if name.endswith("_own_day") else path
            r = _replay_run(tree, day, outs / name, env, **kw)
            r["events_per_s"] = round(r["events"] / r["seconds"])
            runs[name] = r
            print(
                f"  {name:<14}{r['events_per_s']:>10,} events/s  {r['seconds']:6.1f} s  "
                f"CPU {r['cpu_seconds']:6.1f} s  peak RSS {r['peak_rss_kb'] / 1024:,.0f} MB"
            )
        same = {
            "before_after": _records(outs / "before") == _records(outs / "after"),
            "processes_1_2": _records(outs / "processes_1") == _records(outs / "processes_2"),
            "plain_processes_1": _records(outs / "after") == _records(outs / "processes_1"),
        }
        shutil.rmtree(outs, ignore_errors=True)
    rate = {k: v["events_per_s"] for k, v in runs.items()}
    rows = [
        ("before (" + before + "), 1 worker", rate["before"], ""),
        (
            "after, 1 worker",
            rate["after"],
            f"{rate['after'] / rate['before']:.2f}x before; outputs "
            + ("identical" if same["before_after"] else "DIFFER"),
        ),
        (
            "after, gc tuning off",
            rate["after_gc_off"],
            f"gc tuning on: {rate['after'] / rate['after_gc_off']:.2f}x; peak RSS on/off "
            f"{runs['after']['peak_rss_kb'] // 1024}/{runs['after_gc_off']['peak_rss_kb'] // 1024}"
            " MB",
        ),
        (
            "replay --processes 1",
            rate["processes_1"],
            f"split {runs['processes_1']['split_seconds']:.1f} s apart; outputs "
            + ("identical" if same["plain_processes_1"] else "differ")
            + " to plain replay",
        ),
        (
            "replay --processes 2",
            rate["processes_2"],
            f"{rate['processes_2'] / rate['processes_1']:.2f}x 1 process; outputs "
            + ("identical" if same["processes_1_2"] else "DIFFER"),
        ),
    ]
    print()
    for name, value, note in rows:
        print(f"  {name:<34}{value:>10,} events/s   {note}")
    own_ratio = rate["after_own_day"] / rate["before_own_day"]
    print(
        f"\n  on {before}'s own simulated day ({own.name}, which both trees read):\n"
        f"  {'before, 1 worker':<34}{rate['before_own_day']:>10,} events/s\n"
        f"  {'after, 1 worker':<34}{rate['after_own_day']:>10,} events/s   {own_ratio:.2f}x before"
    )
    print("  targets (issue 14): 2 processes >= 1.7x one; 1 process >= 2x before")
    RESULTS.mkdir(exist_ok=True)
    result: dict[str, object] = {"events": events, "orders": orders, "before": before}
    for name, r in runs.items():  # flat numeric keys, as the other results
        result.update({f"{name}_{k}": v for k, v in r.items() if k != "events"})
    result.update({f"identical_{k}": int(v) for k, v in same.items()})
    result["after_to_before_ratio"] = round(rate["after"] / rate["before"], 3)
    result["own_day_after_to_before_ratio"] = round(own_ratio, 3)
    result["gc_on_to_off_ratio"] = round(rate["after"] / rate["after_gc_off"], 3)
    result["processes_2_to_1_ratio"] = round(rate["processes_2"] / rate["processes_1"], 3)
    (RESULTS / "replay_compare.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {RESULTS / 'replay_compare.json'}")


def _per_order(mem: dict) -> dict[str, int]:
    """RSS growth per open order: live, and after a restore (with the table, and without)."""
    figures = {"rss_bytes_per_open_order": round(mem["rss_growth"] / max(1, mem["open_orders"]))}
    if "restored_rss_growth" in mem:
        n = max(1, mem["restored_open_orders"])
        figures["restored_rss_bytes_per_open_order"] = round(mem["restored_rss_growth"] / n)
        held = mem["restored_rss_growth_table_held"]
        figures["restored_rss_bytes_per_open_order_table_held"] = round(held / n)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--orders", type=int, default=240_000)
    ap.add_argument("--open-share", type=float, default=0.9)
    ap.add_argument("--quick", action="store_true", help="a small run to check the harness")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--snapshots", help=argparse.SUPPRESS)
    ap.add_argument("--restore-child", help=argparse.SUPPRESS)
    ap.add_argument("--memory-only", action="store_true", help="only the RSS per open order")
    ap.add_argument("--compare", action="store_true", help="before/after, gc, 1 vs 2 processes")
    ap.add_argument("--before", default=BEFORE, help="the git ref to compare with (--compare)")
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.snapshots)
        return
    if args.restore_child:
        restore_child(args.restore_child)
        return
    if args.compare:
        orders = 2_000 if args.quick else (40_000 if args.orders == 240_000 else args.orders)
        compare(orders, args.before)
        return
    if args.quick:
        args.orders = 5_000
    from schemas.config import load_settings

    settings = load_settings()
    path = dataset(args.orders, args.open_share)
    if args.memory_only:
        mem = bench_memory(path)
        print(json.dumps({**mem, **_per_order(mem)}))
        return
    events = sum(1 for _ in path.open("rb"))
    print(f"dataset: {events:,} events, {args.orders:,} orders ({path.name})")

    n, secs = bench_normalize(path, settings)
    norm_rate = n / secs
    n, secs = bench_core(path, settings)
    core_rate = n / secs
    n, secs = bench_bytewax(path, settings, DATA / "bench-out")
    bw_rate = n / secs
    mem = bench_memory(path)
    per_order = _per_order(mem)

    results = {
        "events": events,
        "orders": args.orders,
        "open_orders": mem["open_orders"],
        "pending_scans": mem["pending_scans"],
        "normalize_events_per_s": round(norm_rate),
        "core_events_per_s": round(core_rate),
        "bytewax_replay_events_per_s": round(bw_rate),
        "bytewax_to_core_ratio": round(bw_rate / core_rate, 3),
        "rss_growth_bytes": mem["rss_growth"],
        **per_order,
        "restore_cpu_seconds": mem["restore_cpu_seconds"],
        "target_replay_events_per_s": 150_000,
        "target_bytes_per_open_order": 600,
    }
    rows = [
        ("normalize only", f"{norm_rate:,.0f} events/s", ""),
        ("bare core (no Bytewax)", f"{core_rate:,.0f} events/s", "ceiling"),
        (
            "Bytewax replay, 1 worker",
            f"{bw_rate:,.0f} events/s",
            f"{bw_rate / core_rate:.2f}x core; target 150,000",
        ),
        ("open orders in state", f"{mem['open_orders']:,}", ""),
        ("RSS per open order", f"{per_order['rss_bytes_per_open_order']:,} bytes", "target 600"),
        (
            "  after a restore",
            f"{per_order['restored_rss_bytes_per_open_order']:,} bytes",
            f"{per_order['restored_rss_bytes_per_open_order_table_held']:,} while the table is"
            f" held; restore {mem['restore_cpu_seconds']} s CPU",
        ),
    ]
    print()
    for name, value, note in rows:
        print(f"  {name:<28}{value:>22}   {note}")
    RESULTS.mkdir(exist_ok=True)
    if not args.quick:
        (RESULTS / "replay.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {RESULTS / 'replay.json'}")


if __name__ == "__main__":
    main()
