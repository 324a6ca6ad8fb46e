"""The orderguard dataflow: one graph for replay and for Kafka, sources and sinks injected.

    input -> sequencer -> route -+-> orders (shards) --+--> customers ----+
                                 +-> reference index --+                  +--> encode -> sink
                                 +-> health --------------------------------+
                                 +-> dead letters ----------------------------+

The sequencer merges all input partitions into one canonically ordered stream
(`dataflows.sequencer`); routing and normalizing it is spread over all workers again.
Steps pass the typed messages of `dataflows.messages` and pick theirs by type; each
stateful step is a `Step` (messages in, messages out, its state), and `adapter` does
for all of them what Bytewax asks besides (resume, snapshot, pickling).

Step ids are part of Bytewax's recovery identity: they are frozen in STEP_IDS and
a test fails if one changes.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from connectors.replay import RawBatch
from dataflows.barrier import Barrier
from dataflows.gc_tuning import freeze_restored
from dataflows.messages import (
    Keyed,
    Records,
    Released,
    ToCustomers,
    ToHealth,
    ToIndex,
    ToShard,
    ViewChange,
    shard_key,
)
from dataflows.observer import NULL_OBSERVER, Observer
from dataflows.router import Router, index_shards, stable_shard
from dataflows.sequencer import Sequencer
from schemas.config import Settings
from schemas.normalize import Normalizer
from state.clock import Frontier
from state.customers import CustomerDesk
from state.encode import Encoded, encode, is_replacement
from state.health import HealthState
from state.reference_index import ReferenceIndex
from state.shard import OrderShard
from state.view import ViewUpdate, decisions_update, first_deliveries, orders_update

SEQUENCER_KEY = "sequencer"
log = logging.getLogger("orderguard.flow")

STEP_IDS = ("input", "sequencer", "tracking_index", "orders", "customers", "health", "output")
"""The steps that hold state or position; renaming one orphans its recovery data
(`tracking_index` is the reference index, under the step's first name)."""


def wall_clock_ms() -> int:
    """Nothing can have been received after now: the bound of every `received_at`."""
    return int(time.time() * 1000)


class Step:
    """A stateful step's logic: messages in, messages out, and the state its snapshot keeps.

    Everything Bytewax asks of a stateful step besides that (resume, snapshot,
    pickling, the restored-state GC freeze) is `_Adapter`'s, once for all steps.
    """

    def on_batch(self, values: list[Any]) -> list[Any]:
        raise NotImplementedError

    def on_eof(self) -> list[Any]:
        return []

    def state(self) -> object:
        """What a snapshot pickles; the step's `restore` takes it back."""
        raise NotImplementedError


S = TypeVar("S", bound=Step)


class _Adapter(StatefulBatchLogic):
    def __init__(self, step_id: str, step: Step, recovery: bool, observer: Observer) -> None:
        self._id = step_id
        self._recovery = recovery
        self._observer = observer
        self.step = step

    def on_batch(self, values: list[Any]) -> tuple[Iterable[Any], bool]:
        return self.step.on_batch(values), False

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        return self.step.on_eof(), False

    def snapshot(self) -> bytes | None:
        """Snapshots must be immutable: pickle at snapshot time, not later.

        Bytewax asks for snapshots even when recovery is off; pickling whole shards for
        nothing would cost replay a large share of its time, so then we hand back None.
        """
        if not self._recovery:
            return None
        started = time.perf_counter()
        data = pickle.dumps(self.step.state(), protocol=pickle.HIGHEST_PROTOCOL)
        self._observer.snapshot(self._id, time.perf_counter() - started)
        return data


def adapter(
    step_id: str,
    resume: bytes | None,
    fresh: Callable[[], S],
    restore: Callable[[Any], S],
    recovery: bool,
    observer: Observer,
) -> _Adapter:
    """The Bytewax logic of one stateful step: `fresh()` or `restore(its snapshot's state)`."""
    if resume is None:
        return _Adapter(step_id, fresh(), recovery, observer)
    step = restore(pickle.loads(resume))
    freeze_restored()
    return _Adapter(step_id, step, recovery, observer)


class SequencerStep(Step):
    def __init__(self, sequencer: Sequencer, wall_clock: Callable[[], int]) -> None:
        self.sequencer = sequencer
        self._wall_clock = wall_clock

    def on_batch(self, values: list[RawBatch]) -> list[Any]:
        out: list[RawBatch] = []
        now = self._wall_clock()
        for batch in values:
            out.extend(self.sequencer.add(batch, now))
        return out

    def on_eof(self) -> list[Any]:
        return self.sequencer.flush()

    def state(self) -> object:
        return self.sequencer


class IndexStep(Step):
    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        state: tuple[ReferenceIndex, Frontier, Barrier[ToIndex]] | None = None,
    ) -> None:
        self._shards = settings.pipeline.shards
        self._nindex = index_shards(settings)
        self._observer = observer
        self.index, self.frontier, self.barrier = state or (
            ReferenceIndex(settings),
            Frontier(),
            Barrier(1),
        )

    def on_batch(self, values: list[ToIndex]) -> list[Any]:
        out: list[Any] = []
        for msg in values:  # batches may arrive out of order from the routing workers
            for _, _, [ready] in self.barrier.add(msg.part, msg.n, 0, msg):
                out.extend(self._process(ready))
        return out

    def _process(self, msg: ToIndex) -> list[Released | Records]:
        nindex, me = self._nindex, msg.index
        conflicts = self.index.conflicts
        released, dead = self.index.process(
            msg.events,
            self.frontier.update(msg.part, msg.clock, msg.parts),
            lambda key: stable_shard(key, nindex) == me,
        )
        refused = self.index.conflicts - conflicts
        self._observer.reference_index(msg.key, self.index.pending_count, refused)
        if refused:
            log.warning(
                "reference index %s: %d link(s) refused: the reference already belongs to "
                "another order (the first link wins; %d so far)",
                msg.key,
                refused,
                self.index.conflicts,
            )
        per_shard: list[list[Keyed]] = [[] for _ in range(self._shards)]
        for key, ev in released:
            per_shard[stable_shard(ev.order_id, self._shards)].append((key, ev))
        out: list[Released | Records] = [
            Released(msg.part, msg.n, i, me, evs) for i, evs in enumerate(per_shard)
        ]
        if dead:
            out.append(Records(dead))
        return out

    def state(self) -> object:
        return (self.index, self.frontier, self.barrier)


CENSUS_INTERVAL = 10.0
"""Seconds between counts of a shard's orders for the gauges (a pass over its orders)."""


class OrdersStep(Step):
    """An order shard: the router's events and the index's releases, batch by batch."""

    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        view: bool = False,
        state: tuple[Barrier[ToShard | Released], Frontier, object] | None = None,
    ) -> None:
        self._view = settings if view else None  # emit the Redis view's updates
        self._observer = observer
        self._census_at = 0.0
        self._me: int | None = None
        self.shard = OrderShard(settings)
        if state is not None:
            self.barrier, self.frontier, shard_state = state
            self.shard.restore(shard_state, settings)
        else:
            # sender 0 is the router, 1 + i the reference-index shard i
            self.barrier = Barrier(1 + index_shards(settings))
            self.frontier = Frontier()

    def on_batch(self, values: list[ToShard | Released]) -> list[Any]:
        out: list[Any] = []
        for msg in values:
            sender = 0 if isinstance(msg, ToShard) else 1 + msg.index
            for part, n, msgs in self.barrier.add(msg.part, msg.n, sender, msg):
                out.extend(self._process(part, n, msgs))  # type: ignore[arg-type]
            self._me = msg.shard
            self._census()
        return out

    def _process(self, part: str, n: int, msgs: list[Any]) -> list[Any]:
        direct: ToShard = msgs[0]  # sender 0's
        frontier = self.frontier.update(part, direct.clock, direct.parts)
        keyed: list[Keyed] = [((e.seq, 0, e.seq), e) for e in direct.events]
        for released in msgs[1:]:
            keyed.extend(released.events)
        keyed.sort(key=lambda kv: kv[0])
        signals: list[Any] = []
        records: list[Any] = []
        events = [e for _, e in keyed]
        fresh = first_deliveries(events, self.shard.orders) if self._view else []
        for kind, rec in self.shard.process(events, frontier):
            (signals if kind == "signal" else records).append(rec)
        out: list[Any] = []
        if records:
            out.append(Records(records))
        if self._view is not None:
            view = orders_update(self._view, self.shard, fresh, records)
            if view:
                out.append(ViewChange(view))
        signals += direct.commands  # the batch's customer commands (shard 0's), for the desk
        out.append(ToCustomers(part, n, direct.shard, frontier, signals))
        self._observer.shard_batch(self.shard.stages, frontier)
        return out

    def _census(self, *, now: bool = False) -> None:
        """Report what this shard holds, at most every CENSUS_INTERVAL (metrics only)."""
        t = time.monotonic()
        if self._me is not None and (now or t - self._census_at >= CENSUS_INTERVAL):
            self._census_at = t
            self._observer.census(shard_key(self._me), *self.shard.census())

    def on_eof(self) -> list[Any]:
        self._census(now=True)
        return []

    def state(self) -> object:
        return (self.barrier, self.frontier, self.shard.__getstate__())


class CustomersStep(Step):
    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        state: tuple[Barrier[ToCustomers], CustomerDesk] | None = None,
    ) -> None:
        self._observer = observer
        self.barrier, self.desk = state or (
            Barrier(settings.pipeline.shards),
            CustomerDesk(settings),
        )

    def on_batch(self, values: list[ToCustomers]) -> list[Any]:
        out: list[Any] = []
        for msg in values:
            for _, _, msgs in self.barrier.add(msg.part, msg.n, msg.shard, msg):
                merged = [s for m in msgs for s in m.signals]
                records = self.desk.process(merged, max(m.clock for m in msgs))
                if records:
                    out.append(Records(records))
        self._observer.customer_holds(len(self.desk.holds.held))
        return out

    def state(self) -> object:
        return (self.barrier, self.desk)


class HealthStep(Step):
    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        state: tuple[HealthState, Frontier, Barrier[ToHealth]] | None = None,
    ) -> None:
        self._observer = observer
        self.health, self.frontier, self.barrier = state or (
            HealthState(settings),
            Frontier(),
            Barrier(1),
        )

    def on_batch(self, values: list[ToHealth]) -> list[Any]:
        out: list[Any] = []
        ready = [m for v in values for _, _, [m] in self.barrier.add(v.part, v.n, 0, v)]
        for msg in ready:
            batch = msg.batch
            # health counts by the batch's own times; its windows close on the frontier
            frontier = self.frontier.update(msg.part, batch.clock_ms, msg.parts)
            batch.clock_ms = min(batch.clock_ms, frontier)
            records = self.health.apply(batch) + self.health.advance(batch.clock_ms)
            if records:
                out.append(Records(records))
            self._observer.health_batch(batch)
        if ready:
            self._observer.breakers(self.health.breaker_states())
        return out

    def state(self) -> object:
        return (self.health, self.frontier, self.barrier)


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
    observer: Observer = NULL_OBSERVER,
) -> Dataflow:
    """Wire the pure core into a Bytewax graph; `stream_of(part)` names a partition's stream.

    `recovery`: whether the run keeps Bytewax recovery snapshots (live runs do).
    `view_sink`: where the Redis order view's updates go (none: they are not even built).
    `wall_clock`: epoch ms now: no input's `received_at` may run ahead of it by more than
    `pipeline.max_clock_ahead`, live or recorded (`dataflows.sequencer`); tests inject one.
    `normalizer`: the router's (`schemas.normalize.Normalizer` of `settings` by default).
    `observer`: where the steps report (`connectors.metrics.Metrics` for Prometheus).
    """
    router = Router(settings, normalizer)
    stream_for = cache(stream_of) if stream_of else None

    def route(batch: RawBatch) -> list[ToShard | ToIndex | ToHealth | Records]:
        streams = None
        if stream_for is not None and batch.streams is not None:
            streams = [stream_for(p) for p in batch.streams]
        return router.route(
            batch.part, batch.n, batch.lines, None, batch.clock, batch.parts, streams, batch.limits
        )

    def stateful(
        step_id: str, stream: Stream[Any], fresh: Callable[[], S], restore: Callable[[Any], S]
    ) -> Stream[Any]:
        """One stateful step; its outputs without Bytewax's key."""
        logic = op.stateful_batch(
            step_id, stream, lambda r: adapter(step_id, r, fresh, restore, recovery, observer)
        )
        return op.map(f"{step_id}_out", logic, _value)

    tolerance = settings.pipeline.max_clock_ahead
    flow = Dataflow(flow_id)
    raw = op.input("input", flow, source)
    merged = stateful(
        "sequencer",
        op.map("to_sequencer", raw, lambda b: (SEQUENCER_KEY, b)),
        lambda: SequencerStep(Sequencer(tolerance), wall_clock),
        lambda seq: SequencerStep(seq.resume(tolerance), wall_clock),
    )
    spread = op.redistribute("spread", merged)
    routed = op.flat_map("route", spread, route)

    from_index = stateful(
        "tracking_index",
        op.filter_map("to_index", routed, _keyed(ToIndex)),
        lambda: IndexStep(settings, observer),
        lambda state: IndexStep(settings, observer, state),
    )
    with_view = view_sink is not None
    orders_out = stateful(
        "orders",
        op.merge(
            "to_orders",
            op.filter_map("direct_to_orders", routed, _keyed(ToShard)),
            op.filter_map("index_to_orders", from_index, _keyed(Released)),
        ),
        lambda: OrdersStep(settings, observer, with_view),
        lambda state: OrdersStep(settings, observer, with_view, state),
    )
    customers_out = stateful(
        "customers",
        op.filter_map("to_customers", orders_out, _keyed(ToCustomers)),
        lambda: CustomersStep(settings, observer),
        lambda state: CustomersStep(settings, observer, state),
    )
    health_out = stateful(
        "health",
        op.filter_map("to_health", routed, _keyed(ToHealth)),
        lambda: HealthStep(settings, observer),
        lambda state: HealthStep(settings, observer, state),
    )

    records: Stream[Records] = op.merge(
        "outputs",
        op.filter("route_out", routed, _is_records),
        op.filter("index_records", from_index, _is_records),
        op.filter("orders_records", orders_out, _is_records),
        customers_out,  # Records only
        health_out,  # Records only
    )
    # records travel as one list per batch: Bytewax's cost is per item, not per record
    limits = settings.limits

    def count_and_encode(msg: Records) -> list[Encoded]:
        observer.records(msg.records)
        out = [encode(r, limits) for r in msg.records]
        replaced = sum(map(is_replacement, out))
        if replaced:
            observer.output_replaced(replaced)
        return out

    encoded = op.map("encode", records, count_and_encode)
    op.output("output", encoded, sink)
    if view_sink is not None:
        view = op.merge(
            "view_updates",
            op.filter_map("view_orders", orders_out, _view_update),
            op.filter_map("view_decisions", records, lambda m: decisions_update(m.records) or None),
        )
        op.output("redis_view", view, view_sink)
    return flow


def _value(kv: tuple[str, Any]) -> Any:
    return kv[1]


def _keyed(
    kind: type[ToShard | ToIndex | Released | ToHealth | ToCustomers],
) -> Callable[[Any], tuple[str, Any] | None]:
    """Select the messages of one type, keyed as their stateful step needs (by string)."""

    def keyed(msg: Any) -> tuple[str, Any] | None:
        return (msg.key, msg) if isinstance(msg, kind) else None

    return keyed


def _view_update(msg: Any) -> ViewUpdate | None:
    return msg.update if isinstance(msg, ViewChange) else None


def _is_records(msg: Any) -> bool:
    return isinstance(msg, Records)
