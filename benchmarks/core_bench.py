"""Normalizer and encoder alone: this tree against a git ref, side by side, same outputs.

    python -m benchmarks.core_bench [--before REF] [--events N] [--rounds R]

Each round runs the tree at `--before` (`git archive`d into a temp dir, this venv) and
this tree, alternately, each in a fresh interpreter, on the same recording (the
`replay_bench --compare` one: 40,000 orders, about 800k events, every source):

- normalize: `Normalizer.normalize` on the first N envelopes (bytes already in memory);
- encode: `state.encode.encode` on every output record the bare core produced from them
  (the records are made once per child, untimed; encoding is then timed alone).

Reported: the minimum over rounds of µs per event (per record) in wall clock and in CPU
seconds (on a shared machine the wall clock moves with other work), and whether the two
trees' outputs are the same: a digest of every Event/DeadLetter's fields, and of every
encoded record (its wall-clock fields `emitted_at`, and a dead letter's `at`, left out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import hashlib, json, sys, time
from pathlib import Path
import orjson
from schemas.config import load_settings
from schemas.normalize import Normalizer

path, limit = Path(sys.argv[1]), int(sys.argv[2])
lines = []
with path.open("rb") as f:
    for i, line in enumerate(f):
        if i >= limit:
            break
        lines.append(line.rstrip(b"\n"))
settings = load_settings()
normalize = Normalizer(settings).normalize
origins = [{"file": "bench", "line": i} for i in range(len(lines))]
results = [None] * len(lines)
w, c = time.perf_counter(), time.process_time()
for seq, raw in enumerate(lines):
    results[seq] = normalize(raw, origin=origins[seq], seq=seq)
norm_wall, norm_cpu = time.perf_counter() - w, time.process_time() - c
digest = hashlib.sha256()
for r in results:
    digest.update(repr(r).encode())
norm_digest = digest.hexdigest()
del results

from benchmarks.replay_bench import Core
from state.encode import encode
records = []
core = Core(settings)
core._emit = records.extend
size = settings.pipeline.batch_size
for i in range(0, len(lines), size):
    core.feed(i // size, [(s, lines[s], origins[s]) for s in range(i, min(i + size, len(lines)))])
w, c = time.perf_counter(), time.process_time()
encoded = [encode(r) for r in records]
enc_wall, enc_cpu = time.perf_counter() - w, time.process_time() - c
digest = hashlib.sha256()
for topic, key, sort_key, value in encoded:
    doc = orjson.loads(value)
    doc.pop("emitted_at", None)
    if topic == "dead_letters":
        doc.pop("at", None)
    digest.update(f"{topic}\x00{key}\x00{sort_key}\x00".encode())
    digest.update(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
print(json.dumps({"events": len(lines), "records": len(records),
                  "normalize_wall": norm_wall, "normalize_cpu": norm_cpu,
                  "encode_wall": enc_wall, "encode_cpu": enc_cpu,
                  "normalize_digest": norm_digest, "encode_digest": digest.hexdigest()}))
"""


def _child(tree: Path, path: Path, events: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGUARD__")}
    env["PYTHONPATH"] = str(tree)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(events)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from benchmarks.replay_bench import _tree, scale_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", default="main", help="the git ref to compare with")
    ap.add_argument("--events", type=int, default=300_000, help="envelopes from the recording")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--orders", type=int, default=40_000)
    args = ap.parse_args()
    path = scale_dataset(args.orders)
    with tempfile.TemporaryDirectory(prefix="og-before-") as tmp:
        trees = {"before": _tree(args.before, Path(tmp)), "after": HERE.parent}
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                runs[name].append(_child(tree, path, args.events))
    first = runs["before"][0]
    n, recs = first["events"], first["records"]
    print(f"{n:,} envelopes of {path.name}, {recs:,} output records; before = {args.before}")
    best = {}
    for name, rs in runs.items():
        best[name] = {
            k: min(r[k] for r in rs)
            for k in ("normalize_wall", "normalize_cpu", "encode_wall", "encode_cpu")
        }
        b = best[name]
        print(
            f"  {name:<7} normalize {b['normalize_wall'] / n * 1e6:6.2f} µs/event "
            f"(CPU {b['normalize_cpu'] / n * 1e6:6.2f})   "
            f"encode {b['encode_wall'] / recs * 1e6:6.2f} µs/record "
            f"(CPU {b['encode_cpu'] / recs * 1e6:6.2f})   min of {len(rs)}"
        )
    b, a = best["before"], best["after"]
    print(
        f"  speed-up: normalize {b['normalize_cpu'] / a['normalize_cpu']:.2f}x CPU "
        f"({b['normalize_wall'] / a['normalize_wall']:.2f}x wall), "
        f"encode {b['encode_cpu'] / a['encode_cpu']:.2f}x CPU "
        f"({b['encode_wall'] / a['encode_wall']:.2f}x wall)"
    )
    for what in ("normalize_digest", "encode_digest"):
        same = {r[what] for rs in runs.values() for r in rs}
        print(f"  {what.split('_')[0]} outputs: {'identical' if len(same) == 1 else 'DIFFER'}")


if __name__ == "__main__":
    main()
