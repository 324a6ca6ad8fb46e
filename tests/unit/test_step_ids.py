"""Step ids are part of Bytewax's recovery identity: renaming one orphans its stored state."""

from __future__ import annotations

from pathlib import Path

from connectors.replay import PartsSink, ReplaySource
from dataflows.flow import STEP_IDS, build_flow
from schemas.config import Settings

FROZEN = ("input", "partitions", "tracking_index", "orders", "customers", "health", "output")


def test_stateful_and_positional_step_ids_are_frozen(tmp_path: Path):
    assert STEP_IDS == FROZEN  # change this only with a migration for existing stores
    flow = build_flow(Settings(), ReplaySource([tmp_path / "x"], 10), PartsSink(tmp_path))
    names = [step.step_name for step in flow.substeps]
    for step_id in FROZEN:
        assert step_id in names, f"step {step_id!r} disappeared from the dataflow"
    assert flow.flow_id == "orderguard"
