"""Normalizer and encoder alone: this tree against a git ref, interleaved in one process.

    python -m benchmarks.core_bench [--before REF] [--events N] [--rounds R] [--core]

The tree at `--before` (default main) is `git archive`d into a temp dir; its `schemas/`
is imported as the package `before_schemas` and its `state/encode.py` as `before_encode`
(imports rewritten), so both versions run in one interpreter, round after round on the
same data: on a machine other work shares, interleaving keeps that work from favouring
either. The data: the first N envelopes of the `replay_bench --compare` recording
(40,000 orders, every source), bytes already in memory.

- normalize: `Normalizer.normalize` on each envelope;
- encode: `encode` on every output record the bare core (this tree) made from them.

Timed batch by batch (1,000 envelopes or records, about what the pipeline holds at
once): each batch by both versions back to back, in alternating order, every round; a
batch's figure is its minimum over rounds, and the batches' figures are summed (load
from other work, which comes and goes, then lands on neither version). Reported: CPU
µs per event (per record), the ratio, and
whether both versions' outputs are the same: every Event/DeadLetter field (by `repr`)
and every encoded record (its wall-clock fields `emitted_at`, and a dead letter's `at`,
left out). Cyclic GC is off while timing.

Figures go to benchmarks/results/core_compare.json.

`--core` also times the bare core (`replay_bench.Core`: router with the normalizer,
index, shards, health, desk, encode) of each whole tree on the same envelopes, each
round in a fresh interpreter per tree (GC tuned as the pipeline tunes it): events/s
and CPU seconds, min over rounds.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


_CORE_CHILD = r"""
import json, sys, time
from pathlib import Path
from benchmarks.replay_bench import Core, read_batches
from schemas.config import load_settings
from dataflows.gc_tuning import tune_gc

path, limit = Path(sys.argv[1]), int(sys.argv[2])
settings = load_settings()
n, kept = 0, []
for batch in read_batches(path, settings.pipeline.batch_size):
    if n >= limit:
        break
    kept.append(batch)
    n += len(batch)
core = Core(settings)
tune_gc()
w, c = time.perf_counter(), time.process_time()
for i, batch in enumerate(kept):
    core.feed(i, batch)
print(json.dumps({"events": n, "wall": time.perf_counter() - w, "cpu": time.process_time() - c}))
"""


def _core_run(tree: Path, path: Path, events: int) -> dict:
    """The bare core of `tree` on the first `events` envelopes, in a fresh interpreter."""
    from benchmarks.replay_bench import tree_child

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGUARD__")}
    return tree_child(tree, _CORE_CHILD, [str(path), str(events)], env, f"core of {tree}")


def compare_core(ref: str, path: Path, events: int, rounds: int) -> dict[str, float]:
    from benchmarks.replay_bench import _tree

    with tempfile.TemporaryDirectory(prefix="og-before-core-") as tmp:
        trees = {"before": _tree(ref, Path(tmp)), "after": ROOT}
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for r in range(rounds):
            for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
                runs[name].append(_core_run(trees[name], path, events))
    n = runs["before"][0]["events"]
    best = {k: (min(x["wall"] for x in v), min(x["cpu"] for x in v)) for k, v in runs.items()}
    print(f"bare core, {n:,} envelopes, fresh process per run:")
    for name, (wall, cpu) in best.items():
        print(f"  {name:<7} {n / wall:>9,.0f} events/s   CPU {cpu:6.2f} s  (min of {rounds})")
    print(f"  core: {best['before'][1] / best['after'][1]:.2f}x faster (CPU)")
    return {
        **{f"core_{k}_events_per_s": round(n / v[0]) for k, v in best.items()},
        **{f"core_{k}_cpu_s": round(v[1], 2) for k, v in best.items()},
        "core_cpu_ratio": round(best["before"][1] / best["after"][1], 3),
    }


def _before(ref: str, into: Path) -> None:
    """`ref`'s schemas/ as before_schemas/, its state/encode.py as before_encode.py."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "schemas", "state/encode.py"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    (into / "schemas").rename(into / "before_schemas")
    (into / "state" / "encode.py").rename(into / "before_encode.py")
    pattern = re.compile(r"^(\s*)(from|import) schemas\b", re.MULTILINE)
    for path in [*(into / "before_schemas").glob("*.py"), into / "before_encode.py"]:
        path.write_text(pattern.sub(r"\1\2 before_schemas", path.read_text()))


def _digest_results(results: list) -> str:
    h = hashlib.sha256()
    for r in results:
        h.update(repr(r).encode())
    return h.hexdigest()


def _digest_encoded(encoded: list) -> str:
    h = hashlib.sha256()
    for topic, key, sort_key, value in encoded:
        doc = orjson.loads(value)
        doc.pop("emitted_at", None)
        if topic == "dead_letters":
            doc.pop("at", None)
        h.update(f"{topic}\x00{key}\x00{sort_key}\x00".encode())
        h.update(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()


def _timed(fn: Any) -> tuple[float, Any]:
    """CPU seconds of `fn()` (cyclic GC is off while timing: the pipeline freezes and
    tunes it, and here collections would be a large, varying part of the figure)."""
    c = time.process_time()
    out = fn()
    return time.process_time() - c, out


def main() -> None:
    from benchmarks.replay_bench import Core, scale_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", default="main", help="the git ref to compare with")
    ap.add_argument("--events", type=int, default=200_000, help="envelopes from the recording")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--orders", type=int, default=40_000)
    ap.add_argument("--core", action="store_true", help="also the bare core, whole trees")
    args = ap.parse_args()
    path = scale_dataset(args.orders)
    lines: list[bytes] = []
    with path.open("rb") as f:
        for line in f:
            if len(lines) >= args.events:
                break
            lines.append(line.rstrip(b"\n"))
    origins = [{"file": "bench", "line": i} for i in range(len(lines))]

    with tempfile.TemporaryDirectory(prefix="og-before-") as tmp:
        _before(args.before, Path(tmp))
        sys.path.insert(0, tmp)
        import before_encode  # type: ignore[import-not-found]
        from before_schemas.config import load_settings as before_settings  # type: ignore
        from before_schemas.normalize import Normalizer as BeforeNormalizer  # type: ignore

        from schemas.config import DEFAULT_CONFIG, load_settings
        from schemas.event import DeadLetter
        from schemas.normalize import Normalizer
        from state import encode as after_encode

        before_encode.DeadLetter = DeadLetter  # this tree's dead letters pass its isinstance
        settings = load_settings()
        normalizers = {
            "before": BeforeNormalizer(before_settings(DEFAULT_CONFIG)).normalize,
            "after": Normalizer(settings).normalize,
        }

        records: list = []
        core = Core(settings)
        core._emit = records.extend  # type: ignore[method-assign]
        size = settings.pipeline.batch_size
        for i in range(0, len(lines), size):
            batch = [(s, lines[s], origins[s]) for s in range(i, min(i + size, len(lines)))]
            core.feed(i // size, batch)
        encoders = {"before": before_encode.encode, "after": after_encode.encode}

        gc.collect()
        gc.freeze()
        gc.disable()
        # batch by batch, the two versions back to back on each (the order alternating),
        # the minimum per batch over rounds summed: load from other work lands on both
        step = 1000
        batches = [range(i, min(i + step, len(lines))) for i in range(0, len(lines), step)]
        rec_batches = [records[i : i + step] for i in range(0, len(records), step)]
        best = {
            f"{name}_{what}": [float("inf")] * len(bs)
            for name in ("before", "after")
            for what, bs in (("normalize", batches), ("encode", rec_batches))
        }
        kinds = ("normalize", "encode")
        hashes = {f"{n}_{w}": hashlib.sha256() for n in normalizers for w in kinds}
        for r in range(args.rounds):
            for b, seqs in enumerate(batches):
                for name in ("before", "after") if (r + b) % 2 == 0 else ("after", "before"):
                    n = normalizers[name]
                    secs, results = _timed(
                        lambda n=n, seqs=seqs: [
                            n(lines[seq], origin=origins[seq], seq=seq) for seq in seqs
                        ]
                    )
                    cell = best[f"{name}_normalize"]
                    cell[b] = min(cell[b], secs)
                    if r == 0:
                        hashes[f"{name}_normalize"].update(_digest_results(results).encode())
            for b, recs in enumerate(rec_batches):
                for name in ("before", "after") if (r + b) % 2 == 0 else ("after", "before"):
                    e = encoders[name]
                    secs, encoded = _timed(lambda e=e, recs=recs: [e(rec) for rec in recs])
                    cell = best[f"{name}_encode"]
                    cell[b] = min(cell[b], secs)
                    if r == 0:
                        hashes[f"{name}_encode"].update(_digest_encoded(encoded).encode())
        digests = {
            what: {hashes[f"{name}_{what}"].hexdigest() for name in ("before", "after")}
            for what in ("normalize", "encode")
        }
        totals = {k: sum(v) for k, v in best.items()}

    n, recs = len(lines), len(records)
    print(f"{n:,} envelopes of {path.name}, {recs:,} output records; before = {args.before}")
    for name in ("before", "after"):
        print(
            f"  {name:<7} normalize {totals[f'{name}_normalize'] / n * 1e6:6.2f} µs/event   "
            f"encode {totals[f'{name}_encode'] / max(1, recs) * 1e6:6.2f} µs/record   "
            f"(CPU; per batch the min of {args.rounds} rounds, summed)"
        )
    for what in ("normalize", "encode"):
        ratio = totals[f"before_{what}"] / totals[f"after_{what}"]
        same = "identical" if len(digests[what]) == 1 else "DIFFER"
        print(f"  {what}: {ratio:.2f}x faster; outputs {same}")
    result: dict[str, object] = {"before": args.before, "events": n, "records": recs}
    for k, v in totals.items():
        result[f"{k}_us"] = round(v / (n if k.endswith("normalize") else max(1, recs)) * 1e6, 2)
    for what in ("normalize", "encode"):
        result[f"{what}_ratio"] = round(totals[f"before_{what}"] / totals[f"after_{what}"], 3)
        result[f"{what}_identical"] = int(len(digests[what]) == 1)
    if args.core:
        result.update(compare_core(args.before, path, args.events, args.rounds))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "core_compare.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
