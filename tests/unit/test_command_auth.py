"""Operator commands are signed: forged, unsigned, stale and replayed ones are dead letters.

Issue 11, finding 5: anyone who could produce to the control topic forced any breaker
or hold under any name. A command now carries an HMAC-SHA256 signature by a named key
from the environment, a fresh `received_at` and an id never seen before; its target
and operator name are plausible. The decision names the key that signed it.
"""

from __future__ import annotations

import os
import pickle
from datetime import UTC, datetime
from unittest import mock

import orjson
import pytest

from dataflows.operator import CommandRefused, breaker_force, hold_release, prepare
from schemas import errors
from schemas.commands import Command, CommandParser, canonical, sign
from schemas.config import ConfigError, load_settings
from schemas.event import DeadLetter
from state.customers import CustomerDesk
from state.encode import decision as encode_decision
from state.health import HealthBatch, HealthState
from state.view import decisions_update

OPS1, OPS2 = "ops1-" + "a" * 27, "ops2-" + "b" * 27
AT = "2026-03-02T08:00:00.250Z"
AT_MS = int(datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp() * 1000) + 250
ENV = "ORDERGUARD__CONTROL__KEYS__"


def settings_with(signing_key: str | None = None, **keys: str):
    """The default configuration with these control keys in the environment (only there)."""
    env = {f"{ENV}{name.upper()}": secret for name, secret in keys.items()}
    if signing_key is not None:
        env["ORDERGUARD__CONTROL__SIGNING_KEY"] = signing_key
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGUARD__CONTROL__")}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        return load_settings()


SETTINGS = settings_with(ops1=OPS1, ops2=OPS2)


def parser(settings=SETTINGS) -> CommandParser:
    return CommandParser(settings)


def doc(payload: dict | None = None, **over: object) -> dict:
    d: dict[str, object] = {
        "stream": "control",
        "source": "operator",
        "received_at": AT,
        "event_id": "cmd-1",
        "payload": payload
        or {
            "command": "breaker_force",
            "operator": "alice",
            "kind": "carrier",
            "key": "jt",
            "state": "CLOSED",
        },
    }
    d.update(over)
    return d


def signed(d: dict, key_id: str = "ops1", secret: str = OPS1) -> bytes:
    return orjson.dumps(sign(d, key_id, secret.encode()))


def refused(raw: bytes, p: CommandParser | None = None) -> DeadLetter:
    dl = (p or parser()).parse(raw, {"topic": "control", "partition": 0, "offset": 1}, seq=3)
    assert isinstance(dl, DeadLetter), dl
    return dl


# ------------------------------------------------------------------ the signature
def test_a_signed_command_names_its_signer_in_the_decision():
    c = parser().parse(signed(doc()))
    assert isinstance(c, Command) and c.signer == "ops1"
    assert "(key ops1)" in c.explanation() and c.figures(True)["signer"] == "ops1"


def test_canonical_bytes_are_the_envelope_without_signature_with_sorted_keys():
    d = sign(doc(), "ops1", OPS1.encode())
    assert canonical(d) == orjson.dumps(doc(), option=orjson.OPT_SORT_KEYS)
    assert set(d["signature"]) == {"key_id", "hmac"} and len(d["signature"]["hmac"]) == 64


def test_an_unsigned_command_is_unauthenticated():
    dl = refused(orjson.dumps(doc()))
    assert dl.reason == errors.UNAUTHENTICATED_COMMAND and "unsigned" in dl.error
    assert dl.reason in errors.COMMAND_REASONS and dl.seq == 3 and dl.stream == "control"


@pytest.mark.parametrize(
    "tamper",
    [
        {"operator": "mallory"},
        {"key": "zto"},
        {"state": "OPEN"},
        {"reason": "added later"},
    ],
)
def test_a_forged_command_changed_after_signing_is_unauthenticated(tamper):
    d = sign(doc(), "ops1", OPS1.encode())
    d["payload"] = {**d["payload"], **tamper}
    dl = refused(orjson.dumps(d))
    assert dl.reason == errors.UNAUTHENTICATED_COMMAND and "signature" in dl.error


def test_a_changed_envelope_field_breaks_the_signature_too():
    d = sign(doc(), "ops1", OPS1.encode())
    d["event_id"] = "cmd-2"  # a replay under a fresh id
    assert refused(orjson.dumps(d)).reason == errors.UNAUTHENTICATED_COMMAND


def test_the_wrong_key_or_an_unknown_key_is_unauthenticated():
    assert refused(signed(doc(), "ops1", OPS2)).reason == errors.UNAUTHENTICATED_COMMAND
    dl = refused(signed(doc(), "eve", OPS1))
    assert dl.reason == errors.UNAUTHENTICATED_COMMAND and "unknown key 'eve'" in dl.error


@pytest.mark.parametrize(
    "signature",
    ["ops1:deadbeef", {"key_id": "ops1"}, {"key_id": 1, "hmac": "00"}, {"hmac": "00"}, []],
)
def test_a_malformed_signature_is_unauthenticated(signature):
    dl = refused(orjson.dumps({**doc(), "signature": signature}))
    assert dl.reason == errors.UNAUTHENTICATED_COMMAND


def test_no_configured_key_refuses_every_command():
    bare = settings_with()
    assert refused(signed(doc()), parser(bare)).reason == errors.UNAUTHENTICATED_COMMAND


def test_rotation_two_keys_at_once_then_the_old_one_removed():
    assert isinstance(parser().parse(signed(doc(), "ops1", OPS1)), Command)
    c = parser().parse(signed(doc(), "ops2", OPS2))
    assert isinstance(c, Command) and c.signer == "ops2"
    rotated = parser(settings_with(ops2=OPS2))
    assert isinstance(rotated.parse(signed(doc(), "ops2", OPS2)), Command)
    assert refused(signed(doc(), "ops1", OPS1), rotated).reason == errors.UNAUTHENTICATED_COMMAND


# ------------------------------------------------------------------ freshness
def test_a_command_older_than_the_tolerance_on_the_ingestion_clock_is_refused_as_stale():
    tolerance = SETTINGS.control.tolerance
    raw = signed(doc())
    c = parser().parse(raw)
    late = HealthState(SETTINGS)
    late.advance(AT_MS + tolerance + 1)
    [dl] = late.apply(_health_batch(c))
    assert isinstance(dl, DeadLetter) and dl.reason == errors.UNAUTHENTICATED_COMMAND
    assert "stale" in dl.error and late.carriers["jt"].forced is False
    in_time = HealthState(SETTINGS)
    in_time.advance(AT_MS + tolerance)
    [d] = in_time.apply(_health_batch(c))
    assert (d.key, d.state) == ("jt", "CLOSED")
    desk = CustomerDesk(SETTINGS)
    desk.process([], AT_MS + tolerance + 1)
    hold = {"command": "breaker_force", "operator": "bob", "kind": "customer", "key": "C1"}
    stale_hold = parser().parse(signed(doc({**hold, "state": "HOLD"})))
    [dl] = desk.process([stale_hold], AT_MS + tolerance + 1)
    assert dl.reason == errors.UNAUTHENTICATED_COMMAND and "stale" in dl.error


# ------------------------------------------------------------------ replayed ids
def _health_batch(*commands: Command) -> HealthBatch:
    b = HealthBatch.for_settings(SETTINGS)
    for c in commands:
        b.add_command(c)
    return b


def test_a_replayed_command_id_is_dead_lettered_by_health_also_after_a_restart():
    raw = signed(doc())
    c = parser().parse(raw, {"topic": "control", "partition": 0, "offset": 1}, seq=1)
    state = HealthState(SETTINGS)
    [d] = state.apply(_health_batch(c))
    assert (d.key, d.state, d.figures["signer"]) == ("jt", "CLOSED", "ops1")
    # a force AUTO in between, so that the replay would change something again
    auto = parser().parse(
        signed(doc(event_id="cmd-2", payload={**doc()["payload"], "state": "AUTO"}))
    )
    assert isinstance(auto, Command) and len(state.apply(_health_batch(auto))) == 1
    restored = pickle.loads(pickle.dumps(state))
    again = parser().parse(raw, {"topic": "control", "partition": 0, "offset": 9}, seq=9)
    [dl] = restored.apply(_health_batch(again))
    assert isinstance(dl, DeadLetter) and dl.reason == errors.UNAUTHENTICATED_COMMAND
    assert "cmd-1" in dl.error and dl.raw == raw and dl.origin["offset"] == 9
    assert restored.carriers["jt"].forced is False  # nothing changed


def test_a_replayed_customer_command_is_dead_lettered_by_the_desk():
    p = {"command": "hold_release", "operator": "bob", "customer_id": "C1"}
    hold = {"command": "breaker_force", "operator": "bob", "kind": "customer", "key": "C1"}
    c_hold = parser().parse(signed(doc({**hold, "state": "HOLD"}, event_id="h1")))
    c_release = parser().parse(signed(doc(p, event_id="r1")))
    desk = CustomerDesk(SETTINGS)
    out = desk.process([c_hold, c_release], AT_MS)
    assert [d.state for d in out] == ["HOLD", "RELEASED"]
    desk = pickle.loads(pickle.dumps(desk))
    out = desk.process([c_hold], AT_MS + 1)  # the hold, replayed
    assert [(type(r).__name__, getattr(r, "reason", "")) for r in out] == [
        ("DeadLetter", errors.UNAUTHENTICATED_COMMAND)
    ]
    assert not desk.holds.is_held("C1", AT_MS + 2)


def test_remembered_ids_are_bounded_in_time_and_count():
    from state.command_ids import SeenCommands

    seen = SeenCommands(tolerance=1000, limit=3)
    assert seen.refuse("a", 0, 0) is None
    assert "already applied" in seen.refuse("a", 0, 500)
    assert seen.refuse("b", 600, 600) is None and seen.refuse("c", 700, 700) is None
    assert "stale" in seen.refuse("a", 0, 1001)  # forgotten, but too old to apply anyway
    assert list(seen.ids) == ["b", "c"]
    seen = SeenCommands(tolerance=1000, limit=3)
    for i, name in enumerate("abcde"):
        assert seen.refuse(name, i, i) is None
    assert len(seen) == 3 and list(seen.ids) == ["c", "d", "e"]


# ------------------------------------------------------------------ plausible targets
@pytest.mark.parametrize(
    "customer", ["*", "og:*\r\nFLUSHALL", "x" * 100_000, "C1\x00", "a b", "C?", "C[1]"]
)
def test_an_implausible_customer_id_is_an_invalid_field(customer):
    p = {"command": "hold_release", "operator": "bob", "customer_id": customer}
    dl = refused(signed(doc(p)))
    assert dl.reason == errors.INVALID_FIELD and "customer_id" in dl.error
    assert dl.value is None or len(dl.value) <= 200


@pytest.mark.parametrize("key", ["*", "jt\r\nFLUSHALL", "x" * 10_000])
def test_a_breaker_key_must_be_a_configured_carrier(key):
    dl = refused(signed(doc({**doc()["payload"], "key": key})))
    assert dl.reason in (errors.UNKNOWN_BREAKER_KEY, errors.INVALID_FIELD)


@pytest.mark.parametrize("operator", ["a" * 65, "alice\r\nFLUSHALL", "bob\x1b[31m", "x" * 600_000])
def test_the_operator_name_is_bounded_and_printable(operator):
    dl = refused(signed(doc({**doc()["payload"], "operator": operator})))
    assert dl.reason == errors.INVALID_FIELD and "operator" in dl.error


def test_an_implausible_command_id_is_a_bad_envelope():
    dl = refused(signed(doc(event_id="x" * 1000)))
    assert dl.reason == errors.BAD_ENVELOPE and "event_id" in dl.error


def test_plausible_names_pass():
    p = {"command": "hold_release", "operator": "Zhang Wei 张伟", "customer_id": "C-42_x.y@z"}
    c = parser().parse(signed(doc(p)))
    assert isinstance(c, Command) and (c.operator, c.key) == ("Zhang Wei 张伟", "C-42_x.y@z")


# ------------------------------------------------------------------ the recorded decision
def test_the_decision_on_the_breakers_topic_carries_signer_operator_and_reason():
    c = parser().parse(signed(doc({**doc()["payload"], "reason": "upstream fixed"})))
    [d] = HealthState(SETTINGS).apply(_health_batch(c))
    body = orjson.loads(encode_decision(d)[3])
    assert body["reason"] == "operator alice (key ops1): upstream fixed"
    assert body["figures"]["signer"] == "ops1" and body["figures"]["operator"] == "alice"
    # the Redis view's breaker document keeps the reason, so the signer too
    [(_, key, view_doc)] = decisions_update([d]).breakers
    assert key == "jt" and orjson.loads(view_doc)["reason"] == body["reason"]


# ------------------------------------------------------------------ the CLI's side
def test_the_cli_signs_with_the_key_from_the_environment():
    one = settings_with(ops2=OPS2)
    c, value = prepare(one, hold_release("C7", "bob", None))
    assert c.signer == "ops2" and orjson.loads(value)["signature"]["key_id"] == "ops2"
    assert parser(one).parse(value) == c


def test_the_cli_without_a_key_says_which_variable_to_set():
    with pytest.raises(CommandRefused, match="ORDERGUARD__CONTROL__KEYS__<NAME>"):
        prepare(settings_with(), breaker_force("carrier", "jt", "OPEN", "alice", None))


def test_the_cli_with_several_keys_needs_the_signing_key_named():
    with pytest.raises(CommandRefused, match="ORDERGUARD__CONTROL__SIGNING_KEY"):
        prepare(SETTINGS, breaker_force("carrier", "jt", "OPEN", "alice", None))
    chosen = settings_with("ops2", ops1=OPS1, ops2=OPS2)
    c, _ = prepare(chosen, breaker_force("carrier", "jt", "OPEN", "alice", None))
    assert c.signer == "ops2"
    with pytest.raises(ConfigError, match=r"control\.signing_key: no key 'ops3'"):
        settings_with("ops3", ops1=OPS1)


def test_the_cli_refuses_an_implausible_customer_before_sending():
    one = settings_with(ops1=OPS1)
    with pytest.raises(CommandRefused, match="invalid_field"):
        prepare(one, hold_release("*", "bob", None))


# ------------------------------------------------------------------ configuration
def test_keys_come_from_the_environment_only_and_are_never_shown(tmp_path):
    cfg = tmp_path / "og.yaml"
    cfg.write_text("control:\n  keys:\n    ops1: " + OPS1 + "\n")
    with pytest.raises(ConfigError, match="ORDERGUARD__CONTROL__KEYS__OPS1") as e:
        load_settings(cfg)
    assert OPS1 not in str(e.value)
    assert OPS1 not in repr(SETTINGS) and OPS1 not in str(SETTINGS.control)


@pytest.mark.parametrize("secret", ["", "   ", "short"])
def test_a_blank_or_short_key_is_refused_at_start(secret):
    with pytest.raises(ConfigError, match=r"control\.keys\.weak") as e:
        settings_with(weak=secret)
    assert "ORDERGUARD__CONTROL__KEYS__WEAK" in str(e.value)
