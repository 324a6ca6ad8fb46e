"""Signed operator commands that are stale or already applied: refused, not applied.

A signature proves who made a command, not that it is new: anyone who can read the
control topic could produce an old signed command again (say a force OPEN after the
operator's AUTO). So the step that applies a command (health, the customer desk)
refuses one whose `received_at` is more than `control.tolerance` behind its ingestion
clock (stale), and one whose id it has already applied (a replay). The ingestion clock,
not the wall clock: it is the input's own time, so a pipeline catching up after an
outage still applies the commands given meanwhile, and a replay of a recording gives
the same outputs. (In a live run that is caught up, the clock follows the wall clock.)

Only ids within the tolerance need remembering (older ones are stale anyway), at most
`control.remember` of them, the oldest forgotten first. They are part of the step's
state, so in the recovery snapshots: a replay is refused after a restart too.
"""

from __future__ import annotations

from schemas.config import Control


class SeenCommands:
    __slots__ = ("ids", "limit", "tolerance")

    def __init__(self, tolerance: int, limit: int) -> None:
        self.tolerance = tolerance
        self.limit = limit
        self.ids: dict[str, int] = {}  # command id -> its received_ms, in the order applied

    @classmethod
    def for_config(cls, control: Control) -> SeenCommands:
        return cls(control.tolerance, control.remember)

    def __len__(self) -> int:
        return len(self.ids)

    def refuse(self, command_id: str, received_ms: int, clock_ms: int) -> str | None:
        """Why the command cannot be applied at `clock_ms` (the step's ingestion clock),
        or None: it is new, and from now on remembered."""
        oldest = clock_ms - self.tolerance
        ids = self.ids
        while ids and ids[first := next(iter(ids))] < oldest:
            del ids[first]
        if received_ms < oldest:
            late = (clock_ms - received_ms) / 1000
            return (
                f"is stale: received_at is {late:.0f}s behind the pipeline's clock, more "
                f"than control.tolerance ({self.tolerance // 1000}s)"
            )
        if command_id in ids:
            return "was already applied: a replay"
        while len(ids) >= self.limit:
            del ids[next(iter(ids))]
        ids[command_id] = received_ms
        return None
