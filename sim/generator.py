"""The simulator's entry points: `generate` envelopes in ingestion order, `write_jsonl`.

Each order's life is drawn from the run's life RNG, placed in time (day curve, or a cut-off
position for open orders), bent by the incidents, and kept as compact tuples; payloads
are only built while the sorted stream is written, which keeps 1M+ pending events
cheap and the output byte-identical for a seed.
"""

from __future__ import annotations

import gc
import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from random import Random

import orjson

from sim import incidents as inc
from sim.catalog import CODES, STREAM
from sim.clock import HOUR, MINUTE, cn_date, cn_hour, to_ms, utc_date, utc_ms
from sim.ids import mix, salt, unit
from sim.lives import Ev, build_life
from sim.model import Order
from sim.payloads import BUILD, Ctx
from sim.showcase import scripted

_S_START = salt("order-starts")
_S_OPEN = salt("open-orders")
_S_LIVES = salt("lives")
CUSTOMERS_PER_ORDER = 0.7  # fewer customers than orders: some buy twice


def _bump(h: float, mu: float, sd: float) -> float:
    d = abs(h - mu)
    d = min(d, 24 - d)
    return math.exp(-0.5 * (d / sd) ** 2)


def day_weight(ms: int) -> float:
    """Order rate by China time: quiet at night, peaks ~10:00 and ~21:00."""
    h = cn_hour(ms)
    return 0.06 + 0.9 * _bump(h, 10, 1.8) + 1.1 * _bump(h, 21, 1.6) + 0.5 * _bump(h, 15, 2.5)


class DayCurve:
    """Minute bins over [start, end) weighted by `day_weight`, sampled by inverse CDF."""

    def __init__(self, start_ms: int, end_ms: int) -> None:
        self.start, self.end = start_ms, end_ms
        self.cum: list[float] = []
        total = 0.0
        for i in range(max(1, math.ceil((end_ms - start_ms) / MINUTE))):
            total += day_weight(start_ms + i * MINUTE + MINUTE // 2)
            self.cum.append(total)
        self.total = total

    def sample(self, rng: Random) -> int:
        i = bisect_right(self.cum, rng.random() * self.total)
        return min(self.start + i * MINUTE + int(rng.random() * MINUTE), self.end - 1)

    def share(self, a: int, b: int) -> float:
        """The share of the day's orders expected in [a, b)."""

        def at(ms: int) -> float:
            i = max(0, min(len(self.cum), (ms - self.start) // MINUTE))
            return self.cum[i - 1] if i else 0.0

        return (at(b) - at(a)) / self.total


def generate(
    *,
    orders: int,
    seed: int,
    start: datetime,
    hours: float = 24.0,
    incidents: frozenset[str] = frozenset(),
    open_share: float = 0.0,
    incident_hours: float | None = None,
    showcase_at: datetime | None = None,
) -> Iterator[dict]:
    """Envelopes sorted by received_at (ties in generation order), deterministic in the seed.

    Orders start in [start, start + hours); their lives run on past the end (channels
    confirm receipt days later) except the `open_share` of them, which are placed so
    that the end of the period cuts them at a random stage, just before their next
    event was due (so the cut itself never makes an order look stuck before the end).
    A malformed line (channel_error_storm) is `{"__raw__": text, "received_at": ...}`.
    Incident windows are placed within the first `incident_hours` (default: all of
    the period), e.g. in the backlog part of a live demo. `showcase_at` adds the
    scripted orders of `sim.showcase`, whose alerts fall due in the minutes after it.
    """
    on = inc.names(incidents)
    if orders < 0 or hours <= 0 or not 0.0 <= open_share <= 1.0:
        raise ValueError("need orders >= 0, hours > 0 and 0 <= open_share <= 1")
    start_ms = to_ms(start)
    end_ms = start_ms + int(hours * HOUR)
    span_ms = int((incident_hours or hours) * HOUR)
    plan = inc.Plan(
        seed=seed, on=on, windows=inc.windows(start_ms, min(end_ms, start_ms + span_ms))
    )
    collecting = gc.isenabled()
    gc.disable()  # millions of long-lived tuples: the cyclic collector would rescan them all
    try:
        showcase = None if showcase_at is None else to_ms(showcase_at)
        entries = _plan_entries(plan, orders, start_ms, end_ms, open_share, showcase)
    finally:
        if collecting:
            gc.enable()
    return _emit(plan.ctx, entries)


def _plan_entries(
    plan: inc.Plan,
    orders: int,
    start_ms: int,
    end_ms: int,
    open_share: float,
    showcase: int | None = None,
) -> list[inc.Entry]:
    seed = plan.seed
    curve = DayCurve(start_ms, end_ms)
    placer = Random(mix(seed, _S_START))
    starts = [curve.sample(placer) for _ in range(orders)]
    if "flash_sale" in plan.on:
        a, b = plan.windows["flash_sale"]
        assert b is not None
        b = min(b, end_ms)
        extra = round(9 * orders * curve.share(a, b))
        starts += [a + int(placer.random() * (b - a)) for _ in range(extra)]
    customers = max(20, int(len(starts) * CUSTOMERS_PER_ORDER))

    entries: list[inc.Entry] = []
    placed: list[Order] = []
    seq = 0
    rng = Random(mix(seed, _S_LIVES))  # lives draw in order; incidents and cuts never use it
    for idx, t0 in enumerate(starts):
        o = Order(idx, seed, rng, customers)
        life = build_life(o, rng)
        is_open = open_share > 0 and unit(seed, idx, _S_OPEN) < open_share
        if is_open:
            t0 = _open_start(life, Random(mix(seed, idx, _S_OPEN)), start_ms, end_ms, t0)
        o.t0 = t0
        if plan.on:
            life = inc.apply_to_order(plan, o, [[r + t0, t + t0, k, a] for r, t, k, a in life])
            t0 = 0
        last = end_ms - t0 if is_open else 1 << 62
        entries += [
            (r + t0, seq + i, t + t0, k, o, a) for i, (r, t, k, a) in enumerate(life) if r <= last
        ]
        seq += len(life)
        placed.append(o)
    if showcase is not None:
        for o, life in scripted(seed, showcase, len(starts), customers):
            entries += [(r, seq + i, t, k, o, a) for i, (r, t, k, a) in enumerate(life)]
            seq += len(life)
            placed.append(o)
    _assign_ids(placed)
    entries = inc.add_global(plan, entries, seq)
    # Appended in seq order, so a stable sort on received_at alone is (received_at, seq):
    # much faster than comparing tuples.
    entries.sort(key=itemgetter(0))
    return entries


def _open_start(life: list[Ev], rng: Random, start_ms: int, end_ms: int, t0: int) -> int:
    """Creation time that makes the end fall between two events of the life, at random."""
    recv = sorted(e[0] for e in life)
    span = end_ms - start_ms
    cuts = [k for k in range(len(recv) - 1) if recv[k] < span]
    if not cuts:
        return t0
    k = cuts[int(rng.random() * len(cuts))]
    hi = min(recv[k + 1], span)
    return end_ms - (recv[k] + int(rng.random() * (hi - recv[k])))


def _assign_ids(orders: list[Order]) -> None:
    """Channel code + creation date + per-day sequence, in creation order."""
    counters: dict[tuple[str, str], int] = {}
    for o in sorted(orders, key=lambda o: (o.t0, o.idx)):
        code = CODES[o.channel]
        date = cn_date(o.t0) if o.cn else utc_date(o.t0)
        n = counters[code, date] = counters.get((code, date), 0) + 1
        o.oid = f"{code}{date}{n:05d}"


def _emit(ctx: Ctx, entries: list[inc.Entry]) -> Iterator[dict]:
    build, stream, malformed = BUILD, STREAM, inc.MALFORMED
    for recv, _seq, t, kind, o, arg in entries:
        if kind in malformed:
            yield inc.malformed(ctx, recv, t, kind, o, arg)  # type: ignore[arg-type]
            continue
        src, payload, eid = build[kind](ctx, o, t, arg)  # type: ignore[arg-type]
        env = {"stream": stream[src], "source": src, "received_at": utc_ms(recv)}
        if eid is not None:
            env["event_id"] = eid
        env["payload"] = payload
        yield env


def write_jsonl(path: str | Path, envelopes: Iterable[dict]) -> int:
    """Write one envelope per line (a `__raw__` marker as its broken text); return the count."""
    dumps = orjson.dumps
    n = 0
    buf: list[bytes] = []
    with open(path, "wb") as f:
        for env in envelopes:
            raw = env.get("__raw__")
            buf.append(raw.encode() if raw is not None else dumps(env))
            n += 1
            if len(buf) >= 8192:
                buf.append(b"")
                f.write(b"\n".join(buf))
                buf.clear()
        if buf:
            buf.append(b"")
            f.write(b"\n".join(buf))
    return n
