"""The faster core's pieces (issue 14): the encode clock, the GC tuning."""

from __future__ import annotations

import gc

import pytest

from dataflows import encode, gc_tuning
from schemas.timeparse import iso


def test_emitted_at_is_the_wall_clock_to_the_millisecond(monkeypatch):
    times = iter([1_772_409_600.0011, 1_772_409_600.0019, 1_772_409_600.0021, 1_772_409_601.5])
    monkeypatch.setattr(encode.time, "time", lambda: next(times))
    got = [encode._now() for _ in range(4)]
    assert got == [
        "2026-03-02T00:00:00.001Z",
        "2026-03-02T00:00:00.001Z",
        "2026-03-02T00:00:00.002Z",
        "2026-03-02T00:00:01.500Z",
    ]
    assert got[-1] == iso(1_772_409_601_500)


@pytest.fixture
def gc_restored():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc_tuning._tuned = False


def test_gc_tuning_off_leaves_cpython_defaults(gc_restored):
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    gc_tuning.tune_gc(False)
    gc_tuning.freeze_restored()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_gc_tuning_freezes_start_up_and_restored_state(gc_restored):
    gc_tuning.tune_gc(True)
    assert gc.get_threshold() == gc_tuning.GC_THRESHOLD
    frozen = gc.get_freeze_count()
    assert frozen > 0
    state = [[i] for i in range(1000)]  # as a restore would build it (lists: GC-tracked)
    gc_tuning.freeze_restored()
    assert gc.get_freeze_count() >= frozen + len(state)
