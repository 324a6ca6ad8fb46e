"""After a restart a step must not trust that its upstream had ended or caught up: that
was true of the killed run's inputs, and the restarted ones have not said it again."""

from __future__ import annotations

import pickle

from dataflows.flow import CustomersStep
from dataflows.messages import ToCustomers
from dataflows.observer import NULL_OBSERVER
from schemas.config import Settings
from state.records import CustomerSignal
from state.watermark import UNBOUNDED

SETTINGS = Settings(pipeline={"shards": 2})


def _hold(at: int) -> CustomerSignal:
    return CustomerSignal("hold", "C1", "O1", at, "DELIVERY_NOT_REFLECTED")


def test_a_restored_desk_waits_for_a_shard_that_had_ended():
    step = CustomersStep(SETTINGS, NULL_OBSERVER)
    step.on_batch([ToCustomers(0, UNBOUNDED, 100, []), ToCustomers(1, UNBOUNDED, 120, [])])
    restored = CustomersStep(SETTINGS, NULL_OBSERVER, pickle.loads(pickle.dumps(step.state())))
    # shard 1 speaks again; shard 0 has not yet, and was at 100: a signal at 150 waits
    assert restored.on_batch([ToCustomers(1, 200, 200, [_hold(150)])]) == []
    assert len(restored.held) == 1
    [out] = restored.on_batch([ToCustomers(0, 300, 300, [])])
    assert [d.state for d in out.records] == ["HOLD"]


def test_a_desk_that_never_restarted_takes_an_ended_shard_at_its_word():
    step = CustomersStep(SETTINGS, NULL_OBSERVER)
    step.on_batch([ToCustomers(0, UNBOUNDED, 100, [])])
    [out] = step.on_batch([ToCustomers(1, 200, 200, [_hold(150)])])
    assert [d.state for d in out.records] == ["HOLD"]
