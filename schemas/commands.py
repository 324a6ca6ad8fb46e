"""Operator commands on the control topic: an envelope to a `Command` or a `DeadLetter`.

A command is an envelope like the input streams' (`stream: "control"`,
`source: "operator"`, `received_at`, `event_id`, `payload`), read by the same Kafka
source and sequenced by `received_at` with the rest, so its offset is in the
recovery snapshots and a recording with commands replays to the same outputs.
The CLI (`dataflows.operator`) parses the envelope it built here before producing
it: a command the pipeline would refuse is refused at the prompt instead.

Payloads: `{"command": "hold_release", "operator", "reason"?, "customer_id"}` or
`{"command": "breaker_force", "operator", "reason"?, "kind", "key", "state"}`.
Parsing never raises: each way a command can be bad is a dead letter with a
reason from `schemas.errors.COMMAND_REASONS`.

Signed: the envelope carries `"signature": {"key_id": NAME, "hmac": HEX}`, the
HMAC-SHA256, by the key `control.keys.NAME`, of `canonical(envelope)`: the envelope
without `signature`, as compact orjson with keys sorted at every level (UTF-8). Every
other field is covered, the id and `received_at` too, so neither the target nor the
time nor the id can be changed. A command that is unsigned, signed by no configured
key or altered is dead-lettered `unauthenticated_command`; one older than
`control.tolerance` on the ingestion clock, or whose id was already applied, is refused
the same way by the stateful step that applies it (`state.command_ids`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas import errors
from schemas.config import Settings
from schemas.event import DeadLetter
from schemas.timeparse import TimeParseError, implausible_received, parse_rfc3339

CONTROL = "control"
"""The control stream's name: its Kafka partitions are `control:<n>`."""
OPERATOR = "operator"
"""The one source of the control stream."""
HOLD_RELEASE, BREAKER_FORCE = "hold_release", "breaker_force"
AUTO = "AUTO"
"""Not a state: gives a forced channel or carrier breaker back to its rules."""

STATES: dict[str, tuple[str, ...]] = {
    "channel": ("OPEN", "CLOSED", "HALF_OPEN", AUTO),
    "carrier": ("OPEN", "CLOSED", "HALF_OPEN", AUTO),
    "customer": ("HOLD", "RELEASED"),
}
"""The states an operator may force, per breaker kind."""

MAX_REASON = 500
"""Characters of free text an operator's reason may have (it travels in every decision)."""
MAX_OPERATOR = 64
"""Characters of an operator's name (printable): it travels in every decision."""
MAX_ID = 128
"""Characters of a customer id or command id: printable, no blanks, no glob characters
(`*?[]`), so one never becomes a pattern, a Redis command or a megabyte key."""
_GLOB = frozenset("*?[]")
SIGNATURE = "signature"

_SAYS = {AUTO: "back to automatic", "HOLD": "hold", "RELEASED": "released"}


@dataclass(slots=True)
class Command:
    """One valid operator command: force breaker `kind`/`key` into `state`."""

    command_id: str  # the envelope's event_id
    breaker: str  # channel | carrier | customer
    key: str  # channel or carrier name, or the customer id
    state: str  # one of STATES[breaker]
    operator: str
    reason: str | None
    received_ms: int
    seq: int = 0  # position in the input, for deterministic ordering
    signer: str = ""  # the name of the control key that signed it
    raw: bytes = b""  # the envelope and where it came from: for a replay's dead letter
    origin: dict[str, object] = field(default_factory=dict)

    def explanation(self) -> str:
        """The decision's reason: `operator <name> (key <signer>): <reason>` (what was
        done, if no reason): the name is the operator's word, the key is verified."""
        said = self.reason or _SAYS.get(self.state, f"forced {self.state}")
        return f"operator {self.operator} (key {self.signer}): {said}"

    def figures(self, forced: bool) -> dict[str, object]:
        """What every decision taken on this command carries in its figures."""
        return {
            "operator": self.operator,
            "signer": self.signer,
            "command_id": self.command_id,
            "forced": forced,
        }

    def refused(self, why: str) -> DeadLetter:
        """The dead letter of this signed command refused as stale or replayed (`why`)."""
        return DeadLetter(
            reason=errors.UNAUTHENTICATED_COMMAND,
            error=f"command {self.command_id} {why}",
            raw=self.raw,
            origin=dict(self.origin),
            stream=CONTROL,
            source=OPERATOR,
            value=self.command_id,
            received_ms=self.received_ms,
            seq=self.seq,
        )


def canonical(envelope: dict[str, Any]) -> bytes:
    """The bytes a command's signature covers (see the module's docstring)."""
    unsigned = {k: v for k, v in envelope.items() if k != SIGNATURE}
    return orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)


def _hmac(secret: bytes, envelope: dict[str, Any]) -> str:
    return hmac.new(secret, canonical(envelope), hashlib.sha256).hexdigest()


def sign(envelope: dict[str, Any], key_id: str, secret: bytes) -> dict[str, Any]:
    """The envelope with its signature by key `key_id` (the operator tool's side)."""
    return {**envelope, SIGNATURE: {"key_id": key_id, "hmac": _hmac(secret, envelope)}}


class _Bad(Exception):
    def __init__(self, reason: str, error: str, value: object = None) -> None:
        self.reason, self.error, self.value = reason, error, value


def is_control(raw: bytes) -> bool:
    """Whether a line without a known stream (a replay file's) is a control envelope.

    The substring test first: it keeps the JSON parse off every ordinary line.
    """
    if b'"control"' not in raw:
        return False
    try:
        env = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return type(env) is dict and env.get("stream") == CONTROL


def _text(payload: dict[str, Any], name: str, reason: str) -> str:
    """A required non-empty string field of the payload, stripped."""
    value = payload.get(name)
    if type(value) is not str or not value.strip():
        what = "missing" if value is None else "not a non-empty string"
        raise _Bad(reason, f"payload `{name}` {what}", value)
    return value.strip()


def _plausible_id(value: str, name: str, reason: str = errors.INVALID_FIELD) -> str:
    """An id that is safe as a key, a label and a log word (MAX_ID), else `reason`."""
    if (
        len(value) > MAX_ID
        or not value.isprintable()
        or any(c.isspace() or c in _GLOB for c in value)
    ):
        raise _Bad(
            reason,
            f"`{name}` is not a plausible id: at most {MAX_ID} printable characters, "
            "no blanks, none of *?[]",
            value,
        )
    return value


class CommandParser:
    """Validates commands against one configuration (its channels and carriers)."""

    def __init__(self, settings: Settings) -> None:
        self._keys: dict[str, frozenset[str]] = {
            "channel": frozenset(settings.channels),
            "carrier": frozenset(settings.carriers),
        }
        keys = settings.control.keys
        self._secrets = {k: v.get_secret_value().encode() for k, v in keys.items()}

    def parse(
        self,
        raw: bytes,
        origin: dict[str, object] | None = None,
        seq: int = 0,
        stream: str | None = CONTROL,
        not_after: int | None = None,
    ) -> Command | DeadLetter:
        """One control envelope to a Command, or a DeadLetter saying why not. Never raises.

        `stream`: the stream of the topic the bytes came from (None for replay files,
        whose envelopes name it). `not_after`: the latest plausible `received_at`.
        """
        received_ms: int | None = None
        try:
            env = self._envelope(raw, stream)
            at = self._received(env)
            ahead = implausible_received(at, not_after)
            if ahead is not None:  # a laptop's clock a day ahead must move no breaker
                raise _Bad(errors.IMPLAUSIBLE_TIME, ahead, env["received_at"])
            received_ms = at
            signer = self._verify(env)
            command = self._command(env, received_ms, seq)
            command.signer, command.raw, command.origin = signer, raw, dict(origin or {})
            return command
        except _Bad as e:
            bad = e
        except Exception as e:  # a bug, not bad input: still never crash the pipeline
            bad = _Bad(errors.INTERNAL_ERROR, f"command parser bug: {type(e).__name__}: {e}")
        value = None if bad.value is None else str(bad.value)[:200]
        return DeadLetter(
            reason=bad.reason,
            error=bad.error,
            raw=raw,
            origin=dict(origin or {}),
            stream=CONTROL,
            source=OPERATOR,
            value=value,
            received_ms=received_ms,
            seq=seq,
        )

    def _envelope(self, raw: bytes, stream: str | None) -> dict[str, Any]:
        try:
            env = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise _Bad(errors.NOT_JSON, f"not JSON: {e}") from None
        if type(env) is not dict:
            raise _Bad(errors.NOT_OBJECT, "the command is JSON but not an object")
        env_stream = env.get("stream")
        if env_stream is None and stream is None:
            raise _Bad(errors.BAD_ENVELOPE, "no `stream`: required outside a topic")
        if env_stream is not None and env_stream != CONTROL:
            raise _Bad(
                errors.STREAM_MISMATCH,
                f"envelope says stream {env_stream!r}, but it came from {CONTROL!r}",
                env_stream,
            )
        source = env.get("source")
        if source != OPERATOR:
            raise _Bad(
                errors.UNKNOWN_SOURCE, f"commands come from source {OPERATOR!r}, not {source!r}"
            )
        return env

    def _received(self, env: dict[str, Any]) -> int:
        value = env.get("received_at")
        if type(value) is not str:
            raise _Bad(errors.BAD_ENVELOPE, "envelope `received_at` missing or not a string")
        try:
            return parse_rfc3339(value)
        except TimeParseError as e:
            raise _Bad(errors.UNPARSEABLE_TIME, f"envelope received_at: {e}", value) from None

    def _verify(self, env: dict[str, Any]) -> str:
        """The name of the key that signed the envelope; checked before anything it says."""
        bad = errors.UNAUTHENTICATED_COMMAND
        signature = env.get(SIGNATURE)
        if signature is None:
            raise _Bad(bad, "unsigned: no `signature` (commands are sent by `orderguard`)")
        key_id = signature.get("key_id") if type(signature) is dict else None
        given = signature.get("hmac") if type(signature) is dict else None
        if type(key_id) is not str or type(given) is not str:
            raise _Bad(bad, "malformed `signature`: expected {key_id, hmac} strings")
        secret = self._secrets.get(key_id)
        if secret is None:
            raise _Bad(bad, f"signed with unknown key {key_id[:MAX_ID]!r}", key_id)
        expected = _hmac(secret, env).encode("ascii")
        if not hmac.compare_digest(expected, given.lower().encode("utf-8", "replace")):
            raise _Bad(bad, f"bad signature for key {key_id!r}: forged or altered", key_id)
        return key_id

    def _command(self, env: dict[str, Any], received_ms: int, seq: int) -> Command:
        command_id = env.get("event_id")
        if type(command_id) is not str or not command_id:
            raise _Bad(errors.BAD_ENVELOPE, "envelope `event_id` (the command id) missing")
        _plausible_id(command_id, "event_id", errors.BAD_ENVELOPE)
        payload = env.get("payload")
        if type(payload) is not dict:
            raise _Bad(errors.BAD_ENVELOPE, "envelope `payload` missing or not an object")
        command = payload.get("command")
        if command not in (HOLD_RELEASE, BREAKER_FORCE):
            raise _Bad(
                errors.UNKNOWN_COMMAND,
                f"unknown command {command!r}: expected {HOLD_RELEASE} or {BREAKER_FORCE}",
                command,
            )
        operator = _text(payload, "operator", errors.MISSING_OPERATOR)
        if len(operator) > MAX_OPERATOR or not operator.isprintable():
            raise _Bad(
                errors.INVALID_FIELD,
                f"payload `operator` not a name of at most {MAX_OPERATOR} printable characters",
                operator,
            )
        reason = payload.get("reason")
        if reason is not None and (type(reason) is not str or len(reason) > MAX_REASON):
            raise _Bad(
                errors.INVALID_FIELD, f"payload `reason` not a string of at most {MAX_REASON}"
            )
        reason = (reason.strip() or None) if reason is not None else None
        if command == HOLD_RELEASE:
            customer = _plausible_id(
                _text(payload, "customer_id", errors.INVALID_FIELD), "customer_id"
            )
            return Command(
                command_id, "customer", customer, "RELEASED", operator, reason, received_ms, seq
            )
        kind = payload.get("kind")
        if kind not in STATES:
            raise _Bad(
                errors.UNKNOWN_BREAKER,
                f"unknown breaker kind {kind!r}: expected {', '.join(STATES)}",
                kind,
            )
        key = _plausible_id(_text(payload, "key", errors.INVALID_FIELD), "key")
        known = self._keys.get(kind)
        if known is not None and key not in known:
            raise _Bad(
                errors.UNKNOWN_BREAKER_KEY,
                f"unknown {kind} {key!r}: the configuration has {', '.join(sorted(known))}",
                key,
            )
        state = payload.get("state")
        if state not in STATES[kind]:
            raise _Bad(
                errors.INVALID_BREAKER_STATE,
                f"a {kind} breaker cannot be forced to {state!r}: "
                f"expected {', '.join(STATES[kind])}",
                state,
            )
        return Command(command_id, kind, key, state, operator, reason, received_ms, seq)
