"""Named incident switches: what each one breaks, for which orders and when.

Every subset is a pure function of (seed, order index, incident), so it is the same
whatever else is switched on. Windows are fixed fractions of the period (see
`windows`): the lead's benchmarks and tests can compute them too.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from random import Random

import orjson

from sim.catalog import DELAY, STREAM
from sim.clock import HOUR, MINUTE, SECOND, from_ms, to_ms, utc_ms
from sim.ids import mix, salt, unit
from sim.lives import Ev
from sim.model import Order
from sim.payloads import Ctx, channel

INCIDENTS: dict[str, str] = {
    "lost_payment_callback": "~5% of paid orders with an OMS: the OMS never gets the payment "
    "callback (no 已支付/Paid, no 待发货) and says 待支付 until the order ships",
    "field_rename": "from mid-period, douyin payloads carry waybill_no instead of logistics_no",
    "carrier_wrong_timezone": "from mid-period, yto acceptTime is 8 h ahead (wall time as if "
    "UTC+16), so its event times run ~8 h ahead of ingestion",
    "carrier_api_outage": "a 15-minute window where every jt carrier_api call fails slowly "
    "(3-12 s); jt labels due in it are printed just after it",
    "channel_error_storm": "a 10-minute window where ~30% of pinduoduo messages are malformed "
    "(broken JSON lines or order_status 9), plus a re-sync burst of ~40 pdd messages/min",
    "duplicate_webhooks": "~10% of gateway and carrier webhooks delivered twice, 1-30 s apart, "
    "with identical payload and event_id",
    "out_of_order_scans": "~20% of parcels: a hub's arrival scan is received 5 s-3 min after its "
    "departure scan (taken 2-8 min after arrival)",
    "reship_delivered": "~1% of delivered orders get a WMS RESHIP_REQUESTED 1-24 h after delivery",
    "flash_sale": "a 1-hour burst with 10x the order rate (extra orders on top of `orders`)",
    "stalled_tracking": "~2% of picked-up parcels: no carrier scan for 20 h after pickup",
    "delivery_not_reflected": "~3% of delivered orders with an OMS: the OMS never reports "
    "已签收/Delivered (nor completion)",
}

LOST_PAYMENT = 0.05
DUPLICATES = 0.10
OUT_OF_ORDER = 0.20
RESHIP = 0.01
STALLED = 0.02
NOT_REFLECTED = 0.03
STORM_BAD = 0.30
STALL_FOR = 20 * HOUR

_S = {name: salt(name) for name in INCIDENTS}
_WINDOWS = {  # name -> (start as a fraction of the period, length ms); None = to the end
    "field_rename": (0.5, None),
    "carrier_wrong_timezone": (0.5, None),
    "flash_sale": (0.40, HOUR),
    "carrier_api_outage": (0.45, 15 * MINUTE),
    "channel_error_storm": (0.55, 10 * MINUTE),
}


def windows(start_ms: int, end_ms: int) -> dict[str, tuple[int, int | None]]:
    """[from, to) of each windowed incident, in epoch ms (to None: until the stream ends)."""
    span = end_ms - start_ms
    out: dict[str, tuple[int, int | None]] = {}
    for name, (frac, length) in _WINDOWS.items():
        a = start_ms + int(frac * span)
        if name == "flash_sale":  # keep the whole hour inside the period when it fits
            a = max(start_ms, min(a, end_ms - HOUR))
        out[name] = (a, None if length is None else a + length)
    return out


def incident_windows(start: datetime, hours: float) -> dict[str, tuple[datetime, datetime | None]]:
    """The same windows as datetimes, for benchmarks and tests."""
    s = to_ms(start)
    return {
        k: (from_ms(a), None if b is None else from_ms(b))
        for k, (a, b) in windows(s, s + int(hours * HOUR)).items()
    }


@dataclass(frozen=True, slots=True)
class Plan:
    seed: int
    on: frozenset[str]
    windows: dict[str, tuple[int, int | None]]

    @property
    def ctx(self) -> Ctx:
        w = self.windows
        outage = w["carrier_api_outage"] if "carrier_api_outage" in self.on else None
        return Ctx(
            seed=self.seed,
            rename_from=w["field_rename"][0] if "field_rename" in self.on else None,
            yto_skew_from=w["carrier_wrong_timezone"][0]
            if "carrier_wrong_timezone" in self.on
            else None,
            outage=(outage[0], outage[1]) if outage and outage[1] is not None else None,
        )

    def hit(self, name: str, o: Order, share: float) -> bool:
        return name in self.on and unit(self.seed, o.idx, _S[name]) < share

    def rng(self, name: str, o: Order) -> Random:
        return Random(mix(self.seed, o.idx, _S[name], 1))


# ---------------------------------------------------------------- per order
def _scans(evs: list[Ev], step: str) -> list[Ev]:
    return [e for e in evs if e[2] == "scan" and e[3][0] == step]


def _shift_from(evs: list[Ev], t: int, delta: int, inclusive: bool) -> None:
    for e in evs:
        if e[1] > t or (inclusive and e[1] == t):
            e[0] += delta
            e[1] += delta


def _span(rng: Random, lo: int, hi: int) -> int:
    return lo + int(rng.random() * (hi - lo))


def apply_to_order(plan: Plan, o: Order, evs: list[Ev]) -> list[Ev]:
    """Structural incidents on one order's absolute events [received, event time, kind, arg]."""
    if "carrier_api_outage" in plan.on and o.carrier == "jt":
        _delay_label(plan, o, evs)
    if plan.hit("stalled_tracking", o, STALLED):
        _stall(evs)
    if plan.hit("out_of_order_scans", o, OUT_OF_ORDER):
        _swap_hub_scans(plan.rng("out_of_order_scans", o), o, evs)
    if o.has_oms and o.tp >= 0 and plan.hit("lost_payment_callback", o, LOST_PAYMENT):
        gone = (("paid", False), ("to_ship", False))
        evs = [e for e in evs if not (e[2] == "oms" and e[3] in gone)]
    delivered = _scans(evs, "delivered")
    if delivered and o.has_oms and plan.hit("delivery_not_reflected", o, NOT_REFLECTED):
        gone = (("delivered", False), ("completed", False))
        evs = [e for e in evs if not (e[2] == "oms" and e[3] in gone)]
    if delivered and plan.hit("reship_delivered", o, RESHIP):
        t = delivered[0][1] + _span(plan.rng("reship_delivered", o), HOUR, 24 * HOUR)
        evs.append([t + 2 * SECOND, t, "wms", "RESHIP_REQUESTED"])
    if "duplicate_webhooks" in plan.on:
        rng = plan.rng("duplicate_webhooks", o)
        r = rng.random
        evs += [
            [e[0] + _span(rng, SECOND, 30 * SECOND), e[1], e[2], e[3]]
            for e in evs
            if e[2] in ("pay", "scan") and r() < DUPLICATES
        ]
    return evs


def _delay_label(plan: Plan, o: Order, evs: list[Ev]) -> None:
    """A jt label due during the outage: its calls fail, it is printed just after."""
    a, b = plan.windows["carrier_api_outage"]
    assert b is not None
    label = next((e for e in evs if e[2] == "wms" and e[3] == "LABEL_PRINTED"), None)
    call = next((e for e in evs if e[2] == "api" and e[3][1] == "create_label"), None)
    if label is None or call is None or not a <= call[1] < b:
        return
    rng = plan.rng("carrier_api_outage", o)
    new = b + _span(rng, MINUTE, 5 * MINUTE)
    _shift_from(evs, label[1], new - label[1], inclusive=True)
    t = call[1]
    while True:  # the shipping service retries every 1-3 min while the API is down
        t += _span(rng, MINUTE, 3 * MINUTE)
        if t >= b:
            break
        evs.append([t + _span(rng, 0, 500), t, "api", call[3]])
    t = new - _span(rng, 500, 3 * SECOND)
    evs.append([t + _span(rng, 0, 500), t, "api", call[3]])


def _stall(evs: list[Ev]) -> None:
    pickup = _scans(evs, "pickup")
    if not pickup:
        return
    tp = pickup[0][1]
    later = [e[1] for e in evs if e[2] == "scan" and e[1] > tp]
    if later:
        _shift_from(evs, tp, STALL_FOR - (min(later) - tp), inclusive=False)


def _swap_hub_scans(rng: Random, o: Order, evs: list[Ev]) -> None:
    arrive = next((e for e in evs if e[2] == "scan" and e[3] == ("arrive", 0)), None)
    if arrive is None:
        return
    depart = next((e for e in evs if e[2] == "scan" and e[3] == ("depart", 0)), None)
    if depart is None:
        depart = [0, 0, "scan", ("depart", 0)]
        evs.append(depart)
    lo, hi = DELAY[o.via]
    depart[1] = arrive[1] + _span(rng, 2 * MINUTE, 8 * MINUTE)
    depart[0] = depart[1] + _span(rng, lo, hi)
    arrive[0] = depart[0] + _span(rng, 5 * SECOND, 3 * MINUTE)


# ---------------------------------------------------------------- run-wide
# received, seq, event time, kind, order, arg
Entry = tuple[int, int, int, str, Order | None, object]


def add_global(plan: Plan, entries: list[Entry], seq: int) -> list[Entry]:
    """Incidents that are not about one order: background API polling, the pdd storm."""
    if "carrier_api_outage" in plan.on:
        a, b = plan.windows["carrier_api_outage"]
        assert b is not None
        rng = Random(mix(plan.seed, _S["carrier_api_outage"], 2))
        t = a - 5 * MINUTE
        while t < b + 5 * MINUTE:  # the tracking poller keeps calling through the outage
            t += _span(rng, 10 * SECOND, 30 * SECOND)
            arg = ("jt", "query_tracking", _span(rng, 100, 800))
            entries.append((t + _span(rng, 0, 500), seq, t, "api", None, arg))
            seq += 1
    if "channel_error_storm" in plan.on:
        entries = _storm(plan, entries, seq)
    return entries


def _storm(plan: Plan, entries: list[Entry], seq: int) -> list[Entry]:
    a, b = plan.windows["channel_error_storm"]
    assert b is not None
    rng = Random(mix(plan.seed, _S["channel_error_storm"], 2))
    r = rng.random

    def broken() -> str:
        return "raw" if r() < 0.5 else "bad"

    pdd: list[Entry] = []
    for i, e in enumerate(entries):
        o = e[4]
        if e[3] == "ch" and o is not None and o.channel == "pinduoduo" and e[0] < b:
            if e[0] >= a and r() < STORM_BAD:
                entries[i] = e = (e[0], e[1], e[2], broken(), o, e[5])
            if e[0] >= a - 12 * HOUR:
                pdd.append(e)
    pdd.sort()
    received = [e[0] for e in pdd]
    t = a
    while pdd:  # the sync service re-publishes recent pdd updates, broken ones included
        t += _span(rng, SECOND, 2 * SECOND)
        if t >= b:
            break
        seen = bisect_left(received, t)
        if seen:
            e = pdd[int(r() * seen)]
            kind = broken() if r() < STORM_BAD else "ch"
            entries.append((t, seq, e[2], kind, e[4], e[5]))
            seq += 1
    return entries


MALFORMED = frozenset({"raw", "bad"})


def malformed(ctx: Ctx, recv: int, t: int, kind: str, o: Order, stage: str) -> dict:
    """A broken pinduoduo message: unknown order_status, or a line that is not JSON."""
    src, payload, _ = channel(ctx, o, t, stage)
    env = {"stream": STREAM[src], "source": src, "received_at": utc_ms(recv), "payload": payload}
    if kind == "bad":
        payload["order_status"] = 9
        return env
    text = orjson.dumps(env).decode()
    return {"__raw__": text[: len(text) * 3 // 5], "received_at": env["received_at"]}


def names(incidents: Iterable[str]) -> frozenset[str]:
    on = frozenset(incidents)
    unknown = sorted(on - INCIDENTS.keys())
    if unknown:
        raise ValueError(f"unknown incidents {unknown}; known: {sorted(INCIDENTS)}")
    return on
