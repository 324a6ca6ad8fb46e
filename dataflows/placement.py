"""Which worker Bytewax 0.21.1 gives a stateful key and an input partition.

Keeping a partition's work on the worker that reads it (issue 14: no step that sees
every event) needs both placements, and Bytewax computes each deterministically:

- a stateful step's key goes to worker `hash(key) % workers`, `hash` being Rust's
  `DefaultHasher` (SipHash-1-3 with zero keys) over the key's `str` bytes and a
  0xFF terminator (`src/operators.rs` `stateful_batch` -> `src/timely.rs`
  `PartitionFn`; `StateKey(String)` derives `Hash`);
- input partitions, listed by every worker, are assigned in sorted key order to the
  worker with the fewest so far, the lowest index on ties (`src/timely.rs`
  `calc_primaries`): round robin over the sorted partition names. A partitioned
  sink's partitions are assigned the same way, so the Kafka sink, partitioned by the
  input partitions' names, writes on each worker what that worker made.

Only speed rests on these: a key that lands elsewhere still reaches its state, one
crossing later. `tests/integration/test_placement.py` checks both against a real
2-worker run, so a Bytewax upgrade that changes either fails there.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from dataflows.messages import index_key, shard_key

_MASK = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash13(data: bytes, k0: int = 0, k1: int = 0) -> int:
    """SipHash-1-3 (one compression round, three finalization rounds), as Rust's std."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        rounds(1)
        v0 ^= m
    last = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= last
    rounds(1)
    v0 ^= last
    v2 ^= 0xFF
    rounds(3)
    return v0 ^ v1 ^ v2 ^ v3


def worker_of_key(key: str, workers: int) -> int:
    """The worker (0-based, over all processes) that holds a stateful step's `key`."""
    return siphash13(key.encode() + b"\xff") % workers


def workers_of_parts(parts: list[str], workers: int) -> dict[str, int]:
    """The worker that reads each input partition, when every worker lists them all."""
    return {part: i % workers for i, part in enumerate(sorted(parts))}


def colocated_key(base: str, slot: int, modulus: int = 240) -> str:
    """A stable key, `base` plus the smallest suffix, that lands on worker `slot % workers`.

    Chosen against `modulus` (240 = 16 x 15) rather than a worker count, so the key is
    the same for every cluster size, as recovery needs (a state key must not change when
    a store is resumed with other workers), and it lands on `slot % workers` for every
    worker count that divides 240: 1 to 6, 8, 10, 12, 15, 16, 20, 24, 30, 40, 48, 60, ...
    (Finding one takes `modulus` hash tries on average, in pure Python: 240 keeps a
    start-up's ~30 keys under 0.1 s.)
    """
    target = slot % modulus
    i = 0
    while True:
        key = f"{base}~{i}"
        if siphash13(key.encode() + b"\xff") % modulus == target:
            return key
        i += 1


class StateKeys:
    """The state keys of the steps that should run where their input is read.

    `parts`: every input partition's name (`stream:i`), fixed for the life of a
    recovery store (`dataflows.live` checks the layout). An input partition's merge
    keys are stamped by a step on the worker that reads it; order shard s works on
    lane `s % lanes` (the orders topic's partition `s % lanes`, where producers put its
    orders) and lives where that lane is read, when the shard count is a multiple of the
    lanes; reference-index shards likewise. Without `parts` (tests) keys are plain and
    Bytewax places them anywhere.
    """

    def __init__(
        self, parts: list[str] | None, shards: int, indexes: int = 0, lane_stream: str = "orders"
    ) -> None:
        names = sorted(parts or ())
        slot = {p: i for i, p in enumerate(names)}
        self.lanes = sum(p.startswith(f"{lane_stream}:") for p in names)
        self.colocated = self._on_lanes(shards)
        self._index = slot
        self._input = {p: colocated_key(f"in:{p}", i) for p, i in slot.items()}
        self._home = {key: slot[p] for p, key in self._input.items()}
        self._shards = self._placed(shard_key, shards, slot, lane_stream)
        self._indexes = self._placed(index_key, indexes, slot, lane_stream)

    def _on_lanes(self, n: int) -> bool:
        """Whether n shards split evenly over the lanes (else they are placed anywhere)."""
        return self.lanes > 0 and n % self.lanes == 0

    def _placed(
        self, name: Callable[[int], str], n: int, slot: dict[str, int], lane_stream: str
    ) -> list[str]:
        """Shard i of n on lane `i % lanes`'s reader, when n is a multiple of the lanes."""
        if not self._on_lanes(n):
            return [name(i) for i in range(n)]
        lanes = self.lanes
        keys = []
        for i in range(n):
            lane = slot[f"{lane_stream}:{i % lanes}"]
            keys.append(colocated_key(name(i), lane))
            self._home[keys[-1]] = lane
        return keys

    def input(self, part: str) -> str:
        return self._input.get(part) or f"in:{part}"

    def shard(self, s: int) -> str:
        return self._shards[s]

    def index(self, i: int) -> str:
        """Reference-index shard i: by `dataflows.router.index_shard` it holds references
        whose ids (`schemas.keys`) are read in lane `i % lanes`."""
        return self._indexes[i]

    def home(self, key: str) -> int:
        """The input partition (its place among the sorted names) read on the worker that
        holds a stateful step's `key`, for keys placed beside one; else 0."""
        return self._home.get(key, 0)

    def part_index(self, part: str) -> int:
        """The partition's number in its merge keys: its place among all, else a hash."""
        i = self._index.get(part)
        return i if i is not None else zlib.crc32(part.encode()) & 0xFFFF
