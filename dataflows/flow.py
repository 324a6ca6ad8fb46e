"""The orderguard dataflow: one graph for replay and for Kafka, sources and sinks injected.

    input -> partitions -> route -+-> orders (shards) --+--> customers ----+
                                  +-> reference index --+                  +--> encode -> sink
                                  +-> health --------------------------------+
                                  +-> dead letters ----------------------------+

Each input batch is stamped with merge keys and routed on the worker that read it
(`dataflows.stamp`); no step sees every event. Every stateful step merges its own
share up to its watermark (`state.watermark`), so it handles exactly the sequence a
global merge of all partitions would have given it.
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
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import FixedPartitionedSink, Sink

from connectors.increments import Chain, chain_dir
from connectors.replay import RawBatch
from dataflows.gc_tuning import freeze_restored
from dataflows.messages import (
    CUSTOMERS_KEY,
    HEALTH_KEY,
    Keyed,
    Mark,
    Records,
    Released,
    ToCustomers,
    ToHealth,
    ToIndex,
    ToShard,
    ViewChange,
    index_key,
    shard_key,
)
from dataflows.observer import NULL_OBSERVER, Observer
from dataflows.placement import StateKeys
from dataflows.router import Router, index_shard, index_shards, stable_shard
from dataflows.stamp import PartitionStamp
from schemas.config import Settings
from schemas.event import Event
from schemas.normalize import Normalizer
from schemas.timeparse import wall_clock_ms
from state.customers import CustomerDesk, in_order
from state.encode import Encoded, encode, is_replacement
from state.health import HealthBatch, HealthState
from state.packing import IdTable
from state.reference_index import Link, ReferenceIndex, merge_key_of
from state.shard import OrderShard
from state.view import ViewUpdate, decisions_update, first_deliveries, orders_update
from state.watermark import UNBOUNDED, Alignment, Held, Inputs, Queues, below

log = logging.getLogger("orderguard.flow")

STEP_IDS = ("input", "partitions", "tracking_index", "orders", "customers", "health", "output")
"""The steps that hold state or position; renaming one orphans its recovery data
(`tracking_index` is the reference index, under the step's first name)."""


FLOW_ID = "orderguard"
"""The dataflow's id: Bytewax names each step `FLOW_ID.step` in the recovery store."""


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


class IncrementalStep(Step):
    """A step whose large state goes to a chain of increments (`connectors.increments`),
    not into every snapshot: an epoch pickles what changed, not everything held."""

    def name(self) -> str:
        """The chain's name: the step's logical key, the same whatever the placement."""
        raise NotImplementedError

    def track_changes(self) -> None:
        raise NotImplementedError

    def increment(self, base: bool) -> tuple[bool, object]:
        """(whether it is a base, the increment): everything when `base` (or when the
        step must), else what changed since the last call. Forgets the changes."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Chained:
    """An incremental step's Bytewax snapshot: its chain's name and version, the rest."""

    name: str
    version: int
    small: object


S = TypeVar("S", bound=Step)


class _Adapter(StatefulBatchLogic):
    def __init__(
        self,
        step_id: str,
        step: Step,
        recovery_dir: Path | None,
        observer: Observer,
        chain: Chain | None = None,
        restored: IdTable | None = None,
    ) -> None:
        self._id = step_id
        self._rdir = recovery_dir
        self._observer = observer
        self._chain = chain
        self._restored = restored
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
        if self._rdir is None:
            return None
        if self._restored is not None:
            self._restored.clear()  # every step resumed before the first epoch closed
        started = time.perf_counter()
        step = self.step
        state = step.state()
        if isinstance(step, IncrementalStep):
            chain = self._chain
            if chain is None:  # a fresh key: whatever its directory holds, no run completed
                chain = self._chain = Chain(chain_dir(self._rdir, self._id, step.name()))
            base, increment = step.increment(chain.wants_base())
            state = Chained(step.name(), chain.write(increment, base), state)
        data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        self._observer.snapshot(self._id, time.perf_counter() - started)
        return data


def adapter(
    step_id: str,
    resume: bytes | None,
    fresh: Callable[[], S],
    restore: Callable[[Any], S],
    recovery_dir: Path | None,
    observer: Observer,
    restored: IdTable | None = None,
) -> _Adapter:
    """The Bytewax logic of one stateful step: `fresh()` or `restore(its snapshot's state)`.

    An `IncrementalStep` is restored from `(its snapshot's rest, its increments)`.
    `restored`: the table through which the `restore`s of a process's steps share their
    ids (`build_flow` gives both the same one); the step's first snapshot empties it.
    """
    chain = None
    if resume is None:
        step = fresh()
    else:
        state = pickle.loads(resume)
        if isinstance(state, Chained):
            assert recovery_dir is not None  # Bytewax resumes only with recovery on
            chain = Chain(chain_dir(recovery_dir, step_id, state.name), state.version)
            state = (state.small, chain.read())
        step = restore(state)
        freeze_restored()
    if recovery_dir is not None and isinstance(step, IncrementalStep):
        step.track_changes()
    return _Adapter(step_id, step, recovery_dir, observer, chain, restored)


class StampStep(Step):
    """One input partition's merge keys (`dataflows.stamp`), on the worker that reads it."""

    def __init__(
        self,
        stamp: PartitionStamp,
        index_of: Callable[[str], int],
        tolerance: int,
        wall_clock: Callable[[], int],
        alignment: Alignment | None,
    ) -> None:
        self.stamp = stamp
        self._index_of = index_of
        self._tolerance = tolerance
        self._wall_clock = wall_clock
        self._alignment = alignment

    def on_batch(self, values: list[RawBatch]) -> list[RawBatch]:
        now = self._wall_clock()
        out: list[RawBatch] = []
        for batch in values:
            stamped = self.stamp.stamp(batch, self._index_of(batch.part), now, self._tolerance)
            if stamped is not None:
                out.append(stamped)
            if self._alignment is not None:
                open_ = not (batch.caught_up or batch.final)
                self._alignment.report(batch.part, self.stamp.clock, open_)
        return out

    def state(self) -> object:
        return self.stamp


def _resumed(marks: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """After a restart an upstream shard's (watermark, clock) is no further than its clock:
    the inputs that had ended or caught up before the restart have not said so again."""
    return {k: (min(w, f), f) for k, (w, f) in marks.items()}


def _update(inputs: Inputs, mark: Mark) -> None:
    inputs.update(mark.part, mark.clock, mark.parts, mark.caught_up, mark.final)


IndexState = tuple[dict[str, Any], Inputs, Queues[Event | Link], tuple[int, int], int]


class IndexStep(IncrementalStep):
    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        state: tuple[IndexState, list[Any]] | None = None,
        ids: IdTable | None = None,
    ) -> None:
        self._shards = settings.pipeline.shards
        self._nindex = index_shards(settings)
        self._observer = observer
        if state is None:
            self.index = ReferenceIndex(settings)
            self.inputs, self.held, self.told, self._me = Inputs(), Queues(), (-1, -1), 0
        else:  # a restart: partitions speak again, shards hear it again
            (small, self.inputs, self.held, _, self._me), increments = state
            self.index = ReferenceIndex.from_increments(settings, small, increments, ids)
            self.inputs.resume()
            self.told = (-1, -1)

    def on_batch(self, values: list[ToIndex]) -> list[Any]:
        for msg in values:
            self._me = msg.index
            _update(self.inputs, msg.mark)
            self.held.extend(msg.mark.part, [(merge_key_of(e), e) for e in msg.events])
        return self._release()

    def on_eof(self) -> list[Any]:
        self.inputs.finish()
        return self._release()

    def _release(self) -> list[Any]:
        watermark, frontier = self.inputs.watermark(), self.inputs.frontier()
        ready = [e for _, e in self.held.release(below(watermark))]
        if not ready and (watermark, frontier) == self.told:
            return []  # the order shards know all this already
        self.told = (watermark, frontier)
        return self._process(ready, watermark, frontier)

    def _process(self, events: list[Event | Link], watermark: int, frontier: int) -> list[Any]:
        nindex, me = self._nindex, self._me
        conflicts = self.index.conflicts
        released, dead = self.index.process(
            events, frontier, lambda key: index_shard(key, nindex) == me
        )
        refused = self.index.conflicts - conflicts
        self._observer.reference_index(index_key(me), self.index.pending_count, refused)
        if refused:
            log.warning(
                "reference index %s: %d link(s) refused: the reference already belongs to "
                "another order (the first link wins; %d so far)",
                index_key(me),
                refused,
                self.index.conflicts,
            )
        per_shard: list[list[Keyed]] = [[] for _ in range(self._shards)]
        for key, ev in released:
            per_shard[stable_shard(ev.order_id, self._shards)].append((key, ev))
        out: list[Released | Records] = [
            Released(i, me, watermark, frontier, evs) for i, evs in enumerate(per_shard)
        ]
        if dead:
            out.append(Records(dead))
        return out

    def name(self) -> str:
        return index_key(self._me)

    def track_changes(self) -> None:
        self.index.track_changes()

    def increment(self, base: bool) -> tuple[bool, object]:
        return self.index.increment(base)

    def state(self) -> IndexState:
        return (self.index.small_state(), self.inputs, self.held, self.told, self._me)


CENSUS_INTERVAL = 10.0
"""Seconds between counts of a shard's orders for the gauges (a pass over its orders)."""


OrdersState = tuple[Inputs, Queues[Any], dict[int, tuple[int, int]], int, int | None]


class OrdersStep(IncrementalStep):
    """An order shard: the router's events and the index's releases, in merge-key order.

    It handles what lies below both its input partitions' watermark and every index
    shard's (an index shard may still release an event placed earlier), and runs its
    deadlines no further than the slower of their clocks.
    """

    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        view: bool = False,
        state: tuple[OrdersState, list[Any]] | None = None,
        ids: IdTable | None = None,
    ) -> None:
        self._view = settings if view else None  # emit the Redis view's updates
        self._observer = observer
        self._census_at = 0.0
        self._me: int | None = None
        self._nindex = index_shards(settings)
        self.shard = OrderShard(settings)
        if state is not None:
            (self.inputs, self.held, self.indexes, clock, self._me), increments = state
            self.shard.restore_increments(clock, increments, settings, ids)
            self.inputs.resume()
            self.indexes = _resumed(self.indexes)
        else:
            self.inputs = Inputs()
            self.held = Queues()  # keyed events, and shard 0's customer commands
            self.indexes = {}  # index shard -> (watermark, frontier)

    def on_batch(self, values: list[ToShard | Released]) -> list[Any]:
        held = self.held
        for msg in values:
            self._me = msg.shard
            if isinstance(msg, ToShard):
                _update(self.inputs, msg.mark)
                sender = (0, msg.mark.part)
                held.extend(sender, [((e.seq, 0, e.seq), e) for e in msg.events])
                held.extend(sender, [((c.seq, 0, c.seq), c) for c in msg.commands])
            else:
                self.indexes[msg.index] = (msg.watermark, msg.frontier)
                held.extend((1, str(msg.index)), msg.events)
        out = self._release()
        self.shard.prepack()
        self._census()
        return out

    def _release(self) -> list[Any]:
        held = self.held
        watermark, frontier = self.inputs.watermark(), self.inputs.frontier()
        if len(self.indexes) < self._nindex:
            watermark = frontier = 0
        else:
            watermark = min(watermark, *(w for w, _ in self.indexes.values()))
            frontier = min(frontier, *(f for _, f in self.indexes.values()))
        return self._process(held.release((below(watermark),)), watermark, frontier)

    def _process(self, ready: list[tuple[Any, Any]], watermark: int, frontier: int) -> list[Any]:
        events: list[Event] = []
        commands: list[Any] = []
        for _, item in ready:
            (events if type(item) is Event else commands).append(item)
        shard = self.shard
        before = shard.clock
        fresh = first_deliveries(events, shard.orders) if self._view else []
        signals: list[Any] = []
        records: list[Any] = []
        for kind, rec in shard.process(events, frontier):
            (signals if kind == "signal" else records).append(rec)
        if not events and not commands and shard.clock == before and watermark < UNBOUNDED:
            return []  # nothing moved: the desk need not hear of it
        out: list[Any] = []
        if records:
            out.append(Records(records))
        if self._view is not None:
            view = orders_update(self._view, shard, fresh, records)
            if view:
                out.append(ViewChange(view))
        # no later signal is earlier than the shard's clock, nor a command than the watermark
        done = UNBOUNDED if watermark >= UNBOUNDED and self.inputs.ended() else shard.clock
        if self._me == 0:  # it holds the customer commands
            done = min(done, watermark)
        out.append(ToCustomers(self._me or 0, done, shard.clock, signals + commands))
        self._observer.shard_batch(shard.stages, frontier)
        return out

    def _census(self, *, now: bool = False) -> None:
        """Report what this shard holds, at most every CENSUS_INTERVAL (metrics only)."""
        t = time.monotonic()
        if self._me is not None and (now or t - self._census_at >= CENSUS_INTERVAL):
            self._census_at = t
            self._observer.census(shard_key(self._me), *self.shard.census())

    def on_eof(self) -> list[Any]:
        """Every input and index shard has ended, whether or not each one said so."""
        self.inputs.finish()
        self.indexes = {i: (UNBOUNDED, f) for i, (_, f) in self.indexes.items()}
        out = self._release()
        self._census(now=True)
        return out

    def name(self) -> str:
        return shard_key(self._me or 0)

    def track_changes(self) -> None:
        self.shard.track_changes()

    def increment(self, base: bool) -> tuple[bool, object]:
        return self.shard.increment(base)

    def state(self) -> OrdersState:
        return (self.inputs, self.held, self.indexes, self.shard.clock, self._me)


class CustomersStep(Step):
    """The customer desk: every shard's signals in time order, up to the slowest shard."""

    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        state: tuple[CustomerDesk, Held[Any], dict[int, tuple[int, int]]] | None = None,
    ) -> None:
        self._observer = observer
        self._shards = settings.pipeline.shards
        self.desk, self.held, self.marks = state or (CustomerDesk(settings), Held(), {})
        self.marks = _resumed(self.marks)

    def on_batch(self, values: list[ToCustomers]) -> list[Any]:
        for msg in values:
            self.marks[msg.shard] = (msg.done, msg.frontier)
            for s in msg.signals:
                self.held.push(in_order(s), s)  # (time, ...): `done` is a time
        return self._release()

    def on_eof(self) -> list[Any]:
        self.marks = {s: (UNBOUNDED, f) for s, (_, f) in self.marks.items()}
        self._shards = min(self._shards, len(self.marks))
        return self._release()

    def _release(self) -> list[Any]:
        if len(self.marks) < self._shards or not self.marks:
            return []
        done = min(d for d, _ in self.marks.values())
        clock = min(min(f for _, f in self.marks.values()), done)
        ready = [s for _, s in self.held.release((done,))]
        records = self.desk.process(ready, clock)
        self._observer.customer_holds(len(self.desk.holds.held))
        return [Records(records)] if records else []

    def state(self) -> object:
        return (self.desk, self.held, self.marks)


class HealthStep(Step):
    """Source health: counts as batches come, ordered items up to the watermark."""

    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        state: tuple[HealthState, Inputs, list[HealthBatch]] | None = None,
    ) -> None:
        self._observer = observer
        self.health, self.inputs, self.pending = state or (HealthState(settings), Inputs(), [])
        self.inputs.resume()

    def on_batch(self, values: list[ToHealth]) -> list[Any]:
        health = self.health
        for msg in values:
            _update(self.inputs, msg.mark)
            health.count(msg.batch)
            self._observer.health_batch(msg.batch)
            if msg.batch.has_items():
                self.pending.append(msg.batch)
        return self._release()

    def on_eof(self) -> list[Any]:
        self.inputs.finish()
        return self._release()

    def _release(self) -> list[Any]:
        health = self.health
        bound = below(self.inputs.watermark())
        frontier = self.inputs.frontier()
        taken = [b.take_before(bound) for b in self.pending]
        self.pending = [b for b in self.pending if b.has_items()]
        records = health.apply(HealthBatch.merged(taken, frontier)) if taken else []
        records += health.advance(frontier)
        self._observer.breakers(health.breaker_states())
        return [Records(records)] if records else []

    def state(self) -> object:
        return (self.health, self.inputs, self.pending)


def build_flow(
    settings: Settings,
    source: Source[RawBatch],
    sink: Sink[list[Encoded]] | FixedPartitionedSink[list[Encoded], Any],
    *,
    flow_id: str = FLOW_ID,
    stream_of: Callable[[str], str | None] | None = None,
    recovery: Path | None = None,
    view_sink: Sink[ViewUpdate] | None = None,
    wall_clock: Callable[[], int] = wall_clock_ms,
    normalizer: Normalizer | None = None,
    observer: Observer = NULL_OBSERVER,
    parts: list[str] | None = None,
    alignment: Alignment | None = None,
) -> Dataflow:
    """Wire the pure core into a Bytewax graph; `stream_of(part)` names a partition's stream.

    `sink`: a partitioned one (the Kafka sink) gets each batch of records keyed by the
    input partition beside which it was made (`Records.slot`), so it writes them on the
    worker that made them; any other gets the batches alone.

    `recovery`: the Bytewax recovery directory when the run keeps snapshots (live runs
    do); the large steps keep their increments in it (`connectors.increments`).
    `view_sink`: where the Redis order view's updates go (none: they are not even built).
    `wall_clock`: epoch ms now: no input's `received_at` may run ahead of it by more than
    `pipeline.max_clock_ahead`, live or recorded (`dataflows.stamp`); tests inject one.
    `normalizer`: the router's (`schemas.normalize.Normalizer` of `settings` by default).
    `observer`: where the steps report (`connectors.metrics.Metrics` for Prometheus).
    `parts`: every input partition's name, fixed for the life of a recovery store: the
    steps that belong where a partition is read get keys Bytewax places there
    (`dataflows.placement.StateKeys`); without it they run wherever Bytewax puts them.
    `alignment`: the source's (`state.watermark.Alignment`), told each partition's clock.
    """
    router = Router(settings, normalizer)
    stream_for = cache(stream_of) if stream_of else (lambda _part: None)
    keys = StateKeys(parts, settings.pipeline.shards, index_shards(settings))
    restored = IdTable()  # this process's steps share their ids through it as they resume

    def route(batch: RawBatch) -> list[ToShard | ToIndex | ToHealth | Records]:
        mark = Mark(batch.part, batch.clock, batch.parts, batch.caught_up, batch.final)
        out = router.route(mark, batch.lines, stream_for(batch.part), batch.limits)
        return [_at(m, keys.part_index(batch.part)) for m in out]

    def stateful(
        step_id: str, stream: Stream[Any], fresh: Callable[[], S], restore: Callable[[Any], S]
    ) -> Stream[Any]:
        """One stateful step; its outputs without Bytewax's key."""
        logic = op.stateful_batch(
            step_id,
            stream,
            lambda r: adapter(step_id, r, fresh, restore, recovery, observer, restored),
        )
        return op.map(f"{step_id}_out", logic, lambda kv: _at(kv[1], keys.home(kv[0])))

    tolerance = settings.pipeline.max_clock_ahead
    flow = Dataflow(flow_id)
    raw = op.input("input", flow, source)
    stamped = stateful(
        "partitions",
        op.map("to_partitions", raw, lambda b: (keys.input(b.part), b)),
        lambda: StampStep(PartitionStamp(), keys.part_index, tolerance, wall_clock, alignment),
        lambda st: StampStep(st.resume(), keys.part_index, tolerance, wall_clock, alignment),
    )
    routed = op.flat_map("route", stamped, route)

    from_index = stateful(
        "tracking_index",
        op.filter_map("to_index", routed, _keyed(ToIndex, lambda m: keys.index(m.index))),
        lambda: IndexStep(settings, observer),
        lambda state: IndexStep(settings, observer, state, restored),
    )
    with_view = view_sink is not None
    to_shard = _keyed((ToShard, Released), lambda m: keys.shard(m.shard))
    orders_out = stateful(
        "orders",
        op.merge(
            "to_orders",
            op.filter_map("direct_to_orders", routed, to_shard),
            op.filter_map("index_to_orders", from_index, to_shard),
        ),
        lambda: OrdersStep(settings, observer, with_view),
        lambda state: OrdersStep(settings, observer, with_view, state, restored),
    )
    customers_out = stateful(
        "customers",
        op.filter_map("to_customers", orders_out, _keyed(ToCustomers, lambda m: CUSTOMERS_KEY)),
        lambda: CustomersStep(settings, observer),
        lambda state: CustomersStep(settings, observer, state),
    )
    health_out = stateful(
        "health",
        op.filter_map("to_health", routed, _keyed(ToHealth, lambda m: HEALTH_KEY)),
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
    partitioned = isinstance(sink, FixedPartitionedSink)

    def count_and_encode(msg: Records) -> list[Encoded] | tuple[str, list[Encoded]]:
        observer.records(msg.records)
        out = [encode(r, limits) for r in msg.records]
        replaced = sum(map(is_replacement, out))
        if replaced:
            observer.output_replaced(replaced)
        return (str(msg.slot), out) if partitioned else out

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


def _at(msg: Any, slot: int) -> Any:
    """Records with the input partition beside which they were made; other messages as they are."""
    return Records(msg.records, slot) if type(msg) is Records and slot else msg


def _keyed(
    kind: type | tuple[type, ...], key: Callable[[Any], str]
) -> Callable[[Any], tuple[str, Any] | None]:
    """Select the messages of a type, keyed as their stateful step needs (by string)."""

    def keyed(msg: Any) -> tuple[str, Any] | None:
        return (key(msg), msg) if isinstance(msg, kind) else None

    return keyed


def _view_update(msg: Any) -> ViewUpdate | None:
    return msg.update if isinstance(msg, ViewChange) else None


def _is_records(msg: Any) -> bool:
    return isinstance(msg, Records)
