"""The orderguard dataflow: one graph for replay and for Kafka, sources and sinks injected.

    input -> sequencer -> route -+-> orders (shards) --+--> customers ----+
                                 +-> reference index --+                  +--> encode -> sink
                                 +-> health --------------------------------+
                                 +-> dead letters ----------------------------+

The sequencer merges all input partitions into one canonically ordered stream
(`dataflows.sequencer`); routing and normalizing it is spread over all workers again.

Step ids are part of Bytewax's recovery identity: they are frozen in STEP_IDS and
a test fails if one changes.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from connectors.metrics import (
    CUSTOMER_HOLDS,
    OUTPUT_REPLACED,
    PENDING_TRACKING,
    PROCESSING_LAG,
    REFERENCE_CONFLICTS,
    SNAPSHOT_DURATION,
    count_health_batch,
    count_records,
    observe_stages,
    publish_breakers,
    publish_census,
)
from connectors.replay import RawBatch
from dataflows.barrier import Barrier
from dataflows.gc_tuning import freeze_restored
from dataflows.router import (
    CUSTOMERS_KEY,
    HEALTH_KEY,
    Router,
    index_key,
    index_shards,
    shard_key,
    stable_shard,
)
from dataflows.sequencer import Sequencer
from schemas.config import Settings
from schemas.event import Event
from schemas.normalize import Normalizer
from state.clock import Frontier
from state.customers import CustomerDesk
from state.encode import Encoded, encode, is_replacement
from state.health import HealthBatch, HealthState
from state.reference_index import ReferenceIndex
from state.shard import OrderShard
from state.view import ViewUpdate, decisions_update, first_deliveries, orders_update

SEQUENCER_KEY = "sequencer"
log = logging.getLogger("orderguard.flow")

STEP_IDS = ("input", "sequencer", "tracking_index", "orders", "customers", "health", "output")
"""The steps that hold state or position; renaming one orphans its recovery data
(`tracking_index` is the reference index, under the step's first name)."""


def _pickled(obj: object, recovery: bool, step: str) -> bytes | None:
    """Snapshots must be immutable: pickle at snapshot time, not later.

    Bytewax asks for snapshots even when recovery is off; pickling whole shards for
    nothing would cost replay a large share of its time, so then we hand back None.
    """
    if not recovery:
        return None
    started = time.perf_counter()
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    SNAPSHOT_DURATION.labels(step).observe(time.perf_counter() - started)
    return data


def wall_clock_ms() -> int:
    """Nothing can have been received after now: the bound of every `received_at`."""
    return int(time.time() * 1000)


class _SequencerLogic(StatefulBatchLogic):
    def __init__(
        self,
        settings: Settings,
        resume: bytes | None,
        recovery: bool,
        wall_clock: Callable[[], int],
    ) -> None:
        self._recovery = recovery
        self._wall_clock = wall_clock
        tolerance = settings.pipeline.max_clock_ahead
        self.sequencer: Sequencer = (
            pickle.loads(resume).resume(tolerance) if resume else Sequencer(tolerance)
        )
        if resume:
            freeze_restored()

    def on_batch(self, values: list[RawBatch]) -> tuple[Iterable[RawBatch], bool]:
        out: list[RawBatch] = []
        now = self._wall_clock()
        for batch in values:
            out.extend(self.sequencer.add(batch, now))
        return out, False

    def on_eof(self) -> tuple[Iterable[RawBatch], bool]:
        return self.sequencer.flush(), False

    def snapshot(self) -> bytes | None:
        return _pickled(self.sequencer, self._recovery, "sequencer")


class _IndexLogic(StatefulBatchLogic):
    def __init__(self, settings: Settings, resume: bytes | None, recovery: bool) -> None:
        self._recovery = recovery
        self._shards = settings.pipeline.shards
        self._nindex = index_shards(settings)
        self.index, self.frontier, self.barrier = (
            pickle.loads(resume) if resume else (ReferenceIndex(settings), Frontier(), Barrier(1))
        )
        if resume:
            freeze_restored()

    def on_batch(self, values: list[Any]) -> tuple[Iterable[Any], bool]:
        out: list[Any] = []
        for msg in values:  # batches may arrive out of order from the routing workers
            for _, _, [(part, n, me, clock, parts, items)] in self.barrier.add(
                msg[0], msg[1], 0, msg
            ):
                out.extend(self._process(part, n, me, clock, parts, items))
        return out, False

    def _process(
        self, part: str, n: int, me: int, clock: int, parts: int, items: list[Event]
    ) -> list[Any]:
        nindex = self._nindex
        conflicts = self.index.conflicts
        released, dead = self.index.process(
            items,
            self.frontier.update(part, clock, parts),
            lambda key: stable_shard(key, nindex) == me,
        )
        PENDING_TRACKING.labels(index_key(me)).set(self.index.pending_count)
        if self.index.conflicts > conflicts:
            refused = self.index.conflicts - conflicts
            REFERENCE_CONFLICTS.inc(refused)
            log.warning(
                "reference index %s: %d link(s) refused: the reference already belongs to "
                "another order (the first link wins; %d so far)",
                index_key(me),
                refused,
                self.index.conflicts,
            )
        per_shard: list[list[Any]] = [[] for _ in range(self._shards)]
        for key, ev in released:
            per_shard[stable_shard(ev.order_id, self._shards)].append((key, ev))
        out: list[Any] = [
            (shard_key(i), ("index", part, n, i, me, evs)) for i, evs in enumerate(per_shard)
        ]
        if dead:
            out.append(("out", dead))
        return out

    def snapshot(self) -> bytes | None:
        return _pickled((self.index, self.frontier, self.barrier), self._recovery, "tracking_index")


CENSUS_INTERVAL = 10.0
"""Seconds between counts of a shard's orders for the gauges (a pass over its orders)."""


class _OrdersLogic(StatefulBatchLogic):
    def __init__(
        self, settings: Settings, resume: bytes | None, recovery: bool, view: bool = False
    ) -> None:
        self._recovery = recovery
        self._view = settings if view else None  # emit the Redis view's updates
        self._census_at = 0.0
        self._me: int | None = None
        self.shard = OrderShard(settings)
        if resume:
            self.barrier, self.frontier, state = pickle.loads(resume)
            self.shard.restore(state, settings)
            freeze_restored()
        else:
            self.barrier = Barrier(1 + index_shards(settings))
            self.frontier = Frontier()

    def on_batch(self, values: list[Any]) -> tuple[Iterable[Any], bool]:
        out: list[Any] = []
        for msg in values:
            if msg[0] == "direct":  # customer commands ride on shard 0's (dataflows.router)
                _, part, n, me, clock, parts, events, commands = msg
                payload = (clock, parts, [((e.seq, 0, e.seq), e) for e in events], commands)
                sender = 0
            else:
                _, part, n, me, idx, released = msg
                payload = (0, 0, released)
                sender = 1 + idx
            for part_, n_, payloads in self.barrier.add(part, n, sender, payload):
                clock, parts = payloads[0][0], payloads[0][1]  # the router's message
                frontier = self.frontier.update(part_, clock, parts)
                keyed: list[tuple[tuple[int, int, int], Event]] = []
                for p in payloads:
                    keyed.extend(p[2])
                keyed.sort(key=lambda kv: kv[0])
                signals, records = [], []
                events = [e for _, e in keyed]
                fresh = first_deliveries(events, self.shard.orders) if self._view else []
                for kind, rec in self.shard.process(events, frontier):
                    (signals if kind == "signal" else records).append(rec)
                if records:
                    out.append(("out", records))
                if self._view is not None:
                    view = orders_update(self._view, self.shard, fresh, records)
                    if view:
                        out.append(("view", view))
                signals += payloads[0][3]  # the batch's customer commands, for the desk
                out.append((CUSTOMERS_KEY, (part_, n_, me, frontier, signals)))
                observe_stages(self.shard.stages)
                if frontier:
                    PROCESSING_LAG.set(max(0.0, time.time() - frontier / 1000))
            self._me = me
            self._census()
        return out, False

    def _census(self, *, now: bool = False) -> None:
        """Publish what this shard holds, at most every CENSUS_INTERVAL (metrics only)."""
        t = time.monotonic()
        if self._me is not None and (now or t - self._census_at >= CENSUS_INTERVAL):
            self._census_at = t
            publish_census(shard_key(self._me), *self.shard.census())

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        self._census(now=True)
        return (), False

    def snapshot(self) -> bytes | None:
        state = (self.barrier, self.frontier, self.shard.__getstate__())
        return _pickled(state, self._recovery, "orders")


class _CustomersLogic(StatefulBatchLogic):
    def __init__(self, settings: Settings, resume: bytes | None, recovery: bool) -> None:
        self._recovery = recovery
        if resume:
            self.barrier, self.desk = pickle.loads(resume)
            freeze_restored()
        else:
            self.barrier = Barrier(settings.pipeline.shards)
            self.desk = CustomerDesk(settings)

    def on_batch(self, values: list[Any]) -> tuple[Iterable[Any], bool]:
        out: list[Any] = []
        for part, n, shard, clock, signals in values:
            for _part, _n, payloads in self.barrier.add(part, n, shard, (clock, signals)):
                merged = [s for _, sigs in payloads for s in sigs]
                clock_ = max(c for c, _ in payloads)
                records = self.desk.process(merged, clock_)
                if records:
                    out.append(("out", records))
        CUSTOMER_HOLDS.set(len(self.desk.holds.held))
        return out, False

    def snapshot(self) -> bytes | None:
        return _pickled((self.barrier, self.desk), self._recovery, "customers")


class _HealthLogic(StatefulBatchLogic):
    def __init__(self, settings: Settings, resume: bytes | None, recovery: bool) -> None:
        self._recovery = recovery
        self.state, self.frontier, self.barrier = (
            pickle.loads(resume) if resume else (HealthState(settings), Frontier(), Barrier(1))
        )
        if resume:
            freeze_restored()

    def on_batch(
        self, values: list[tuple[str, int, HealthBatch, int]]
    ) -> tuple[Iterable[Any], bool]:
        out: list[Any] = []
        ready = [p[0] for msg in values for _, _, p in self.barrier.add(msg[0], msg[3], 0, msg)]
        for part, parts, batch, _n in ready:
            # health counts by the batch's own times; its windows close on the frontier
            frontier = self.frontier.update(part, batch.clock_ms, parts)
            batch.clock_ms = min(batch.clock_ms, frontier)
            records = self.state.apply(batch) + self.state.advance(batch.clock_ms)
            if records:
                out.append(("out", records))
            count_health_batch(batch)
        if ready:
            publish_breakers(self.state.breaker_states())
        return out, False

    def snapshot(self) -> bytes | None:
        return _pickled((self.state, self.frontier, self.barrier), self._recovery, "health")


def build_flow(
    settings: Settings,
    source: Source[RawBatch],
    sink: Sink[list[Encoded]],
    *,
    flow_id: str = "orderguard",
    stream_of: Callable[[str], str | None] | None = None,
    recovery: bool = False,
    view_sink: Sink[ViewUpdate] | None = None,
    wall_clock: Callable[[], int] = wall_clock_ms,
    normalizer: Normalizer | None = None,
) -> Dataflow:
    """Wire the pure core into a Bytewax graph; `stream_of(part)` names a partition's stream.

    `recovery`: whether the run keeps Bytewax recovery snapshots (live runs do).
    `view_sink`: where the Redis order view's updates go (none: they are not even built).
    `wall_clock`: epoch ms now: no input's `received_at` may run ahead of it by more than
    `pipeline.max_clock_ahead`, live or recorded (`dataflows.sequencer`); tests inject one.
    `normalizer`: the router's (`schemas.normalize.Normalizer` of `settings` by default).
    """
    router = Router(settings, normalizer)
    stream_for = cache(stream_of) if stream_of else None

    def route(batch: RawBatch) -> list[tuple[str, Any]]:
        streams = None
        if stream_for is not None and batch.streams is not None:
            streams = [stream_for(p) for p in batch.streams]
        return router.route(
            batch.part, batch.n, batch.lines, None, batch.clock, batch.parts, streams, batch.limits
        )

    flow = Dataflow(flow_id)
    raw = op.input("input", flow, source)
    merged = op.stateful_batch(
        "sequencer",
        op.map("to_sequencer", raw, lambda b: (SEQUENCER_KEY, b)),
        lambda r: _SequencerLogic(settings, r, recovery, wall_clock),
    )
    spread = op.redistribute("spread", op.map("sequenced", merged, _value))
    routed = op.flat_map("route", spread, route)

    to_index = op.filter("to_index", routed, lambda kv: kv[0][0] == "i")
    index = op.stateful_batch(
        "tracking_index", to_index, lambda r: _IndexLogic(settings, r, recovery)
    )
    from_index: Stream[Any] = op.map("index_out", index, _value)

    orders_in = op.merge(
        "to_orders",
        op.filter("direct_to_orders", routed, _is_order),
        op.filter("index_to_orders", from_index, _is_order),
    )
    with_view = view_sink is not None
    orders = op.stateful_batch(
        "orders", orders_in, lambda r: _OrdersLogic(settings, r, recovery, view=with_view)
    )
    orders_out: Stream[Any] = op.map("orders_out", orders, _value)

    to_customers = op.filter("to_customers", orders_out, lambda kv: kv[0] == CUSTOMERS_KEY)
    customers = op.stateful_batch(
        "customers", to_customers, lambda r: _CustomersLogic(settings, r, recovery)
    )

    to_health = op.filter("to_health", routed, lambda kv: kv[0] == HEALTH_KEY)
    health = op.stateful_batch("health", to_health, lambda r: _HealthLogic(settings, r, recovery))

    records = op.merge(
        "outputs",
        op.filter("route_out", routed, _is_out),
        op.filter("index_records", from_index, _is_out),
        op.filter("orders_records", orders_out, _is_out),
        op.map("customers_out", customers, _value),
        op.map("health_out", health, _value),
    )
    # records travel as one list per batch: Bytewax's cost is per item, not per record
    limits = settings.limits

    def count_and_encode(kv: tuple[str, list[Any]]) -> list[Encoded]:
        count_records(kv[1])
        out = [encode(r, limits) for r in kv[1]]
        replaced = sum(map(is_replacement, out))
        if replaced:
            OUTPUT_REPLACED.labels("encode").inc(replaced)
        return out

    encoded = op.map("encode", records, count_and_encode)
    op.output("output", encoded, sink)
    if view_sink is not None:
        view = op.merge(
            "view_updates",
            op.filter_map("view_orders", orders_out, _view_update),
            op.filter_map("view_decisions", records, lambda kv: decisions_update(kv[1]) or None),
        )
        op.output("redis_view", view, view_sink)
    return flow


def _value(kv: tuple[str, Any]) -> Any:
    return kv[1]


def _view_update(kv: tuple[str, Any]) -> ViewUpdate | None:
    return kv[1] if kv[0] == "view" else None


def _is_out(kv: tuple[str, Any]) -> bool:
    return kv[0] == "out"


def _is_order(kv: tuple[str, Any]) -> bool:
    return kv[0][0] == "o" and kv[0] != "out"
