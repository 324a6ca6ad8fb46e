"""Source-level health, kept under one key: channel and carrier breakers, payment
success rates, and the source alerts UNMAPPED_STATUS, SCHEMA_DRIFT and CLOCK_SKEW.

The stateless routing step folds each input batch into a small `HealthBatch`;
`HealthState` applies the batches in input order. Everything runs on the ingestion
clock, and the outputs are the same however the input is cut into batches.
Operator commands that force a channel or carrier breaker (`schemas.commands`) are
items of the batch like carrier calls, applied in their input position; one whose id
was already applied, or stale, is dead-lettered instead (`state.command_ids`).
"""

from __future__ import annotations

import sys

from schemas.commands import AUTO, Command
from schemas.config import Settings, SuccessRate
from schemas.event import DeadLetter, Event
from schemas.statuses import SHIPPED_BAND
from state.breakers import CarrierBreaker, ChannelBreaker
from state.command_ids import SeenCommands
from state.records import Alert, Decision
from state.watermark import key_clock

MINUTE = 60_000
MAX_KEYS_PER_SOURCE = 1000
"""Payload keys remembered per source for SCHEMA_DRIFT; beyond it new keys are not learnt."""

Record = Alert | Decision | DeadLetter  # a dead letter: a replayed operator command


class HealthBatch:
    """What one input batch says about source health: about 1 KB, plus ~20 B per carrier call.

    Counts are summed per window. What has an order (carrier calls, unmapped
    statuses, skewed times, drift candidates, the first sighting of each key set)
    keeps its position in the batch. Times are the batch's running ingestion clock,
    the largest received_ms so far, so they never go backwards.
    """

    __slots__ = (
        "calls",
        "clock_ms",
        "commands",
        "counts",
        "drift",
        "events",
        "keysets",
        "outcomes",
        "pos",
        "skew_ms",
        "skews",
        "unmapped",
        "window_ms",
    )

    def __init__(self, skew_ms: int, window_ms: int = MINUTE) -> None:
        self.skew_ms = skew_ms
        self.window_ms = window_ms  # the channel breaker's window
        self.clock_ms = 0  # the ingestion clock: the largest received_ms; the caller may move it on
        self.pos = 0
        self.counts: dict[tuple[str, int], list[int]] = {}  # (channel, window) -> [total, bad]
        self.outcomes: dict[tuple[str, int], list[int]] = {}  # (gateway, minute) -> [ok, failed]
        self.calls: list[tuple[int, int, str, bool, float]] = []  # pos, at, carrier, ok, latency
        self.commands: list[tuple[int, int, Command]] = []  # pos, at: channel/carrier commands
        self.unmapped: list[tuple[int, int, str, str]] = []  # pos, at, source, value
        self.skews: list[tuple[int, int, str, int]] = []  # pos, at, source, skew_ms
        self.keysets: dict[tuple[str, tuple[str, ...]], int] = {}  # (source, keys) -> first pos
        self.drift: list[tuple[int, int, str, tuple[str, ...], tuple[str, ...], str, str]] = []
        self.events: dict[tuple[str, str], int] = {}  # (stream, source) -> events, for metrics

    @classmethod
    def for_settings(cls, settings: Settings) -> HealthBatch:
        return cls(settings.thresholds.clock_skew, settings.breakers.channel.window)

    def _tick(self, received_ms: int | None, key: int | None = None) -> tuple[int, int]:
        if key is not None:  # a merge key: the item's place and time in every partition's order
            at = key_clock(key)
            if at > self.clock_ms:
                self.clock_ms = at
            return key, at
        pos = self.pos
        self.pos += 1
        if received_ms is not None and received_ms > self.clock_ms:
            self.clock_ms = received_ms
        return pos, self.clock_ms

    def _count(self, channel: str, at: int, bad: int) -> None:
        w = self.counts.setdefault((sys.intern(channel), at - at % self.window_ms), [0, 0])
        w[0] += 1
        w[1] += bad

    def add_event(self, ev: Event, key: int | None = None) -> None:
        """`key`: the event's merge key (`state.watermark`), else its place in this batch."""
        pos, at = self._tick(ev.received_ms, key)
        source = sys.intern(ev.source)
        key = (ev.stream, source)
        self.events[key] = self.events.get(key, 0) + 1
        if ev.kind == "channel":
            self._count(ev.channel or source, at, 0)
        if ev.kind == "gateway" and ev.outcome in ("success", "failure"):
            o = self.outcomes.setdefault((source, at - at % MINUTE), [0, 0])
            o[ev.outcome == "failure"] += 1
        if ev.telemetry is not None:
            t = ev.telemetry
            carrier = sys.intern(ev.carrier or t.carrier)
            self.calls.append((pos, at, carrier, t.ok, t.latency_ms))
        if ev.event_ms - ev.received_ms > self.skew_ms:
            self.skews.append((pos, at, source, ev.event_ms - ev.received_ms))
        if ev.drift_fields:
            self.drift.append(
                (pos, at, source, ev.keys, ev.drift_fields, ev.order_id or "", ev.raw_status)
            )
        elif ev.keys and not SHIPPED_BAND.isdisjoint(ev.claims):
            # learn a source's keys only from payloads that did carry what their status
            # implies: a renamed field first seen on an earlier-stage payload stays "new"
            self.keysets.setdefault((source, ev.keys), pos)

    def add_command(self, command: Command, key: int | None = None) -> None:
        """An operator's command forcing a channel or carrier breaker, in input order."""
        pos, at = self._tick(command.received_ms, key)
        self.commands.append((pos, at, command))

    def add_dead_letter(self, dl: DeadLetter, channel: str | None, key: int | None = None) -> None:
        """`channel`: the channel of the dead letter's source, for channel sources only."""
        pos, at = self._tick(dl.received_ms, key)
        if channel is not None:
            self._count(channel, at, 1)
        if dl.reason == "unmapped_status" and dl.source is not None:
            self.unmapped.append((pos, at, sys.intern(dl.source), dl.value or ""))

    def take_before(self, bound: int) -> HealthBatch:
        """Move the ordered items placed before `bound` into a batch of their own.

        With merge keys for places, the items of several partitions' batches below a
        watermark make one batch in every partition's order (`merged`); the counts
        stay here (`HealthState.count` takes them when the batch arrives).
        """
        out = HealthBatch(self.skew_ms, self.window_ms)
        for name in ("calls", "commands", "unmapped", "skews", "drift"):
            items = getattr(self, name)
            if items and items[0][0] < bound:
                i = 0
                while i < len(items) and items[i][0] < bound:
                    i += 1
                setattr(out, name, items[:i])
                setattr(self, name, items[i:])
        if self.keysets:
            taken = {k: pos for k, pos in self.keysets.items() if pos < bound}
            if taken:
                out.keysets = taken
                self.keysets = {k: pos for k, pos in self.keysets.items() if pos >= bound}
        return out

    def has_items(self) -> bool:
        return bool(
            self.calls or self.commands or self.unmapped or self.skews or self.drift or self.keysets
        )

    @classmethod
    def merged(cls, batches: list[HealthBatch], clock_ms: int) -> HealthBatch:
        """One batch of the ordered items of `batches` (no counts), at `clock_ms`."""
        out = cls(batches[0].skew_ms, batches[0].window_ms) if batches else cls(0)
        for b in batches:
            out.calls += b.calls
            out.commands += b.commands
            out.unmapped += b.unmapped
            out.skews += b.skews
            out.drift += b.drift
            for k, pos in b.keysets.items():
                if k not in out.keysets or pos < out.keysets[k]:
                    out.keysets[k] = pos
        out.clock_ms = clock_ms
        return out


class _SuccessRate:
    """One gateway's payment success rate over the last completed minutes.

    Judged at the minute boundaries where a minute enters or leaves the window (the
    rate cannot change in between). Without `min_volume` outcomes nothing changes:
    a firing alert resolves only on a window with the volume and a good rate.
    """

    __slots__ = ("cfg", "done", "first_seen", "minutes", "source")

    def __init__(self, source: str, cfg: SuccessRate) -> None:
        self.source = source
        self.cfg = cfg
        self.minutes: dict[int, list[int]] = {}  # minute start -> [ok, failed]
        self.first_seen: int | None = None  # the firing alert's first_seen, else None
        self.done = 0  # judged up to here

    def add(self, at_ms: int, ok: int, failed: int) -> None:
        """Add to the minute holding at_ms; a late count goes to the current minute."""
        at = max(at_ms, self.done)
        m = self.minutes.setdefault(at - at % MINUTE, [0, 0])
        m[0] += ok
        m[1] += failed

    def _leaves(self, minute: int) -> int:
        """The first boundary whose window no longer holds this minute."""
        end = minute + self.cfg.window
        return end - end % MINUTE + MINUTE

    def advance(self, now_ms: int) -> list[Alert]:
        if now_ms <= self.done:
            return []  # called for every input batch: most move nothing
        out = []
        marks = {m + MINUTE for m in self.minutes} | {self._leaves(m) for m in self.minutes}
        for mark in sorted(t for t in marks if self.done < t <= now_ms):
            alert = self._judge(mark)
            if alert is not None:
                out.append(alert)
        self.done = max(self.done, now_ms)
        for m in [m for m in self.minutes if self._leaves(m) <= self.done]:
            del self.minutes[m]
        return out

    def _judge(self, mark: int) -> Alert | None:
        cfg = self.cfg
        first = -(-(mark - cfg.window) // MINUTE) * MINUTE  # minutes held may run far ahead
        minutes = self.minutes
        inside = [minutes[m] for m in range(first, mark, MINUTE) if m in minutes]
        ok = sum(v[0] for v in inside)
        total = ok + sum(v[1] for v in inside)
        if total < cfg.min_volume:
            return None
        rate = ok / total
        low = rate < cfg.threshold
        if low == (self.first_seen is not None):
            return None
        details = {
            "success": ok,
            "total": total,
            "rate": round(rate, 5),
            "threshold": cfg.threshold,
            "window_ms": cfg.window,
            "min_volume": cfg.min_volume,
        }
        span = f"over {cfg.window // 1000}s ({ok} of {total})"
        if low:
            first_seen = self.first_seen = mark
            state = "firing"
            msg = f"{self.source}: payment success rate {rate:.2%} below {cfg.threshold:.2%} {span}"
        else:
            first_seen, self.first_seen = self.first_seen or 0, None
            state = "resolved"
            msg = f"{self.source}: payment success rate back to {rate:.2%} {span}"
        subject = {"source": self.source}
        return Alert("PAYMENT_SUCCESS_RATE_LOW", state, subject, msg, first_seen, mark, details)


def _rank(r: Alert | Decision) -> tuple[int, int, str, str]:
    """The order of records due at the same time: breakers, then alerts, by key."""
    if isinstance(r, Decision):
        return (r.at_ms, 0, r.breaker, r.key)
    return (r.at_ms, 1, r.type, r.subject.get("source", ""))


class HealthState:
    """All source-level state, under one key of the dataflow.

    `apply` replays a batch as if its items came one by one: an item at ingestion
    time t is preceded by everything due at or before t (windows, cool-downs, rate
    judgements), sorted by time and key. So the outputs do not depend on batch cuts.
    """

    __slots__ = (
        "carrier_cfg",
        "carriers",
        "channel_cfg",
        "channels",
        "clock",
        "gateways",
        "interval",
        "keys",
        "rate_cfg",
        "recent",
        "seen",
        "subjects",
    )

    def __init__(self, settings: Settings) -> None:
        b = settings.breakers
        self.channel_cfg = b.channel
        self.carrier_cfg = b.carrier
        self.rate_cfg = settings.thresholds.payment_success_rate
        self.interval = settings.thresholds.source_alert_interval
        self.channels = {c: ChannelBreaker(c, b.channel) for c in settings.channels}
        self.carriers = {
            c: CarrierBreaker(c, b.carrier, spec.backup) for c, spec in settings.carriers.items()
        }
        self.gateways: dict[str, _SuccessRate] = {}
        self.subjects: dict[str, dict[str, str]] = {}  # source -> the subject of its alerts
        for name, spec in settings.sources.items():
            self.subjects[name] = {"source": name}
            if spec.kind == "channel" and spec.channel:
                self.subjects[name]["channel"] = spec.channel
            if spec.carrier:
                self.subjects[name]["carrier"] = spec.carrier
        self.recent: dict[tuple[str, str, str], int] = {}  # (type, source, what) -> last fired
        self.keys: dict[str, set[str]] = {}  # payload keys seen per source
        self.seen = SeenCommands.for_config(settings.control)  # recent command ids applied
        self.clock = 0

    # ------------------------------------------------------------ the clock
    def count(self, batch: HealthBatch) -> None:
        """Take in a batch's counts: windows are judged only once the clock has passed
        their end, so counts may come before the ordered items around them."""
        if batch.window_ms != self.channel_cfg.window:
            raise ValueError("the batch was built for another channel window")
        for (channel, window), (total, bad) in batch.counts.items():
            self._channel(channel).count(window, total, bad)
        for (source, minute), (ok, failed) in batch.outcomes.items():
            self._gateway(source).add(minute, ok, failed)

    def apply(self, batch: HealthBatch) -> list[Record]:
        """Take in one batch, then fire what is due up to its clock.

        Counts go in first: a window is judged only once the clock has passed its end,
        after every item before that, and a count for a judged window joins the
        current one. The ordered items then go one by one, in input order.
        """
        self.count(batch)
        out: list[Record] = []
        handlers = [
            (batch.calls, 0, self._on_call),
            (batch.unmapped, 1, self._on_unmapped),
            (batch.skews, 2, self._on_skew),
            (batch.drift, 3, self._on_drift),  # before its own key set is learnt
            (((pos, 0, *ks) for ks, pos in batch.keysets.items()), 4, self._on_keyset),
            (batch.commands, 5, self._on_command),
        ]
        items = sorted(
            ((rec[0], order, fn, rec) for recs, order, fn in handlers for rec in recs),
            key=lambda item: item[:2],
        )
        at = self.clock
        for _, _, fn, rec in items:
            at = max(at, rec[1])
            due, said = fn(at, *rec[2:])
            if due or said:
                out += self._fire(at, due)
                out += said
        self.clock = max(at, batch.clock_ms)
        out += self._fire(self.clock)
        self._prune()
        return out

    def breaker_states(self) -> list[tuple[str, str, str]]:
        """(breaker, key, state) of every channel and carrier breaker, for the gauges."""
        out = [("channel", k, b.state) for k, b in self.channels.items()]
        out += [("carrier", k, b.state) for k, b in self.carriers.items()]
        return out

    def advance(self, now_ms: int) -> list[Record]:
        """Move the ingestion clock on (live mode, while caught up) and fire what is due."""
        self.clock = max(self.clock, now_ms)
        out = self._fire(self.clock)
        self._prune()
        return out

    def _fire(self, at: int, due: list[Record] | None = None) -> list[Record]:
        out: list[Record] = list(due or ())
        for ch in self.channels.values():
            out += ch.advance(at)
        for ca in self.carriers.values():
            out += ca.advance(at)
        for gw in self.gateways.values():
            out += gw.advance(at)
        out.sort(key=_rank)
        return out

    def _prune(self) -> None:
        if any(t + self.interval <= self.clock for t in self.recent.values()):
            self.recent = {k: t for k, t in self.recent.items() if t + self.interval > self.clock}

    # ------------------------------------------------------------ components
    # One made on first sight starts at the current clock: it takes no count for time past.
    def _channel(self, name: str) -> ChannelBreaker:
        if name not in self.channels:
            self.channels[name] = ChannelBreaker(name, self.channel_cfg)
            self.channels[name].advance(self.clock)
        return self.channels[name]

    def _carrier(self, name: str) -> CarrierBreaker:
        if name not in self.carriers:
            self.carriers[name] = CarrierBreaker(name, self.carrier_cfg, None)
        return self.carriers[name]

    def _gateway(self, name: str) -> _SuccessRate:
        if name not in self.gateways:
            self.gateways[name] = _SuccessRate(name, self.rate_cfg)
            self.gateways[name].advance(self.clock)
        return self.gateways[name]

    # ------------------------------------------------------------ items, in input order
    # Each returns (records due before the item, records the item itself gives).
    def _on_call(self, at: int, carrier: str, ok: bool, latency: float) -> tuple[list, list]:
        breaker = self._carrier(carrier)
        due = breaker.advance(at)
        return due, breaker.call(at, ok, latency)

    def _on_command(self, at: int, command: Command) -> tuple[list, list]:
        """Force a breaker (see `state.breakers`); what was due before it fires first."""
        refused = self.seen.refuse(command.command_id, command.received_ms, at)
        if refused is not None:
            return [], [command.refused(refused)]
        if command.breaker == "channel":
            breaker: ChannelBreaker | CarrierBreaker = self._channel(command.key)
        else:
            breaker = self._carrier(command.key)
        due = breaker.advance(at)
        forced = command.state != AUTO
        figures = command.figures(forced)
        d = breaker.force(command.state, at, command.explanation(), figures)
        return due, [] if d is None else [d]

    def _on_unmapped(self, at: int, source: str, value: str) -> tuple[list, list]:
        if not self._allow("UNMAPPED_STATUS", source, value, at):
            return [], []
        msg = f"{source}: status {value!r} is not in the source's status map"
        return [], [self._alert("UNMAPPED_STATUS", source, value, at, msg, {"value": value})]

    def _on_skew(self, at: int, source: str, skew_ms: int) -> tuple[list, list]:
        if not self._allow("CLOCK_SKEW", source, "", at):
            return [], []
        skew_s = round(skew_ms / 1000, 3)
        msg = f"{source}: event times run {skew_s:g} s ahead of ingestion (a wrong time zone?)"
        return [], [self._alert("CLOCK_SKEW", source, "", at, msg, {"skew_s": skew_s})]

    def _on_drift(
        self,
        at: int,
        source: str,
        keys: tuple[str, ...],
        missing: tuple[str, ...],
        order_id: str,
        raw_status: str,
    ) -> tuple[list, list]:
        seen = self.keys.get(source)
        said = []
        # A source's first payload has nothing to differ from.
        new = [k for k in keys if k not in seen] if seen else []
        for key in new:
            if self._allow("SCHEMA_DRIFT", source, key, at):
                msg = f"{source}: {raw_status} status without {'/'.join(missing)}; new key {key!r}"
                details = {"missing": list(missing), "new_key": key, "order_id": order_id}
                said.append(self._alert("SCHEMA_DRIFT", source, key, at, msg, details))
        self._on_keyset(at, source, keys)
        return [], said

    def _on_keyset(self, at: int, source: str, keys: tuple[str, ...]) -> tuple[list, list]:
        seen = self.keys.setdefault(source, set())
        if len(seen) < MAX_KEYS_PER_SOURCE:
            seen.update(keys)
        return [], []

    def _allow(self, kind: str, source: str, what: str, at: int) -> bool:
        """Once per source and `what` per interval, counted from the last alert."""
        last = self.recent.get((kind, source, what))
        if last is not None and at < last + self.interval:
            return False
        self.recent[(kind, source, what)] = at
        return True

    def _alert(
        self, kind: str, source: str, what: str, at: int, msg: str, details: dict[str, object]
    ) -> Alert:
        subject = dict(self.subjects.get(source) or {"source": source})
        return Alert(kind, "firing", subject, msg, at, at, details, what)
