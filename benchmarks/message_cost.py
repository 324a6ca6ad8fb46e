"""Per-message cost of the step messages (`dataflows.messages`), as docs/scale-out.md quotes.

Build one message, and pickle + unpickle it keyed as a stateful step receives it (what
Bytewax does to an item it sends to another process), for the tuple the steps passed
before, a frozen slotted dataclass and the frozen `msgspec.Struct` they pass now. Best
of 7 runs, in µs: `python -m benchmarks.message_cost`.
"""

from __future__ import annotations

import pickle
import timeit
from collections.abc import Callable
from dataclasses import dataclass

from dataflows.messages import ToShard


@dataclass(frozen=True, slots=True)
class ToShardDataclass:
    part: str
    n: int
    shard: int
    clock: int
    parts: int
    events: list[object]
    commands: list[object]


def best_us(f: Callable[[], object], number: int = 100_000) -> float:
    return min(timeit.repeat(f, number=number, repeat=7)) / number * 1e6


def main() -> None:
    args = ("seq", 1234, 3, 1_772_400_000_000, 1, [], [])
    kinds: list[tuple[str, Callable[[], object]]] = [
        ("tuple (before)", lambda: ("direct", *args)),
        ("frozen slotted dataclass", lambda: ToShardDataclass(*args)),
        ("frozen msgspec.Struct (now)", lambda: ToShard(*args)),
    ]
    print("| message | build µs | pickle+unpickle µs | pickled bytes |")
    print("|---|---|---|---|")
    for name, make in kinds:
        item = ("o003", make())
        data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
        rt = best_us(lambda item=item: pickle.loads(pickle.dumps(item, pickle.HIGHEST_PROTOCOL)))
        print(f"| {name} | {best_us(make):.2f} | {rt:.2f} | {len(data)} |")


if __name__ == "__main__":
    main()
