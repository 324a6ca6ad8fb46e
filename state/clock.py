"""The ingestion clock across input partitions.

Deadlines are measured on the ingestion clock, and a deadline may fire only once
everything that arrived before it has been consumed. With several input
partitions read at different speeds, that is the position of the slowest one: a
partition reports the newest `received_at` it has consumed, or the wall clock
while it is caught up (at its end). Until every partition has reported, the clock
does not move. In replay there is one partition and this is simply its position.
"""

from __future__ import annotations


class Frontier:
    __slots__ = ("expected", "parts")

    def __init__(self) -> None:
        self.parts: dict[str, int] = {}
        self.expected = 1

    def update(self, part: str, clock: int, parts: int) -> int:
        """Record `part` at `clock` (of `parts` partitions in all); return the frontier."""
        self.expected = parts
        if clock > self.parts.get(part, 0):
            self.parts[part] = clock
        return self.value()

    def value(self) -> int:
        """The slowest partition's position; 0 while some partition is still unheard."""
        if len(self.parts) < self.expected:
            return 0
        return min(self.parts.values())
