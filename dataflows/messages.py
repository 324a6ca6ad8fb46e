"""The typed messages that travel between the dataflow's steps.

Each step boundary carries one of these, and a step picks its input by type
(`isinstance`), never by a string prefix or a tuple position. Bytewax's stateful
steps still key by a string (`key`): it decides the worker that owns the state.

Every message from the router carries a `Mark`: how far its input partition has
come. That is how each stateful step knows its watermark without a step that sees
every event (`state.watermark`). Events carry their merge key in `Event.seq`.

They are frozen `msgspec.Struct`s (slotted, immutable): a message crossing to another
process is pickled (twice, by Bytewax 0.21), and a Struct builds in ~0.07 µs and
pickles and unpickles in ~4 µs against ~0.8 µs and ~8 µs for a frozen slotted
dataclass (a bare tuple: ~0.06 and ~1 µs; figures in docs/scale-out.md). One message
goes to each shard per input batch, not per event, so the cost is per batch.
"""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.commands import Command
from schemas.event import Event
from state.health import HealthBatch
from state.reference_index import Link
from state.view import ViewUpdate

Keyed = tuple[tuple[int, int, int], Event]
"""An event with its sort key in an order shard: (merge key, 0, merge key) for its own
place, (the registering event's key, 1, its own key) when a link released it."""


def shard_key(i: int) -> str:
    return f"o{i:03d}"


def index_key(i: int) -> str:
    return f"i{i:03d}"


HEALTH_KEY = "health"
CUSTOMERS_KEY = "customers"


class Mark(msgspec.Struct, frozen=True):
    """Input partition `part` (of `parts`) has come to `clock`; caught up or ended."""

    part: str
    clock: int
    parts: int
    caught_up: bool
    final: bool


class ToShard(msgspec.Struct, frozen=True):
    """Router -> order shard `shard`: one an input batch, even empty (it carries the mark).

    `commands`: the batch's customer commands, on shard 0's only (for the desk).
    """

    mark: Mark
    shard: int
    events: list[Event]
    commands: list[Command]

    @property
    def key(self) -> str:
        """The shard's name (its Bytewax key may be a placed variant: `StateKeys`)."""
        return shard_key(self.shard)


class ToIndex(msgspec.Struct, frozen=True):
    """Router -> reference-index shard `index`: one an input batch, even empty.

    `events`: in input order, the `Link`s of events with an order id and the events
    without one, which wait in the index for theirs."""

    mark: Mark
    index: int
    events: list[Event | Link]

    @property
    def key(self) -> str:
        return index_key(self.index)


class Released(msgspec.Struct, frozen=True):
    """Reference-index shard `index` -> order shard `shard`: what it released, and that it
    has handled every key below `watermark` (`frontier`: its ingestion clock)."""

    shard: int
    index: int
    watermark: int
    frontier: int
    events: list[Keyed]

    @property
    def key(self) -> str:
        return shard_key(self.shard)


class ToHealth(msgspec.Struct, frozen=True):
    """Router -> health: the batch's counts and channel/carrier commands."""

    mark: Mark
    batch: HealthBatch

    @property
    def key(self) -> str:
        return HEALTH_KEY


class ToCustomers(msgspec.Struct, frozen=True):
    """Order shard `shard` -> customer desk: its signals (and shard 0's commands).

    `done`: no later signal of this shard is earlier than it; `frontier`: its clock.
    """

    shard: int
    done: int
    frontier: int
    signals: list[Any]

    @property
    def key(self) -> str:
        return CUSTOMERS_KEY


class Records(msgspec.Struct, frozen=True):
    """Output records of one batch of one step, for the encoder: one item, not one a record.

    `slot`: the input partition (its place among the sorted names) beside which they
    were made, when known: the Kafka sink writes them in the partition of that name,
    on the same worker (`connectors.kafka_sink`); else 0.
    """

    records: list[Any]
    slot: int = 0


class ViewChange(msgspec.Struct, frozen=True):
    """An order shard's updates of the Redis order view."""

    update: ViewUpdate


Message = ToShard | ToIndex | Released | ToHealth | ToCustomers | Records | ViewChange
