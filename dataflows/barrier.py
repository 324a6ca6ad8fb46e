"""Reassemble per-batch messages that reach a step along several paths.

An order shard hears about input batch n directly from the router and from every
tracking-index shard; the customer desk hears from every order shard. Messages
from different upstream workers interleave arbitrarily, so a step waits until it
holds batch n from every sender and then processes batches strictly in order.
That is what keeps outputs identical across worker counts.
"""

from __future__ import annotations

from typing import Generic, TypeVar

P = TypeVar("P")


class Barrier(Generic[P]):
    """Collects `senders` messages per (part, n); releases complete batches in n order."""

    __slots__ = ("_next", "_senders", "_waiting")

    def __init__(self, senders: int) -> None:
        self._senders = senders
        self._waiting: dict[tuple[str, int], dict[int, P]] = {}
        self._next: dict[str, int] = {}

    def add(self, part: str, n: int, sender: int, payload: P) -> list[tuple[str, int, list[P]]]:
        """Add one message; return every batch that became complete, in order."""
        self._waiting.setdefault((part, n), {})[sender] = payload
        ready: list[tuple[str, int, list[P]]] = []
        nxt = self._next.setdefault(part, 0)
        while True:
            got = self._waiting.get((part, nxt))
            if got is None or len(got) < self._senders:
                break
            del self._waiting[(part, nxt)]
            ready.append((part, nxt, [got[s] for s in sorted(got)]))
            nxt += 1
        self._next[part] = nxt
        return ready

    def pending(self) -> int:
        return len(self._waiting)
