"""The ingestion clock across partitions is the slowest partition's position."""

from __future__ import annotations

from state.clock import Frontier


def test_frontier_is_the_slowest_partition_once_all_have_reported():
    f = Frontier()
    assert f.update("orders:0", 100, 3) == 0  # two partitions unheard
    assert f.update("payments:0", 300, 3) == 0
    assert f.update("tracking:0", 200, 3) == 100
    assert f.update("orders:0", 500, 3) == 200
    assert f.update("tracking:0", 900, 3) == 300


def test_frontier_never_moves_back():
    f = Frontier()
    f.update("p", 500, 1)
    assert f.update("p", 400, 1) == 500


def test_single_partition_replay_is_its_own_position():
    f = Frontier()
    assert f.update("replay", 42, 1) == 42
