"""Dead-letter reason codes: the machine half of every "why was this input bad".

Dashboards, the channel breaker and tests key on these strings, so they are
a closed, documented set; the human half is the dead letter's `error` sentence.
"""

from __future__ import annotations

TOO_LARGE = "too_large"
"""The record is larger than `limits.input_record`: its dead letter carries a prefix,
the size and a SHA-256 of the bytes, never the whole record."""
NOT_JSON = "not_json"
"""The message bytes are not JSON (or not UTF-8)."""
NOT_OBJECT = "not_object"
"""The message is JSON but not an object (an array, a string, a number...)."""
BAD_ENVELOPE = "bad_envelope"
"""An envelope field is missing or of the wrong type: `source`, `stream`,
`received_at` (when no fallback ingestion time is known), `event_id` (also one longer
than `limits.id`), `payload`."""
UNKNOWN_SOURCE = "unknown_source"
"""`source` names no entry of the source registry (ops/sources.yaml)."""
STREAM_MISMATCH = "stream_mismatch"
"""The envelope's `stream`, the topic's stream and the source's stream disagree."""
UNDECODABLE = "undecodable"
"""A field the source's `decode:` says holds JSON or XML text does not (or is not text;
XML with a DOCTYPE is refused)."""
MISSING_ORDER_ID = "missing_order_id"
"""The payload carries neither an order id nor a tracking number."""
INVALID_ORDER_ID = "invalid_order_id"
"""An order id that is not a global id (channel code + yyyymmdd + sequence) or a
`REF-<global id>-<nn>` refund id, or longer than `limits.id`; ids are case-sensitive."""
INVALID_FIELD = "invalid_field"
"""A tracking number, carrier, channel or customer id of the wrong JSON type, or
longer than `limits.id` bytes; an element of a split notification (`each:`) that is not
an object."""
UNPARSEABLE_TIME = "unparseable_time"
"""An event time (or the envelope's `received_at`) that is not in the source's format."""
IMPLAUSIBLE_TIME = "implausible_time"
"""The envelope's `received_at` runs ahead of the ingestion clock by more than
`pipeline.max_clock_ahead` (the wall clock, live and in replay: see
`dataflows.stamp`). Dead-lettered so that it moves no clock."""
UNMAPPED_STATUS = "unmapped_status"
"""A status value the source's map does not know, or a message whose `kind_by` value
(or absence) selects none of the source's `kinds` (feeds the UNMAPPED_STATUS alert)."""
NO_EVENTS = "no_events"
"""A notification whose `each:` list is present but empty: it reports nothing, which is
not a delivery to drop silently."""
MISSING_STATUS = "missing_status"
"""A status field that is not optional is absent or null."""
INVALID_TELEMETRY = "invalid_telemetry"
"""A `carrier_api` record whose carrier is unknown, latency not a number, `ok`
not a bool, or operation/error not strings."""
INTERNAL_ERROR = "internal_error"
"""A bug in the normalizer: it never raises, so the exception becomes a dead letter."""

REASONS: tuple[str, ...] = (
    TOO_LARGE,
    NOT_JSON,
    NOT_OBJECT,
    BAD_ENVELOPE,
    UNKNOWN_SOURCE,
    STREAM_MISMATCH,
    UNDECODABLE,
    MISSING_ORDER_ID,
    INVALID_ORDER_ID,
    INVALID_FIELD,
    UNPARSEABLE_TIME,
    IMPLAUSIBLE_TIME,
    UNMAPPED_STATUS,
    NO_EVENTS,
    MISSING_STATUS,
    INVALID_TELEMETRY,
    INTERNAL_ERROR,
)
"""Every reason a dead letter may carry, in the order the normalizer checks them."""

# ---------------------------------------------------------------- the reference index
# Events that name their order only by a tracking number or another reference wait in
# the reference index (`state.reference_index`) until an order claims it, bounded by
# `retention.pending_tracking` (time), `pending_tracking_max` and `_max_bytes` (a shard).
UNMATCHED_TRACKING = "unmatched_tracking"
"""A scan naming only a tracking number no order registered within the retention period."""
UNLINKED_REFERENCE = "unlinked_reference"
"""An event naming its order only by a reference (`taobao:3456…`, a payment reference) that
no event linked to an order (the OMS's `channel` + `platform_order_id`, ...) in time."""
PENDING_OVERFLOW = "pending_overflow"
"""More events waited in one index shard than its bounds allow: the oldest was let go."""

INDEX_REASONS: tuple[str, ...] = (UNMATCHED_TRACKING, UNLINKED_REFERENCE, PENDING_OVERFLOW)
"""Every reason a dead letter of the reference index may carry."""

# ---------------------------------------------------------------- operator commands
# A record of any stream over `limits.input_record` is TOO_LARGE before either parser
# sees it (`dataflows.router`). The control stream (`schemas.commands`) also uses
# NOT_JSON, NOT_OBJECT, BAD_ENVELOPE, STREAM_MISMATCH, UNPARSEABLE_TIME, IMPLAUSIBLE_TIME
# and INVALID_FIELD as above (INVALID_FIELD also for an implausible customer id or
# operator name).
UNKNOWN_COMMAND = "unknown_command"
"""A control envelope whose `payload.command` is not `hold_release` or `breaker_force`."""
UNKNOWN_BREAKER = "unknown_breaker"
"""A `breaker_force` whose `kind` is not channel, carrier or customer."""
UNKNOWN_BREAKER_KEY = "unknown_breaker_key"
"""A channel or carrier `key` that is not a key of `channels:` / `carriers:` in the config."""
INVALID_BREAKER_STATE = "invalid_breaker_state"
"""A `state` the breaker kind does not have (OPEN, CLOSED, HALF_OPEN, AUTO for channels
and carriers; HOLD, RELEASED for customers)."""
MISSING_OPERATOR = "missing_operator"
"""A command without `payload.operator`: every operator decision names who took it."""
UNAUTHENTICATED_COMMAND = "unauthenticated_command"
"""A command not signed by a key of `control.keys` (unsigned, a malformed signature, an
unknown key, a forged or altered command), one whose `received_at` is more than
`control.tolerance` behind the pipeline's ingestion clock (stale), or a replay of an id
already applied (the last two refused by the step that applies it).
Raises OrderguardUnauthenticatedCommand: someone who is not an operator's tool writes
to the control topic."""

COMMAND_REASONS: tuple[str, ...] = (
    NOT_JSON,
    NOT_OBJECT,
    BAD_ENVELOPE,
    STREAM_MISMATCH,
    UNKNOWN_SOURCE,
    UNPARSEABLE_TIME,
    UNAUTHENTICATED_COMMAND,
    IMPLAUSIBLE_TIME,
    UNKNOWN_COMMAND,
    MISSING_OPERATOR,
    INVALID_FIELD,
    UNKNOWN_BREAKER,
    UNKNOWN_BREAKER_KEY,
    INVALID_BREAKER_STATE,
    INTERNAL_ERROR,
)
"""Every reason a dead letter of the control stream may carry, in the order they are checked."""

# ---------------------------------------------------------------- outputs
OUTPUT_TOO_LARGE = "output_too_large"
"""An output record (a correction, alert or decision) over `limits.output_record`, or one
the broker refused as too large or invalid: in its place goes a dead letter with the
record's topic, key, size, SHA-256 and a prefix. Never an input reason."""
