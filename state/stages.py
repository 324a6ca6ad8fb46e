"""Stage durations: how long orders take between fulfillment milestones.

Measured on the ingestion clock (when we learnt of each milestone), like every
deadline, so a wrong time zone at a source cannot make a stage look negative.
Each stage is timed once per order, when the order's main path first crosses
into it; an order that skips a milestone (a first scan already "in transit")
times the stages whose start it saw.

- paid_to_label: first gateway payment success -> a tracking number (LABEL_CREATED or further)
- label_to_pickup: LABEL_CREATED -> the carrier has it (PICKED_UP or further)
- pickup_to_delivered: PICKED_UP -> DELIVERED
- payment_to_oms: first gateway payment success -> the OMS reports the order paid
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.statuses import RANK
from state.evidence import LABEL_AT, PAID_AT, PICKUP_AT, Order

LABEL_RANK = RANK["LABEL_CREATED"]
PICKUP_RANK = RANK["PICKED_UP"]
DELIVERED_RANK = RANK["DELIVERED"]
PAID_RANK = RANK["PAID"]
STAGES = ("paid_to_label", "label_to_pickup", "pickup_to_delivered", "payment_to_oms")


class StageTiming(NamedTuple):
    stage: str
    channel: str
    carrier: str
    ms: int


def _rank(status: str | None) -> int:
    return RANK.get(status, 0) if status is not None else 0


def time_stages(
    o: Order, main_before: str | None, reported_before: str | None, now: int
) -> list[StageTiming]:
    """The stages this event completed for the order (usually none)."""
    out: list[StageTiming] = []
    before, after = _rank(main_before), _rank(o.main)
    t = o.t
    channel = o.channel or "unknown"
    carrier = o.carrier or "none"
    if before < LABEL_RANK <= after:
        t[LABEL_AT] = now
        if t[PAID_AT]:
            out.append(StageTiming("paid_to_label", channel, carrier, now - t[PAID_AT]))
    if before < PICKUP_RANK <= after:
        t[PICKUP_AT] = now
        if t[LABEL_AT] and t[LABEL_AT] < now:
            out.append(StageTiming("label_to_pickup", channel, carrier, now - t[LABEL_AT]))
    if before < DELIVERED_RANK <= after and t[PICKUP_AT] and t[PICKUP_AT] < now:
        out.append(StageTiming("pickup_to_delivered", channel, carrier, now - t[PICKUP_AT]))
    if t[PAID_AT] and _rank(reported_before) < PAID_RANK <= _rank(o.reported):
        out.append(StageTiming("payment_to_oms", channel, carrier, now - t[PAID_AT]))
    return out
