"""The dataflow's own steps in a plain loop: the same work as the pipeline, no Bytewax.

`dataflows.flow.build_flow` wires the stateful steps (`StampStep`, `IndexStep`,
`OrdersStep`, `CustomersStep`, `HealthStep`) into a Bytewax graph. `StepLoop` calls
the same steps directly, in one thread, each batch carried along the graph's edges at
once. Every step merges its share up to its watermark, so the records equal the
pipeline's whatever the batches (the determinism the tests check); what is left out is
exactly what Bytewax adds: scheduling, exchange between workers, epochs and snapshots,
and the sink's flush once a batch. That makes it the ceiling the pipeline is judged
against (`benchmarks.kafka_bench`, issue 14's "same core in a plain loop").

`benchmarks.replay_bench.Core` is a different, older harness: it calls the state
classes with each batch's own clock and no watermark, which is cheaper but not the
pipeline's work (at 1M orders it wrote 30% fewer records).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.replay import RawBatch
from dataflows.flow import (
    CustomersStep,
    HealthStep,
    IndexStep,
    OrdersStep,
    StampStep,
)
from dataflows.messages import Mark, Records, Released, ToCustomers, ToHealth, ToIndex, ToShard
from dataflows.observer import NULL_OBSERVER
from dataflows.placement import StateKeys
from dataflows.router import Router, index_shards
from dataflows.stamp import PartitionStamp
from schemas.config import Settings
from schemas.timeparse import wall_clock_ms
from state.watermark import Alignment


class StepLoop:
    """`feed` rounds of partition batches, then `finish`; records go to `emit` as made."""

    def __init__(
        self,
        settings: Settings,
        parts: list[str],
        emit: Callable[[list[Any]], None],
        stream_of: Callable[[str], str | None],
        alignment: Alignment | None = None,
    ) -> None:
        shards, nindex = settings.pipeline.shards, index_shards(settings)
        keys = StateKeys(parts, shards, nindex)
        tolerance = settings.pipeline.max_clock_ahead
        self._emit = emit
        self._stream_of = stream_of
        self._router = Router(settings)
        self._stamps = {
            p: StampStep(PartitionStamp(), keys.part_index, tolerance, wall_clock_ms, alignment)
            for p in parts
        }
        self._index = [IndexStep(settings, NULL_OBSERVER) for _ in range(nindex)]
        self.orders = [OrdersStep(settings, NULL_OBSERVER) for _ in range(shards)]
        self._customers = CustomersStep(settings, NULL_OBSERVER)
        self._health = HealthStep(settings, NULL_OBSERVER)

    def feed(self, batches: list[RawBatch]) -> None:
        """One round of input batches, each step called once for all of them (as Bytewax
        hands a step everything that arrived since its last activation)."""
        routed: list[Any] = []
        for batch in batches:
            for b in self._stamps[batch.part].on_batch([batch]):
                mark = Mark(b.part, b.clock, b.parts, b.caught_up, b.final)
                routed += self._router.route(mark, b.lines, self._stream_of(b.part), b.limits)
        self._routed(routed)

    def finish(self) -> None:
        """Every input has ended: each step's EOF, upstream first, as Bytewax calls them."""
        for step in self._index:
            self._from_index(step.on_eof())
        for shard in self.orders:
            self._from_orders(shard.on_eof())
        self._records(self._customers.on_eof())
        self._records(self._health.on_eof())

    def _routed(self, msgs: list[Any]) -> None:
        to_index: dict[int, list[ToIndex]] = {}
        to_shard: dict[int, list[Any]] = {}
        to_health: list[ToHealth] = []
        for m in msgs:
            if isinstance(m, ToIndex):
                to_index.setdefault(m.index, []).append(m)
            elif isinstance(m, ToShard):
                to_shard.setdefault(m.shard, []).append(m)
            elif isinstance(m, ToHealth):
                to_health.append(m)
            else:
                self._emit(m.records)
        for i, ms in to_index.items():
            for out in self._index[i].on_batch(ms):
                if isinstance(out, Released):
                    to_shard.setdefault(out.shard, []).append(out)
                else:
                    self._emit(out.records)
        for s, ms in to_shard.items():
            self._from_orders(self.orders[s].on_batch(ms))
        if to_health:
            self._records(self._health.on_batch(to_health))

    def _from_index(self, outs: list[Any]) -> None:
        to_shard: dict[int, list[Released]] = {}
        for out in outs:
            if isinstance(out, Released):
                to_shard.setdefault(out.shard, []).append(out)
            else:
                self._emit(out.records)
        for s, ms in to_shard.items():
            self._from_orders(self.orders[s].on_batch(ms))

    def _from_orders(self, outs: list[Any]) -> None:
        to_desk = [o for o in outs if isinstance(o, ToCustomers)]
        self._records([o for o in outs if isinstance(o, Records)])
        if to_desk:
            self._records(self._customers.on_batch(to_desk))

    def _records(self, outs: list[Records]) -> None:
        for out in outs:
            self._emit(out.records)

    def open_orders(self) -> int:
        return sum(len(s.shard.orders) for s in self.orders)
