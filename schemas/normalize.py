"""Envelope bytes to an Event or a DeadLetter: the pipeline's input contract.

`Normalizer` is built once from Settings: paths become tuples, each status map a
dict from raw value to a precomputed `_Entry` (claim, refund claim, signal,
outcome, refinements), so that one message costs a JSON parse and a handful of
dict lookups: no regex compiles, no pydantic, few allocations. It never raises:
every way input can be bad is a DeadLetter with a reason from `schemas.errors`,
and a bug becomes one too (`internal_error`) rather than a crashed pipeline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import sys
from collections.abc import Callable
from typing import Any, NamedTuple, get_args

import orjson

from schemas import errors
from schemas.config import FieldPaths, Settings, SourceSpec, StatusField, Stream
from schemas.event import DeadLetter, Event, Telemetry
from schemas.ids import IdRules
from schemas.limits import clip, over, too_large
from schemas.statuses import SHIPPED_BAND, conditional
from schemas.timeparse import (
    TimeParseError,
    implausible_received,
    parse_rfc3339,
    parser_for,
)

__all__ = ["Normalizer"]

_MISSING: Any = object()  # a path that does not resolve (null resolves to None)
_STREAMS = frozenset(get_args(Stream))
_VALUE_MAX = 200  # a dead letter's `value` is a pointer into `raw`, not a copy of it
_KEYS_MAX = 4096  # distinct payload shapes whose key tuples are shared
_DRIFT = ("tracking_no",)

_EVENT_FIELDS = (
    *("stream", "source", "kind", "event_id", "received_ms", "event_ms", "event_time_raw"),
    *("zone", "order_id", "refund_id", "tracking_no", "tracking_valid", "carrier", "channel"),
    *("customer_id", "claims", "raw_status", "signal", "outcome", "drift_fields", "keys"),
    *("telemetry", "seq"),
)
if tuple(f.name for f in dataclasses.fields(Event))[: len(_EVENT_FIELDS)] != _EVENT_FIELDS:
    raise ImportError(
        "schemas.event.Event's leading fields changed; Normalizer builds Events positionally "
        f"in this order: {_EVENT_FIELDS}"
    )

Path = str | tuple[str | int, ...]
Paths = tuple[tuple[str, Path], ...]  # (the dotted text, for messages; the compiled path)


class _Bad(Exception):
    """Raised inside the normalizer only; becomes a DeadLetter with the context known."""

    def __init__(self, reason: str, error: str, value: object = _MISSING) -> None:
        self.reason = reason
        self.error = error
        self.value = value


# ---------------------------------------------------------------- compiled configuration
class _Refine(NamedTuple):
    path: Path
    search: Callable[[str], object]
    claim: str | None
    refund_claim: str | None


class _Entry(NamedTuple):
    """What one raw status value means, worked out at start-up."""

    claim: str | None
    refund_claim: str | None  # the claim when the id is a refund order's
    signal: str | None
    outcome: str | None
    envelope_time: bool  # timed by received_at (WeChat Pay REFUND)
    refine: tuple[_Refine, ...]


class _Field(NamedTuple):
    label: str
    path: Path
    entries: dict[str, _Entry]
    present: _Entry | None  # a flag field: any non-null value means this entry
    optional: bool


class _TelemetryPaths(NamedTuple):
    carrier: Path
    operation: Path
    latency_ms: Path
    ok: Path
    error: Path


class _Source(NamedTuple):
    name: str
    hasher: Any  # blake2b-64 seeded with the source name; copied per event (cheaper than new)
    stream: str
    kind: str
    channel: str | None
    carrier: str | None
    zone: str
    parse_time: Callable[[object], int]
    order_id: Paths
    tracking_no: Paths
    carrier_paths: Paths
    customer_id: Paths
    channel_paths: Paths
    event_time: Paths
    event_id: Paths
    fields: tuple[_Field, ...]
    multi: bool  # several status fields: raw_status is "path=value,..."
    telemetry: _TelemetryPaths | None


_INT = re.compile(r"-?[0-9]+")


def _compile_path(path: str) -> Path:
    """`fulfillments.-1.tracking_number` -> ("fulfillments", -1, "tracking_number")."""
    parts = path.split(".")
    if len(parts) == 1:
        return path
    return tuple(int(p) if _INT.fullmatch(p) else sys.intern(p) for p in parts)


def _paths(paths: list[str]) -> Paths:
    return tuple((p, _compile_path(p)) for p in paths)


def _get(obj: dict[str, Any], path: Path) -> Any:
    """The value at a path; `_MISSING` when a segment does not resolve."""
    if type(path) is str:
        return obj.get(path, _MISSING)
    cur: Any = obj
    for seg in path:
        if type(cur) is dict:
            cur = cur.get(seg if type(seg) is str else str(seg), _MISSING)
            if cur is _MISSING:
                return cur
        elif type(cur) is list and type(seg) is int:
            if not -len(cur) <= seg < len(cur):
                return _MISSING
            cur = cur[seg]
        else:
            return _MISSING
    return cur


def _text(value: object) -> str:
    """A value as text for messages and raw_status: strings as they are, else JSON."""
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)


def _shown(value: object) -> str | None:
    if value is _MISSING:
        return None
    text = _text(value)
    return text if len(text) <= _VALUE_MAX else text[: _VALUE_MAX - 3] + "..."


def _shipped(claim: str) -> bool:
    """A claim (either branch of "A/B") that implies a tracking number exists."""
    return any(part in SHIPPED_BAND for part in conditional(claim) or (claim,))


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


class Normalizer:
    """Turns envelopes into Events, per the source registry of one configuration."""

    def __init__(self, settings: Settings) -> None:
        self._ids = IdRules.from_settings(settings)
        self._limits = settings.limits
        self._id_max = settings.limits.id
        self._refund_order = dict(settings.refund_order)
        self._refund_default = settings.refund_order_default
        self._sources = {name: self._compile(name, spec) for name, spec in settings.sources.items()}
        self._keys: dict[tuple[str, ...], tuple[str, ...]] = {}

    # ------------------------------------------------------------ start-up
    def _refund_claim(self, claim: str | None) -> str | None:
        """What a refund order's claim means for its original order (config refund_order)."""
        if claim is None:
            return None
        parts = conditional(claim) or (claim,)
        mapped = [self._refund_order.get(p, self._refund_default) for p in parts]
        if len(set(mapped)) == 1:
            return sys.intern(mapped[0])
        return sys.intern("/".join(mapped))

    def _entry(self, spec: SourceSpec, f: StatusField, raw: str, claim: str | None) -> _Entry:
        refine = tuple(
            _Refine(
                _compile_path(r.path),
                re.compile(r.match, re.IGNORECASE).search,
                r.status and sys.intern(r.status),
                self._refund_claim(r.status),
            )
            for r in f.refine
            if not r.when or raw in r.when
        )
        return _Entry(
            claim and sys.intern(claim),
            self._refund_claim(claim),
            spec.signals.get(raw),
            spec.outcomes.get(raw),
            raw in spec.envelope_time,
            refine,
        )

    def _compile(self, name: str, spec: SourceSpec) -> _Source:
        fields = tuple(
            _Field(
                f.path,
                _compile_path(f.path),
                {sys.intern(raw): self._entry(spec, f, raw, c) for raw, c in f.map.items()},
                self._entry(spec, f, "", f.present) if f.present is not None else None,
                f.optional,
            )
            for f in spec.statuses
        )
        fp: FieldPaths = spec.fields
        tel = spec.telemetry
        return _Source(
            name=name,
            hasher=hashlib.blake2b(name.encode(), digest_size=8),
            stream=spec.stream,
            kind=spec.kind,
            channel=spec.channel,
            carrier=spec.carrier,
            zone=spec.zone,
            parse_time=parser_for(spec.time_format, spec.zone),
            order_id=_paths(fp.order_id),
            tracking_no=_paths(fp.tracking_no),
            carrier_paths=_paths(fp.carrier),
            customer_id=_paths(fp.customer_id),
            channel_paths=_paths(fp.channel),
            event_time=_paths(fp.event_time),
            event_id=_paths(fp.event_id),
            fields=fields,
            multi=len(fields) > 1,
            telemetry=None
            if tel is None
            else _TelemetryPaths(
                *(_compile_path(getattr(tel, k)) for k in _TelemetryPaths._fields)
            ),
        )

    # ------------------------------------------------------------ per event
    def normalize(
        self,
        raw: bytes,
        *,
        origin: dict[str, object],
        stream: str | None = None,
        seq: int = 0,
        fallback_received_ms: int | None = None,
        not_after: int | None = None,
    ) -> Event | DeadLetter:
        """One envelope to an Event, or a DeadLetter saying why not. Never raises.

        `stream` is the stream of the topic the bytes came from (None for replay
        files, whose envelopes name it); `fallback_received_ms` times envelopes
        without `received_at` (the Kafka timestamp); `origin` travels into dead letters.
        `not_after`: the latest plausible `received_at` (`errors.IMPLAUSIBLE_TIME`).
        """
        lim = self._limits
        if len(raw) > lim.input_record:  # before parsing: never held, parsed or copied whole
            known = stream if stream in _STREAMS else None
            return too_large(raw, lim.input_record, lim.dead_letter_raw, origin, known, seq)
        try:
            return self._normalize(raw, origin, stream, seq, fallback_received_ms, not_after)
        except Exception as e:  # a bug, not bad input: still never crash the pipeline
            return DeadLetter(
                reason=errors.INTERNAL_ERROR,
                error=f"normalizer bug: {type(e).__name__}: {e}",
                raw=raw,
                origin=origin,
                stream=stream if isinstance(stream, str) and stream in _STREAMS else None,
                seq=seq,
            )

    def _normalize(
        self,
        raw: bytes,
        origin: dict[str, object],
        stream: str | None,
        seq: int,
        fallback_received_ms: int | None,
        not_after: int | None,
    ) -> Event | DeadLetter:
        known_stream = stream if stream in _STREAMS else None
        source: str | None = None
        received_ms = fallback_received_ms
        try:
            try:
                env = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise _Bad(errors.NOT_JSON, f"not JSON: {e}") from None
            if type(env) is not dict:
                raise _Bad(errors.NOT_OBJECT, f"JSON {_kind_of(env)}, not an object", env)
            env_stream = env.get("stream")
            if known_stream is None and type(env_stream) is str and env_stream in _STREAMS:
                known_stream = env_stream  # for dead letters from here on
            name = env.get("source", _MISSING)
            if type(name) is not str:
                raise _Bad(errors.BAD_ENVELOPE, "envelope `source` missing or not a string", name)
            src = self._sources.get(name)
            if src is None:
                raise _Bad(errors.UNKNOWN_SOURCE, f"unknown source {name!r}", name)
            source = name
            if env_stream is not None:
                if type(env_stream) is not str:
                    raise _Bad(errors.BAD_ENVELOPE, "envelope `stream` not a string", env_stream)
                if stream is not None and env_stream != stream:
                    raise _Bad(
                        errors.STREAM_MISMATCH,
                        f"envelope says stream {env_stream!r}, but it came from {stream!r}",
                        env_stream,
                    )
            elif stream is None:
                raise _Bad(errors.BAD_ENVELOPE, "no `stream`: required outside a topic")
            else:
                env_stream = stream
            if env_stream != src.stream:
                raise _Bad(
                    errors.STREAM_MISMATCH,
                    f"source {name!r} belongs on stream {src.stream!r}, not {env_stream!r}",
                    env_stream,
                )
            received_at = env.get("received_at")
            if received_at is not None:
                try:
                    received_ms = parse_rfc3339(received_at)
                except TimeParseError as e:
                    raise _Bad(
                        errors.UNPARSEABLE_TIME, f"envelope received_at: {e}", received_at
                    ) from None
            elif received_ms is None:
                raise _Bad(errors.BAD_ENVELOPE, "envelope `received_at` missing")
            ahead = implausible_received(received_ms, not_after)
            if ahead is not None:
                received_ms = None  # the dead letter moves no clock either
                raise _Bad(errors.IMPLAUSIBLE_TIME, ahead, received_at)
            payload = env.get("payload", _MISSING)
            if type(payload) is not dict:
                raise _Bad(
                    errors.BAD_ENVELOPE, "envelope `payload` missing or not an object", payload
                )
            event_id = env.get("event_id")
            if event_id is not None and type(event_id) is not str:
                if type(event_id) is not int:
                    raise _Bad(errors.BAD_ENVELOPE, "envelope `event_id` not a string", event_id)
                event_id = str(event_id)
            if event_id is not None and over(event_id, self._id_max):
                raise _Bad(errors.BAD_ENVELOPE, self._too_long("envelope `event_id`"), event_id)
            return self._event(src, payload, raw, event_id or None, received_ms, seq)
        except _Bad as bad:
            return DeadLetter(
                reason=bad.reason,
                error=bad.error if source is None else f"{source}: {bad.error}",
                raw=raw,
                origin=origin,
                stream=known_stream,
                source=source,
                value=_shown(bad.value),
                received_ms=received_ms,
                seq=seq,
            )

    def _event(
        self,
        src: _Source,
        payload: dict[str, Any],
        raw: bytes,
        event_id: str | None,
        received_ms: int,
        seq: int,
    ) -> Event:
        if src.telemetry is not None:
            telemetry = self._telemetry(src.telemetry, payload)
            event_ms, time_raw, zone = self._event_time(src, payload, received_ms)
            return Event(
                stream=src.stream,
                source=src.name,
                kind=src.kind,
                event_id=event_id or self._event_id(src, payload, raw),
                received_ms=received_ms,
                event_ms=event_ms,
                event_time_raw=time_raw,
                zone=zone,
                carrier=telemetry.carrier,
                keys=self._keys_of(payload),
                telemetry=telemetry,
                seq=seq,
            )

        # ids: an order id, or at least a tracking number to find the order by
        order_id = refund_id = channel = None
        for label, path in src.order_id:
            v = payload.get(path, _MISSING) if type(path) is str else _get(payload, path)
            if v is None or v is _MISSING:
                continue
            if type(v) is not str:
                raise _Bad(errors.INVALID_ORDER_ID, f"order id {label} is {_kind_of(v)}", v)
            if over(v, self._id_max):
                raise _Bad(errors.INVALID_ORDER_ID, self._too_long(f"order id {label}"), v)
            ref = self._ids.parse_order_id(v)
            if ref is None:
                if not v.strip():
                    continue  # blank is absent
                raise _Bad(
                    errors.INVALID_ORDER_ID,
                    f"order id {label}={v!r} is neither a global id (channel code, yyyymmdd, "
                    "sequence; case-sensitive) nor REF-<global id>-<nn>",
                    v,
                )
            order_id, refund_id, channel = ref
            break
        tracking, tracking_seen = self._text_field(payload, src.tracking_no, "tracking number")
        if order_id is None and tracking is None:
            raise _Bad(errors.MISSING_ORDER_ID, "neither an order id nor a tracking number")

        # statuses: one claim per field that claims something
        refund = refund_id is not None
        claims: list[str] = []
        parts: list[str] = []
        raw_status = ""
        signal = outcome = None
        envelope_time = False
        for f in src.fields:
            path = f.path
            v = payload.get(path, _MISSING) if type(path) is str else _get(payload, path)
            if v is None or v is _MISSING:
                if f.optional:
                    continue
                raise _Bad(
                    errors.MISSING_STATUS,
                    f"status field {f.label} is {'null' if v is None else 'absent'}",
                )
            rv = v if type(v) is str else _text(v)
            if f.present is not None:
                if rv == "":
                    continue
                e = f.present
            else:
                e = f.entries.get(rv) or f.entries.get(rv.strip())
                if e is None:
                    raise _Bad(errors.UNMAPPED_STATUS, f"{f.label}={rv!r} is not in its map", rv)
            claim = e.refund_claim if refund else e.claim
            for r in e.refine:
                t = _get(payload, r.path)
                if t is _MISSING or t is None:
                    continue
                if r.search(t if type(t) is str else _text(t)) is not None:  # true -> "true"
                    claim = r.refund_claim if refund else r.claim
                    break
            if claim is not None:
                claims.append(claim)
            if signal is None:
                signal = e.signal
            if outcome is None:
                outcome = e.outcome
            envelope_time = envelope_time or e.envelope_time
            if src.multi:
                parts.append(f"{f.label}={rv}")
            else:
                raw_status = rv

        if envelope_time:
            event_ms, time_raw, zone = received_ms, None, None
        else:
            event_ms, time_raw, zone = self._event_time(src, payload, received_ms)

        # who and where: carrier, channel, customer
        carrier = src.carrier
        if carrier is None:
            name, _ = self._text_field(payload, src.carrier_paths, "carrier")
            carrier = name and self._ids.resolve_carrier(name)
        tracking_valid = False
        if tracking is not None:
            carrier, tracking_valid = self._ids.check_tracking(tracking, carrier)
        if channel is None:
            channel = src.channel
            if channel is None:
                name, _ = self._text_field(payload, src.channel_paths, "channel")
                channel = name and self._ids.resolve_channel(name)
        customer_id = None
        if src.customer_id:
            customer_id, _ = self._text_field(payload, src.customer_id, "customer id")

        drift: tuple[str, ...] = ()
        if not tracking_seen and src.tracking_no and any(map(_shipped, claims)):
            drift = _DRIFT

        return Event(  # positional: a third of the cost of keywords (see _EVENT_FIELDS)
            src.stream,
            src.name,
            src.kind,
            event_id or self._event_id(src, payload, raw),
            received_ms,
            event_ms,
            time_raw,
            zone,
            order_id,
            refund_id,
            tracking,
            tracking_valid,
            carrier,
            channel,
            customer_id,
            tuple(claims),
            ",".join(parts) if src.multi else raw_status,
            signal,
            outcome,
            drift,
            self._keys_of(payload),
            None,
            seq,
        )

    # ------------------------------------------------------------ helpers (per event)
    def _too_long(self, what: str) -> str:
        return f"{what} is longer than limits.id ({self._id_max} bytes)"

    def _text_field(
        self, payload: dict[str, Any], paths: Paths, what: str
    ) -> tuple[str | None, bool]:
        """The first non-blank string (or integer) at the paths, and whether any path exists.

        An id longer than `limits.id` is bad input: it would become a state key, a Redis
        key or document, a label.
        """
        seen = False
        for label, path in paths:
            v = payload.get(path, _MISSING) if type(path) is str else _get(payload, path)
            if v is _MISSING:
                continue
            seen = True
            if type(v) is str:
                v = v.strip()
                if over(v, self._id_max):
                    raise _Bad(errors.INVALID_FIELD, self._too_long(f"{what} {label}"), v)
                if v:
                    return v, True
            elif type(v) is int:
                return str(v), True
            elif v is not None:
                raise _Bad(errors.INVALID_FIELD, f"{what} {label} is {_kind_of(v)}", v)
        return None, seen

    @staticmethod
    def _event_time(
        src: _Source, payload: dict[str, Any], received_ms: int
    ) -> tuple[int, str | None, str | None]:
        """The first present event-time path, parsed; none present: the ingestion time."""
        for label, path in src.event_time:
            v = payload.get(path, _MISSING) if type(path) is str else _get(payload, path)
            if v is None or v is _MISSING or v == "":
                continue
            try:
                return src.parse_time(v), _text(v), src.zone
            except TimeParseError as e:
                raise _Bad(errors.UNPARSEABLE_TIME, f"{label}: {e}", v) from None
        return received_ms, None, None

    def _telemetry(self, paths: _TelemetryPaths, payload: dict[str, Any]) -> Telemetry:
        def bad(what: str, v: object) -> _Bad:
            return _Bad(errors.INVALID_TELEMETRY, f"telemetry {what}, got {_kind_of(v)}", v)

        name = _get(payload, paths.carrier)
        if type(name) is not str:
            raise bad("carrier must be a string", name)
        carrier = self._ids.resolve_carrier(name)
        if carrier is None:
            raise _Bad(errors.INVALID_TELEMETRY, f"telemetry for unknown carrier {name!r}", name)
        operation = _get(payload, paths.operation)
        if type(operation) is not str:
            raise bad("operation must be a string", operation)
        operation = clip(operation, self._id_max)  # free text, but it keys breaker figures
        latency = _get(payload, paths.latency_ms)
        if type(latency) not in (int, float) or not math.isfinite(latency) or latency < 0:
            raise bad("latency_ms must be a non-negative number", latency)
        ok = _get(payload, paths.ok)
        if type(ok) is not bool:
            raise bad("ok must be a boolean", ok)
        error = _get(payload, paths.error)
        if error is _MISSING:
            error = None
        elif error is not None and type(error) is not str:
            raise bad("error must be a string or null", error)
        else:
            error = error and clip(error, self._limits.free_text)
        return Telemetry(carrier, operation, float(latency), ok, error)

    def _event_id(self, src: _Source, payload: dict[str, Any], raw: bytes) -> str:
        """The provider's own id if configured, else a hash of source + canonical payload."""
        for label, path in src.event_id:
            v = _get(payload, path)
            if type(v) is str and v:
                if over(v, self._id_max):
                    raise _Bad(errors.INVALID_FIELD, self._too_long(f"event id {label}"), v)
                return v
            if type(v) is int:
                return str(v)
        try:
            body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # nested deeper than orjson writes: the bytes identify it
            body = bytes(raw)
        h = src.hasher.copy()
        h.update(body)
        return "h:" + h.hexdigest()

    def _keys_of(self, payload: dict[str, Any]) -> tuple[str, ...]:
        """Sorted top-level keys; identical shapes share one tuple (bounded)."""
        shape = tuple(payload)
        keys = self._keys.get(shape)
        if keys is None:
            keys = tuple(sorted(shape))
            if len(self._keys) < _KEYS_MAX:
                self._keys[shape] = keys
        return keys
