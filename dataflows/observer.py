"""What the dataflow's steps report, to whoever the wiring injects.

The steps do not import the metrics registry (`connectors.metrics`): the wiring
hands `build_flow` an observer, Prometheus' (`connectors.metrics.Metrics`) in
`orderguard run` and replay, none (`NULL_OBSERVER`) in tests that only want records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from state.health import HealthBatch
from state.stages import StageTiming


class Observer(Protocol):
    def snapshot(self, step: str, seconds: float) -> None:
        """A step's snapshot took `seconds` to pickle."""

    def reference_index(self, index: str, pending: int, refused: int) -> None:
        """An index shard's pending scans after a batch, and the links it refused in it."""

    def shard_batch(self, stages: Iterable[StageTiming], frontier_ms: int) -> None:
        """An order shard processed a batch up to the ingestion clock `frontier_ms`."""

    def census(
        self, shard: str, statuses: Mapping[str, int], open_alerts: Mapping[str, int]
    ) -> None:
        """What an order shard holds now (called at most every few seconds)."""

    def customer_holds(self, held: int) -> None: ...

    def health_batch(self, batch: HealthBatch) -> None: ...

    def breakers(self, states: Iterable[tuple[str, str, str]]) -> None:
        """(breaker, key, state) of every breaker, after a batch changed some."""

    def records(self, records: Iterable[object]) -> None:
        """Output records about to be encoded."""

    def output_replaced(self, count: int) -> None:
        """Encoded records replaced by an `output_too_large` dead letter."""


class _Null:
    """Reports nothing."""

    def snapshot(self, step: str, seconds: float) -> None:
        pass

    def reference_index(self, index: str, pending: int, refused: int) -> None:
        pass

    def shard_batch(self, stages: Iterable[StageTiming], frontier_ms: int) -> None:
        pass

    def census(
        self, shard: str, statuses: Mapping[str, int], open_alerts: Mapping[str, int]
    ) -> None:
        pass

    def customer_holds(self, held: int) -> None:
        pass

    def health_batch(self, batch: HealthBatch) -> None:
        pass

    def breakers(self, states: Iterable[tuple[str, str, str]]) -> None:
        pass

    def records(self, records: Iterable[object]) -> None:
        pass

    def output_replaced(self, count: int) -> None:
        pass


NULL_OBSERVER: Observer = _Null()
