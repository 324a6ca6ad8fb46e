"""Snapshot encodings before and after issue 14's packing, on the same state, in one process.

    python -m benchmarks.snapshot_formats [--orders N] [--repeat R]

Loads the replay benchmark's dataset into the bare core (as `benchmarks.state_bench`
does), then alternates, R times, the encodings of 6e5b0a0 (re-created here: each
order as a 14-field row, the timer wheel object, the reference index's dicts as they
are) and this tree's (`OrderShard.__getstate__`, `ReferenceIndex.__getstate__`):
pickle.dumps, then pickle.loads and restore. Prints CPU seconds (min and all runs)
and sizes. One process and alternation keep a shared machine's noise out of the ratio.
"""

import argparse
import pickle
import time
from array import array
from operator import attrgetter

from benchmarks.replay_bench import Core, dataset, read_batches
from dataflows.gc_tuning import tune_gc
from schemas.config import load_settings
from state.evidence import Order
from state.shard import OrderShard

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--orders", type=int, default=240_000)
ap.add_argument("--repeat", type=int, default=5)
args = ap.parse_args()
settings = load_settings()
core = Core(settings)
for i, b in enumerate(read_batches(dataset(args.orders, 0.9), settings.pipeline.batch_size)):
    core.feed(i, b)
tune_gc()
P = pickle.HIGHEST_PROTOCOL
# --- the encodings before this branch (6e5b0a0): rows of 14 fields + times; the wheel object;
# the index object's __dict__ as is (dicts of str)
ROW = Order.__slots__  # the same fields, then kept as a row of 14 beside the times
_row = attrgetter(*ROW)


class OldOrder:
    __slots__ = (*ROW, "t")


def old_shard_dumps(sh):
    vals = list(sh.orders.values())
    return pickle.dumps(
        {
            "orders": (list(sh.orders), [_row(o) for o in vals], b"".join(vals)),
            "clock": sh.clock,
            "wheel": sh._wheel,
        },
        protocol=P,
    )


def old_shard_loads(b):
    st = pickle.loads(b)
    ids, rows, times = st["orders"]
    view = memoryview(times)
    new = OldOrder.__new__
    out = {}
    at = 0
    for oid, row in zip(ids, rows, strict=True):
        o = new(OldOrder)
        (
            o.alerts,
            o.carrier,
            o.channel,
            o.customer,
            o.flags,
            o.main,
            o.refs,
            o.reported,
            o.seen,
            o.side,
            o.side_tier,
            o.status,
            o.tracking,
            o.version,
        ) = row
        t = array("q")
        t.frombytes(view[at : at + 112])
        o.t = t
        at += 112
        out[oid] = o
    return out


def new_shard_dumps(sh):
    return pickle.dumps(sh.__getstate__(), protocol=P)


def new_shard_loads(b):
    s = OrderShard(settings)
    s.restore(pickle.loads(b), settings)
    return s


def old_index_dumps(ix):
    return pickle.dumps(ix.__dict__, protocol=P)  # what pickling the object did before


def new_index_dumps(ix):
    return pickle.dumps(ix, protocol=P)


runs = {
    k: []
    for k in (
        "shards dumps old",
        "shards dumps new",
        "shards loads old",
        "shards loads new",
        "index dumps old",
        "index dumps new",
        "index loads old",
        "index loads new",
    )
}
sizes = {}


def timed(name, f):
    c = time.process_time()
    r = f()
    runs[name].append(time.process_time() - c)
    return r


for _ in range(args.repeat):
    ob = timed("shards dumps old", lambda: [old_shard_dumps(s) for s in core.shards])
    nb = timed("shards dumps new", lambda: [new_shard_dumps(s) for s in core.shards])
    timed("shards loads old", lambda ob=ob: [old_shard_loads(b) for b in ob])
    timed("shards loads new", lambda nb=nb: [new_shard_loads(b) for b in nb])
    oi = timed("index dumps old", lambda: [old_index_dumps(ix) for ix in core.index])
    ni = timed("index dumps new", lambda: [new_index_dumps(ix) for ix in core.index])
    timed("index loads old", lambda oi=oi: [pickle.loads(b) for b in oi])
    timed("index loads new", lambda ni=ni: [pickle.loads(b) for b in ni])
    sizes = {
        "shards old": sum(map(len, ob)),
        "shards new": sum(map(len, nb)),
        "index old": sum(map(len, oi)),
        "index new": sum(map(len, ni)),
    }
print(
    f"open orders {core.open_orders():,}, index entries "
    f"{sum(len(ix.current) + len(ix.previous) for ix in core.index):,}; "
    f"CPU s, min of {args.repeat}"
)
for k, v in runs.items():
    print(f"  {k:<20}{min(v):8.3f}   (all: {' '.join(f'{x:.3f}' for x in v)})")
for k, v in sizes.items():
    print(f"  {k:<20}{v:>12,} bytes")
