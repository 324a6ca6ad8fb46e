"""Operator command ids already applied: a signed command produced again is a replay.

A signature proves who made a command, not that it is new: anyone who can read the
control topic could produce an old signed command again (say a force OPEN after the
operator's AUTO). The live parser refuses a command whose `received_at` is further
than `control.tolerance` from the wall clock, so an id need only be remembered while
its command could still pass that check: `keep_ms` (twice the tolerance, which allows
for a command stamped ahead of the clock), and at most `limit` ids, the oldest
forgotten first. Kept in the state of the step that applies the command (health, the
customer desk), so it is in the recovery snapshots and survives a restart.
"""

from __future__ import annotations

from schemas.config import Control


class SeenCommands:
    __slots__ = ("ids", "keep_ms", "limit")

    def __init__(self, keep_ms: int, limit: int) -> None:
        self.keep_ms = keep_ms
        self.limit = limit
        self.ids: dict[str, int] = {}  # command id -> when applied, in the order applied

    @classmethod
    def for_config(cls, control: Control) -> SeenCommands:
        return cls(2 * control.tolerance, control.remember)

    def __len__(self) -> int:
        return len(self.ids)

    def admit(self, command_id: str, at_ms: int) -> bool:
        """Whether `command_id` is new at `at_ms` (then it is remembered); False: a replay.

        `at_ms` never goes back (the applying step's clock), so the oldest come first.
        """
        ids = self.ids
        while ids and ids[oldest := next(iter(ids))] + self.keep_ms < at_ms:
            del ids[oldest]
        if command_id in ids:
            return False
        while len(ids) >= self.limit:
            del ids[next(iter(ids))]
        ids[command_id] = at_ms
        return True
