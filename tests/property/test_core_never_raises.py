"""Whatever valid events real sources give, in whatever mix, order and batching, the
stateful steps (reference index, order shards, health, customer desk) never raise.

`test_parser_never_raises` covers one envelope at a time. Here the envelopes of the
day-in-the-life sample get values swapped in from each other at the same key (one
provider's status on another's order, an order id or tracking number shared by lines
that never shared one, a time from another line or from years away), are shuffled,
repeated and cut into batches of any size, and run through every step as the dataflow
calls them (`benchmarks.replay_bench.Core`), encoding every record. Every record must
encode, and every dead letter must carry a known reason (the normalizer's or the
index's) and never the catch-all.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.replay_bench import Core
from schemas import errors
from schemas.config import load_settings
from schemas.event import DeadLetter
from tests.property.test_parser_never_raises import BASES, _paths

SETTINGS = load_settings()
ODD = [None, "", 0, -1, 10**20, 1e300, "9" * 40, [], {}, True, "2026-13-45T99:99:99Z"]


def _at(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


POOL: dict[Any, list[Any]] = {}
for _base in BASES:
    for _path in _paths(_base.get("payload"))[1:]:
        POOL.setdefault(_path[-1], []).append(_at(_base["payload"], _path))


def _mutated(rnd: random.Random, base: dict) -> dict:
    doc = copy.deepcopy(base)
    payload = doc.get("payload")
    for _ in range(rnd.randint(1, 3)):
        paths = _paths(payload)[1:]  # again: a change may reshape the payload
        if not paths:
            break
        path = rnd.choice(paths)
        parent = _at(payload, path[:-1])
        roll = rnd.random()
        if roll < 0.6:  # another line's value at the same key
            parent[path[-1]] = copy.deepcopy(rnd.choice(POOL[path[-1]]))
        elif roll < 0.9:
            parent[path[-1]] = copy.deepcopy(rnd.choice(ODD))
        elif isinstance(parent, dict):
            del parent[path[-1]]
    return doc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(1, 40))
def test_mixed_real_events_never_raise_in_any_step(rnd: random.Random, batch: int) -> None:
    docs = [copy.deepcopy(b) for b in BASES]
    docs += [_mutated(rnd, rnd.choice(BASES)) for _ in range(len(BASES))]
    docs += rnd.sample(docs, len(docs) // 4)  # redeliveries
    rnd.shuffle(docs)
    lines = [(i, json.dumps(d).encode(), {"line": i}) for i, d in enumerate(docs)]
    core = Core(SETTINGS)
    emitted: list[Any] = []
    encode_all = core._emit

    def keep(records: list) -> None:
        emitted.extend(records)
        encode_all(records)  # every record must encode, too

    core._emit = keep  # type: ignore[method-assign]
    for n, start in enumerate(range(0, len(lines), batch)):
        core.feed(n, lines[start : start + batch])
    dead = [r for r in emitted if isinstance(r, DeadLetter)]
    assert all(d.reason in errors.REASONS + errors.INDEX_REASONS for d in dead)
    assert not [d.error for d in dead if d.reason == errors.INTERNAL_ERROR]
    assert len(emitted) > len(dead)  # the real lines still made their corrections
