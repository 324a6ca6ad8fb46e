"""Operator commands: the control envelope parsed to a Command, or dead-lettered with a reason."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from connectors.replay import RawBatch
from dataflows.messages import Records, ToHealth, ToShard
from dataflows.operator import (
    CommandRefused,
    breaker_force,
    envelope,
    hold_release,
    message_key,
    prepare,
)
from dataflows.router import Router
from dataflows.stamp import PartitionStamp
from schemas import errors
from schemas.commands import Command, CommandParser, is_control, sign
from schemas.config import Control, load_settings
from schemas.event import DeadLetter
from state.health import HealthBatch
from tests.helpers import mark

KEY = "unit-test-control-key-0123456789"
SETTINGS = load_settings().model_copy(update={"control": Control(keys={"ops": KEY})})
PARSER = CommandParser(SETTINGS)  # no wall clock: these commands keep their recorded time
AT = "2026-03-02T08:00:00.250Z"
AT_MS = int(datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp() * 1000) + 250


def env(payload: object = None, **over: object) -> bytes:
    """A control envelope signed by the configured key (see test_command_auth for more)."""
    return orjson.dumps(sign(orjson.loads(unsigned(payload, **over)), "ops", KEY.encode()))


def unsigned(payload: object = None, **over: object) -> bytes:
    doc: dict[str, object] = {
        "stream": "control",
        "source": "operator",
        "received_at": AT,
        "event_id": "cmd-1",
        "payload": payload
        if payload is not None
        else {
            "command": "breaker_force",
            "operator": "alice",
            "kind": "carrier",
            "key": "jt",
            "state": "CLOSED",
        },
    }
    for k, v in over.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    return orjson.dumps(doc)


def force(**over: object) -> dict[str, object]:
    p: dict[str, object] = {
        "command": "breaker_force",
        "operator": "alice",
        "kind": "carrier",
        "key": "jt",
        "state": "OPEN",
    }
    for k, v in over.items():
        if v is None:
            p.pop(k, None)
        else:
            p[k] = v
    return p


# ------------------------------------------------------------------ good commands
def test_breaker_force_parses_to_a_command_at_its_received_time():
    origin = {"topic": "control", "partition": 0, "offset": 3}
    c = PARSER.parse(env(), origin, seq=7)
    assert c == Command(
        "cmd-1", "carrier", "jt", "CLOSED", "alice", None, AT_MS, 7, "ops", env(), origin
    )
    assert c.explanation() == "operator alice (key ops): forced CLOSED"
    assert c.figures(True) == {
        "operator": "alice",
        "signer": "ops",
        "command_id": "cmd-1",
        "forced": True,
    }


def test_hold_release_is_a_customer_release_with_the_operators_reason():
    p = {"command": "hold_release", "operator": " bob ", "customer_id": "C42", "reason": "ok'd"}
    c = PARSER.parse(env(p))
    assert isinstance(c, Command)
    assert (c.breaker, c.key, c.state, c.operator) == ("customer", "C42", "RELEASED", "bob")
    assert c.explanation() == "operator bob (key ops): ok'd"


@pytest.mark.parametrize(
    ("kind", "key", "state"),
    [
        ("channel", "pinduoduo", "OPEN"),
        ("channel", "web", "HALF_OPEN"),
        ("carrier", "sf", "AUTO"),
        ("customer", "any-customer-id", "HOLD"),
        ("customer", "C1", "RELEASED"),
    ],
)
def test_every_kind_takes_its_states(kind, key, state):
    c = PARSER.parse(env(force(kind=kind, key=key, state=state)))
    assert isinstance(c, Command) and (c.breaker, c.key, c.state) == (kind, key, state)


def test_stream_may_be_left_out_on_the_control_topic_but_not_in_a_replay_file():
    assert isinstance(PARSER.parse(env(stream=None), stream="control"), Command)
    dl = PARSER.parse(env(stream=None), stream=None)
    assert isinstance(dl, DeadLetter) and dl.reason == errors.BAD_ENVELOPE


# ------------------------------------------------------------------ bad commands
BAD = [
    (b"{not json", errors.NOT_JSON, "not JSON"),
    (b"", errors.NOT_JSON, "not JSON"),
    (b"[1, 2]", errors.NOT_OBJECT, "not an object"),
    (unsigned(), errors.UNAUTHENTICATED_COMMAND, "unsigned"),
    (env(stream="orders"), errors.STREAM_MISMATCH, "'orders'"),
    (env(source="oms"), errors.UNKNOWN_SOURCE, "'operator'"),
    (env(received_at=None), errors.BAD_ENVELOPE, "received_at"),
    (env(received_at="yesterday"), errors.UNPARSEABLE_TIME, "received_at"),
    (env(event_id=None), errors.BAD_ENVELOPE, "event_id"),
    (env(payload=[1]), errors.BAD_ENVELOPE, "payload"),
    (env(force(command="reboot")), errors.UNKNOWN_COMMAND, "'reboot'"),
    (env(force(command=None)), errors.UNKNOWN_COMMAND, "None"),
    (env(force(operator=None)), errors.MISSING_OPERATOR, "operator"),
    (env(force(operator="  ")), errors.MISSING_OPERATOR, "operator"),
    (env(force(reason=3)), errors.INVALID_FIELD, "reason"),
    (env(force(reason="x" * 501)), errors.INVALID_FIELD, "reason"),
    (env({"command": "hold_release", "operator": "bob"}), errors.INVALID_FIELD, "customer_id"),
    (env(force(kind="gateway")), errors.UNKNOWN_BREAKER, "'gateway'"),
    (env(force(key=None)), errors.INVALID_FIELD, "key"),
    (env(force(key="fedex")), errors.UNKNOWN_BREAKER_KEY, "unknown carrier 'fedex'"),
    (env(force(kind="channel", key="jt")), errors.UNKNOWN_BREAKER_KEY, "unknown channel 'jt'"),
    (env(force(state="open")), errors.INVALID_BREAKER_STATE, "'open'"),
    (env(force(state="HOLD")), errors.INVALID_BREAKER_STATE, "carrier breaker"),
    (env(force(kind="customer", key="C1", state="OPEN")), errors.INVALID_BREAKER_STATE, "HOLD"),
]


@pytest.mark.parametrize(("raw", "reason", "says"), BAD)
def test_a_bad_command_is_a_dead_letter_with_a_reason_never_an_exception(raw, reason, says):
    origin = {"topic": "orderguard.control", "partition": 1, "offset": 9}
    dl = PARSER.parse(raw, origin, seq=4)
    assert isinstance(dl, DeadLetter), dl
    assert (dl.reason, dl.stream, dl.source, dl.seq) == (reason, "control", "operator", 4)
    assert says in dl.error + repr(dl.value)
    assert dl.raw == raw and dl.origin == origin
    assert dl.reason in errors.COMMAND_REASONS


def test_every_command_reason_is_exercised():
    # implausible_time needs a clock: tests/unit/test_implausible_time.py
    exercised = {r for _, r, _ in BAD} | {errors.IMPLAUSIBLE_TIME}
    assert exercised == set(errors.COMMAND_REASONS) - {errors.INTERNAL_ERROR}


def test_a_dead_letter_after_the_envelope_keeps_its_received_time():
    dl = PARSER.parse(env(force(state="NOPE")))
    assert isinstance(dl, DeadLetter) and dl.received_ms == AT_MS


# ------------------------------------------------------------------ the CLI's side
def test_the_cli_builds_the_envelope_the_parser_accepts():
    now = datetime(2026, 3, 2, 8, 0, 0, 250_000, tzinfo=UTC)
    e = envelope(hold_release("C7", "bob", None), now)
    assert e["received_at"] == AT and e["stream"] == "control" and e["source"] == "operator"
    assert len(e["event_id"]) == 36 and e["payload"] == {
        "command": "hold_release",
        "operator": "bob",
        "customer_id": "C7",
    }
    c, value = prepare(SETTINGS, breaker_force("carrier", "jt", "AUTO", "alice", "fixed"))
    assert PARSER.parse(value) == c and c.reason == "fixed"
    assert message_key(c) == b"carrier:jt"
    c, _ = prepare(SETTINGS, hold_release("C7", "bob", None))
    assert message_key(c) == b"C7"


def test_the_cli_refuses_what_the_pipeline_would_dead_letter():
    with pytest.raises(CommandRefused, match=r"unknown carrier 'fedex'.*unknown_breaker_key"):
        prepare(SETTINGS, breaker_force("carrier", "fedex", "OPEN", "alice", None))
    with pytest.raises(CommandRefused, match="missing_operator"):
        prepare(SETTINGS, hold_release("C7", "", None))


# ------------------------------------------------------------------ routing
def test_is_control_only_for_control_envelopes():
    assert is_control(env())
    assert not is_control(b'{"stream": "orders", "source": "oms", "note": "control"}')
    assert not is_control(b'{"control" broken')


def test_router_sends_channel_and_carrier_commands_to_health_and_customers_to_shard_0():
    router = Router(SETTINGS)
    customer = env({"command": "hold_release", "operator": "bob", "customer_id": "C1"})
    lines = [
        (0, env(), {"file": "f", "line": 1}),
        (1, customer, {"file": "f", "line": 2}),
        (2, env(force(state="BAD")), {"file": "f", "line": 3}),
    ]
    batch = PartitionStamp().stamp(
        RawBatch("replay", 0, lines), 0, AT_MS, SETTINGS.pipeline.max_clock_ahead
    )
    assert batch is not None
    assert batch.clock == AT_MS  # commands move the partition's ingestion clock like any line
    keys = [key for key, _, _ in batch.lines]
    # replay: the envelopes name the stream
    msgs = router.route(mark("replay", batch.clock), batch.lines, None, batch.limits)
    [to_health] = [m for m in msgs if isinstance(m, ToHealth)]
    health = to_health.batch
    assert isinstance(health, HealthBatch)
    assert [(pos, c.key, c.state) for pos, _, c in health.commands] == [(keys[0], "jt", "CLOSED")]
    shards = sorted((m for m in msgs if isinstance(m, ToShard)), key=lambda m: m.shard)
    shard_0 = shards[0]
    assert shard_0.shard == 0
    assert [(c.key, c.state, c.seq) for c in shard_0.commands] == [("C1", "RELEASED", keys[1])]
    assert all(m.commands == [] for m in shards[1:])
    [[dl]] = [m.records for m in msgs if isinstance(m, Records)]
    assert (dl.reason, dl.stream) == (errors.INVALID_BREAKER_STATE, "control")


def test_router_parses_control_partition_lines_as_commands_not_envelopes():
    router = Router(SETTINGS)
    lines = [(0, env(stream=None), {"topic": "c", "partition": 0, "offset": 0})]
    msgs = router.route(mark("control:0"), lines, "control")
    assert not any(isinstance(m, Records) for m in msgs)
    [to_health] = [m for m in msgs if isinstance(m, ToHealth)]
    assert len(to_health.batch.commands) == 1
