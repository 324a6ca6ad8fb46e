"""Envelope bytes to an Event or a DeadLetter: the pipeline's input contract.

`Normalizer` is built once from Settings: paths become tuples, each status map a
dict from raw value to a precomputed `_Entry` (claim, refund claim, signal,
outcome, refinements), so that one message costs a JSON parse and a handful of
dict lookups: no regex compiles, no pydantic, few allocations. It never raises:
every way input can be bad is a DeadLetter with a reason from `schemas.errors`,
and a bug becomes one too (`internal_error`) rather than a crashed pipeline.

Per envelope: `decode:` fields are decoded in place, `kinds:` picks the message
kind's compiled source, and a source with `each:` gives a tuple, one Event or
DeadLetter per element, each read through a scope (root, element, ...) that its
`_Bound` paths index. Ids outside the OMS's format become `Event.ref` in the source's
namespace (`identity:`), and `links:` the references an event ties to its order; for a
channel with `canonical_id: channel` the channel's ids are order ids and its global ids
references `oms:<id>` (`_channel_named`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, get_args

import orjson

from schemas import errors
from schemas.config import OMS, FieldPaths, Settings, SourceSpec, StatusField, Stream
from schemas.decode import DecodeError, decode
from schemas.event import DeadLetter, Event, Telemetry
from schemas.ids import IdRules
from schemas.limits import clip, over, too_large
from schemas.paths import bind, each_steps
from schemas.statuses import SHIPPED_BAND, conditional
from schemas.timeparse import (
    TimeParseError,
    implausible_received,
    parse_rfc3339,
    parser_for,
)

__all__ = ["Normalizer", "Result"]

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

Result = Event | DeadLetter | tuple[Event | DeadLetter, ...]
"""One envelope's outcome: a tuple when its payload was split (`each:`), one per element."""


@dataclasses.dataclass(slots=True, frozen=True)
class _Bound:
    """A path of a split source: read `tail` from the scope's element at `level`."""

    level: int  # 0: the payload's root; k: the element of `each`'s k-th [*]
    tail: str | tuple[str | int, ...]


Path = str | tuple[str | int, ...] | _Bound
Paths = tuple[tuple[str, Path], ...]  # (the dotted text, for messages; the compiled path)


class _Bad(Exception):
    """Raised inside the normalizer only; becomes a DeadLetter with the context known."""

    def __init__(self, reason: str, error: str, value: object = _MISSING) -> None:
        self.reason = reason
        self.error = error
        self.value = value


# ---------------------------------------------------------------- compiled configuration
# Slotted classes, not NamedTuples: read per event dozens of times, and a slot read is
# specialized by CPython 3.11 where a NamedTuple field's descriptor is not (about half
# the cost).
@dataclasses.dataclass(slots=True, frozen=True)
class _Refine:
    path: Path
    search: Callable[[str], object]
    claim: str | None
    refund_claim: str | None


@dataclasses.dataclass(slots=True, frozen=True)
class _Entry:
    """What one raw status value means, worked out at start-up."""

    claim: str | None
    refund_claim: str | None  # the claim when the id is a refund order's
    signal: str | None
    outcome: str | None
    envelope_time: bool  # timed by received_at (WeChat Pay REFUND)
    refine: tuple[_Refine, ...]


@dataclasses.dataclass(slots=True, frozen=True)
class _Field:
    label: str
    path: Path
    entries: dict[str, _Entry]
    present: _Entry | None  # a flag field: any non-null value means this entry
    optional: bool


@dataclasses.dataclass(slots=True, frozen=True)
class _TelemetryPaths:
    carrier: Path
    operation: Path
    latency_ms: Path
    ok: Path
    error: Path


@dataclasses.dataclass(slots=True, frozen=True)
class _Source:
    name: str
    hasher: Any  # blake2b-64 seeded with the source name; copied per event (cheaper than new)
    stream: str
    kind: str
    channel: str | None
    carrier: str | None
    zone: str
    zone_from: tuple[Path, dict[str, tuple[str, Callable[[object], int]]]] | None
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
    # identity (config `identity`, `links`)
    namespace: str | None  # of fields.order_id's non-global ids; None: oms (global ids only)
    ref_channel: str | None  # the channel whose namespace that is, if it is one
    own_ids: bool  # that channel names its orders by its own ids (`canonical_id: channel`)
    id_strip: Callable[..., str] | None  # re.sub of the suffix pattern
    id_match: Callable[[str], object] | None
    fallback: bool  # an invalid order id is ignored when a tracking number is there
    links: tuple[tuple[str | None, Paths], ...]  # (namespace, or None: the channel's; paths)
    # one notification, several events (config `decode`, `kinds`, `each`)
    decode: tuple[tuple[str, tuple[str, ...], str], ...]
    kind_by: tuple[str, Path] | None  # (the text, the path)
    kinds: tuple[_Kind, ...] | None
    each: str | None  # the text, for messages
    steps: tuple[Path, ...] | None  # from one level to the next level's list
    element_id: Paths  # event-id paths read from an element (level > 0)
    flat: bool  # none of decode, kinds, each


@dataclasses.dataclass(slots=True, frozen=True)
class _Kind:
    name: str
    values: frozenset[str]
    glob: Callable[[str], object] | None
    present: Path | None
    src: _Source


def _plain(tokens: tuple[str | int, ...]) -> str | tuple[str | int, ...]:
    if len(tokens) == 1 and type(tokens[0]) is str:
        return sys.intern(tokens[0])
    return tuple(sys.intern(t) if type(t) is str else t for t in tokens)


def _compile_path(path: str, each: str | None = None, split: bool = False) -> Path:
    """`fulfillments.-1.tracking_number` -> ("fulfillments", -1, "tracking_number"); in a
    split source, `shipments[*].id` -> _Bound(1, "id") (validated by the config already)."""
    level, tail = bind(path, each)
    if split:
        return _Bound(level, _plain(tail))
    return _plain(tail)


def _paths(paths: list[str], each: str | None = None, split: bool = False) -> Paths:
    return tuple((p, _compile_path(p, each, split)) for p in paths)


def _glob(patterns: list[str]) -> Callable[[str], object] | None:
    """Values with `*` (any run of characters) as one full-match regex; None if none."""
    globs = [p for p in patterns if "*" in p]
    if not globs:
        return None
    alt = "|".join(".*".join(map(re.escape, g.split("*"))) for g in globs)
    return re.compile(f"(?:{alt})\\Z", re.DOTALL).match


def _get(obj: Any, path: Path) -> Any:
    """The value at a path; `_MISSING` when a segment does not resolve."""
    if type(path) is str:
        return obj.get(path, _MISSING)
    if type(path) is _Bound:  # obj is a split event's scope: (root, element, ...)
        obj = obj[path.level]
        path = path.tail
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


def _elements(steps: tuple[Path, ...], root: dict[str, Any]) -> list[tuple[str, Any]] | None:
    """Each element of `each` as (position, scope); None when the first list is absent.

    A scope is (root, element of the first [*], element of the second, ...). An object
    where a list is expected is one element (XML's lone child); a list absent below an
    element makes that element its own one (a shipment without `events`); an element
    that is not an object comes back as itself, for a dead letter naming its position.
    """
    first = _get(root, steps[0])
    if first is _MISSING or first is None:
        return None
    out: list[tuple[str, Any]] = []
    last = len(steps) - 1

    def walk(level: int, scope: tuple[Any, ...], pos: str, value: Any) -> None:
        if value is _MISSING or value is None:
            out.append((pos, scope + (scope[-1],) * (last + 1 - level)))
            return
        items = value if type(value) is list else [value]
        for i, el in enumerate(items):
            p = f"{pos}.{i}" if pos else str(i)
            if type(el) is not dict:
                out.append((p, el))
            elif level == last:
                out.append((p, (*scope, el)))
            else:
                walk(level + 1, (*scope, el), p, _get(el, steps[level + 1]))

    walk(0, (root,), "", first)
    return out


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


def _untimed(value: object) -> int:
    """The time parser of a source whose kinds each name their `time_format` (never called)."""
    raise TimeParseError("no time_format")


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
        self._id_chars = settings.limits.id // 4  # no longer string can exceed it (`over`)
        self._named_channels = self._ids.channel_named
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
                _compile_path(r.path, spec.each, spec.each is not None),
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
        each = spec.each
        split = each is not None

        def paths(ps: list[str]) -> Paths:
            return _paths(ps, each, split)

        fields = tuple(
            _Field(
                f.path,
                _compile_path(f.path, each, split),
                {sys.intern(raw): self._entry(spec, f, raw, c) for raw, c in f.map.items()},
                self._entry(spec, f, "", f.present) if f.present is not None else None,
                f.optional,
            )
            for f in spec.statuses
        )
        fp: FieldPaths = spec.fields
        tel = spec.telemetry
        ident = spec.identity
        fallback = ident.fallback == "tracking" or (
            ident.fallback is None and spec.kind == "carrier"
        )
        event_id = paths(fp.event_id)
        kinds = None
        if spec.kinds:
            kinds = tuple(
                _Kind(
                    k,
                    frozenset(v for v in ks.when if "*" not in v),
                    _glob(ks.when),
                    None if ks.present is None else _compile_path(ks.present),
                    self._compile(name, spec.resolve(k)),
                )
                for k, ks in spec.kinds.items()
            )
        return _Source(
            name=name,
            hasher=hashlib.blake2b(name.encode(), digest_size=8),
            stream=spec.stream,
            kind=spec.kind,
            channel=spec.channel,
            carrier=spec.carrier,
            zone=spec.zone,
            zone_from=None
            if spec.zone_from is None or not spec.time_format
            else (
                _compile_path(spec.zone_from.path, each, split),
                {
                    sys.intern(v): (sys.intern(z), parser_for(spec.time_format, z))
                    for v, z in spec.zone_from.map.items()
                },
            ),
            parse_time=parser_for(spec.time_format, spec.zone) if spec.time_format else _untimed,
            order_id=paths(fp.order_id),
            tracking_no=paths(fp.tracking_no),
            carrier_paths=paths(fp.carrier),
            customer_id=paths(fp.customer_id),
            channel_paths=paths(fp.channel),
            event_time=paths(fp.event_time),
            event_id=event_id,
            fields=fields,
            multi=len(fields) > 1,
            telemetry=None
            if tel is None
            else _TelemetryPaths(
                *(_compile_path(getattr(tel, f.name)) for f in dataclasses.fields(_TelemetryPaths))
            ),
            namespace=None if ident.namespace == OMS else ident.namespace,
            ref_channel=self._ids.resolve_channel(ident.namespace),
            own_ids=self._ids.resolve_channel(ident.namespace) in self._ids.channel_named,
            id_strip=None
            if ident.strip is None
            else partial(re.compile(ident.strip).sub, "", count=1),
            id_match=None if ident.pattern is None else re.compile(ident.pattern).fullmatch,
            fallback=fallback,
            links=tuple((link.namespace, paths(link.id)) for link in spec.links),
            decode=tuple(
                (p, tuple(str(t) for t in bind(p, None)[1]), fmt) for p, fmt in spec.decode.items()
            ),
            kind_by=None if spec.kind_by is None else (spec.kind_by, _compile_path(spec.kind_by)),
            kinds=kinds,
            each=each,
            steps=None if each is None else tuple(_plain(t) for t in each_steps(each)),
            element_id=tuple((t, p) for t, p in event_id if type(p) is _Bound and p.level),
            flat=not spec.decode and not spec.kinds and each is None,
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
    ) -> Result:
        """One envelope to an Event, or a DeadLetter saying why not. Never raises.

        A source with `each:` whose payload holds that list gives a tuple instead: one
        Event or DeadLetter per element, in order (a bad element does not sink the others;
        its dead letter names the position in `error` and in `origin["element"]`).

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
    ) -> Result:
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
            if not_after is not None and received_ms > not_after:
                ahead = implausible_received(received_ms, not_after)
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
            if (
                event_id is not None
                and len(event_id) > self._id_chars
                and over(event_id, self._id_max)
            ):
                raise _Bad(errors.BAD_ENVELOPE, self._too_long("envelope `event_id`"), event_id)
            if src.flat:  # no decode, kinds or each: the common case, as cheap as before
                return self._event(src, payload, payload, raw, event_id or None, received_ms, seq)
            if src.decode:
                self._decode(src, payload)
            if src.kinds is not None:
                src = self._select(src, payload)
            if src.steps is None:
                return self._event(src, payload, payload, raw, event_id or None, received_ms, seq)
            return self._split(src, payload, raw, event_id or None, received_ms, seq, origin)
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

    def _decode(self, src: _Source, payload: dict[str, Any]) -> None:
        """Fields that hold JSON or XML text, replaced in place by what they hold."""
        for label, path, fmt in src.decode:
            parent: Any = payload if len(path) == 1 else _get(payload, path[:-1])
            if type(parent) is not dict:
                continue
            v = parent.get(path[-1], _MISSING)
            if v is _MISSING or v is None or type(v) in (dict, list):
                continue  # absent, or an object already (the provider's JSON mode)
            if type(v) is not str:
                raise _Bad(errors.UNDECODABLE, f"{label} is {_kind_of(v)}, not {fmt} text", v)
            try:
                parent[path[-1]] = decode(v, fmt)
            except DecodeError as e:
                raise _Bad(errors.UNDECODABLE, f"{label}: {e}", v) from None

    @staticmethod
    def _select(src: _Source, payload: dict[str, Any]) -> _Source:
        """The message kind: the first whose `when` matches `kind_by` or whose `present` is."""
        text = None
        if src.kind_by is not None:
            v = _get(payload, src.kind_by[1])
            if v is not _MISSING and v is not None:
                text = v if type(v) is str else _text(v)
        for k in src.kinds or ():
            if text is not None and (text in k.values or (k.glob is not None and k.glob(text))):
                return k.src
            if k.present is not None:
                v = _get(payload, k.present)
                if v is not None and v is not _MISSING:
                    return k.src
        names = ", ".join(k.name for k in src.kinds or ())
        if text is None:
            raise _Bad(errors.UNMAPPED_STATUS, f"the payload is of none of the kinds {names}")
        by = src.kind_by[0] if src.kind_by is not None else "kind_by"
        raise _Bad(errors.UNMAPPED_STATUS, f"{by}={text!r} is of none of the kinds {names}", text)

    def _split(
        self,
        src: _Source,
        payload: dict[str, Any],
        raw: bytes,
        event_id: str | None,
        received_ms: int,
        seq: int,
        origin: dict[str, object],
    ) -> Result:
        """One result per element of `each`; the payload itself when the list is absent."""
        steps = src.steps or ()
        elements = _elements(steps, payload)
        if elements is None:  # `each` absent: the payload is the one element (a flat form)
            scope = (payload,) * (len(steps) + 1)
            return self._event(src, scope, payload, raw, event_id, received_ms, seq)
        if not elements:
            raise _Bad(errors.NO_EVENTS, f"{src.each} holds no element: no events")
        out: list[Event | DeadLetter] = []
        for pos, scope in elements:
            try:
                if type(scope) is not tuple:
                    raise _Bad(
                        errors.INVALID_FIELD, f"it is {_kind_of(scope)}, not an object", scope
                    )
                eid = self._first_id(src.element_id, scope) if src.element_id else None
                ev = self._event(src, scope, payload, raw, eid or "#", received_ms, seq)
                if eid is None:
                    ev.event_id = self._element_hash(src, ev, scope[-1], raw, pos)
                out.append(ev)
            except _Bad as bad:
                out.append(
                    DeadLetter(
                        reason=bad.reason,
                        error=f"{src.name}: element {pos} of {src.each}: {bad.error}",
                        raw=raw,
                        origin={**origin, "element": pos},
                        stream=src.stream,
                        source=src.name,
                        value=_shown(bad.value),
                        received_ms=received_ms,
                        seq=seq,
                    )
                )
        return tuple(out)

    def _event(
        self,
        src: _Source,
        payload: Any,
        root: dict[str, Any],
        raw: bytes,
        event_id: str | None,
        received_ms: int,
        seq: int,
    ) -> Event:
        """One event. `payload` is where paths are read: the root, or a split event's scope
        (root, element, ...) whose paths are `_Bound`."""
        if src.telemetry is not None:
            telemetry = self._telemetry(src.telemetry, payload)
            event_ms, time_raw, zone = self._event_time(src, payload, received_ms)
            return Event(
                stream=src.stream,
                source=src.name,
                kind=src.kind,
                event_id=event_id or self._event_id(src, src.event_id, payload, root, raw),
                received_ms=received_ms,
                event_ms=event_ms,
                event_time_raw=time_raw,
                zone=zone,
                carrier=telemetry.carrier,
                keys=self._keys_of(root),
                telemetry=telemetry,
                seq=seq,
            )

        # ids: an order id (or a reference to one), or at least a tracking number
        ids = self._ids
        order_id = refund_id = channel = ref = parsed = None
        invalid: tuple[str, str] | None = None
        for label, path in src.order_id:
            v = payload.get(path, _MISSING) if type(path) is str else _get(payload, path)
            if v is None or v is _MISSING:
                continue
            if type(v) is not str:
                if type(v) is not int or src.namespace is None:  # Taobao's tid is a number
                    raise _Bad(errors.INVALID_ORDER_ID, f"order id {label} is {_kind_of(v)}", v)
                v = str(v)
            if len(v) > self._id_chars and over(v, self._id_max):
                raise _Bad(errors.INVALID_ORDER_ID, self._too_long(f"order id {label}"), v)
            parsed = ids.parse_order_id(v)
            if parsed is None:
                text = v.strip()
                if src.id_strip is not None:
                    text = src.id_strip(text).strip()
                    parsed = ids.parse_order_id(text)
            if parsed is not None:
                order_id, refund_id, channel = parsed
                break
            if not text:
                continue  # blank is absent
            if src.namespace is not None and (src.id_match is None or src.id_match(text)):
                if src.own_ids:  # the channel's id is the canonical one: no wait
                    order_id, channel = f"{src.namespace}:{text}", src.ref_channel
                else:
                    ref = f"{src.namespace}:{text}"
                break
            invalid = (label, v)
            break
        text_field = self._text_field
        tracking, tracking_seen = text_field(payload, src.tracking_no, "tracking number")
        if invalid is not None and (tracking is None or not src.fallback):
            label, v = invalid
            raise _Bad(errors.INVALID_ORDER_ID, self._not_an_id(src, label, v), v)
        if order_id is None and ref is None and tracking is None:
            raise _Bad(errors.MISSING_ORDER_ID, "neither an order id nor a tracking number")

        # statuses: one claim per field that claims something
        refund = refund_id is not None
        claims: list[str] = []
        parts: list[str] = []
        raw_status = ""
        signal = outcome = None
        envelope_time = False
        multi = src.multi
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
            if e.refine:
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
            if e.envelope_time:
                envelope_time = True
            if multi:
                parts.append(f"{f.label}={rv}")
            else:
                raw_status = rv

        if envelope_time:
            event_ms, time_raw, zone = received_ms, None, None
        else:
            event_ms, time_raw, zone = self._event_time(src, payload, received_ms)

        # who and where: carrier, channel, customer
        carrier = src.carrier
        if carrier is None and src.carrier_paths:
            name, _ = text_field(payload, src.carrier_paths, "carrier")
            carrier = name and ids.resolve_carrier(name)
        tracking_valid = False
        if tracking is not None:
            carrier, tracking_valid = ids.check_tracking(tracking, carrier)
        if channel is None:
            channel = src.channel
            if channel is None:
                if src.channel_paths:
                    name, _ = text_field(payload, src.channel_paths, "channel")
                    channel = name and ids.resolve_channel(name)
                if channel is None and ref is not None:  # a channel's own id names its channel
                    channel = src.ref_channel
        customer_id = None
        if src.customer_id:
            customer_id, _ = text_field(payload, src.customer_id, "customer id")

        drift: tuple[str, ...] = ()
        if not tracking_seen and src.tracking_no and any(map(_shipped, claims)):
            drift = _DRIFT
        links = self._links(src, payload, channel) if src.links else ()
        if parsed is not None and channel in self._named_channels:  # a global id
            order_id, ref, links = self._channel_named(src.kind, order_id, channel, links)

        ev = Event(  # positional: a third of the cost of keywords (see _EVENT_FIELDS)
            src.stream,
            src.name,
            src.kind,
            event_id or self._event_id(src, src.event_id, payload, root, raw),
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
            ",".join(parts) if multi else raw_status,
            signal,
            outcome,
            drift,
            self._keys_of(root),
            None,
            seq,
        )
        if ref is not None:
            ev.ref = ref
        if links:
            ev.links = links
        return ev

    # ------------------------------------------------------------ helpers (per event)
    def _too_long(self, what: str) -> str:
        return f"{what} is longer than limits.id ({self._id_max} bytes)"

    @staticmethod
    def _not_an_id(src: _Source, label: str, v: str) -> str:
        glob = "a global id (channel code, yyyymmdd, sequence; case-sensitive)"
        if src.namespace is None:
            return f"order id {label}={v!r} is neither {glob} nor REF-<global id>-<nn>"
        return (
            f"order id {label}={v!r} is neither {glob}, REF-<global id>-<nn>, "
            f"nor a {src.namespace} id (identity.pattern)"
        )

    @staticmethod
    def _channel_named(
        kind: str, order_id: str, channel: str, links: tuple[str, ...]
    ) -> tuple[str | None, str | None, tuple[str, ...]]:
        """(order id, ref, links) of an event whose order id is the global id of a
        `canonical_id: channel` channel's order (README "Identity"). One that links the
        channel's own id (the OMS's `platform_order_id`) names the order by it and links
        `oms:<global id>`; the OMS without that link keeps the global id (nothing else
        names the order); any other event (WMS, payment, carrier) waits for the link as
        ref `oms:<global id>`. A channel's own ids never reach here (`own_ids`)."""
        global_ref = f"{OMS}:{order_id}"
        prefix = channel + ":"
        own = next((link for link in links if link.startswith(prefix)), None)
        if own is not None:
            return own, None, (global_ref, *(link for link in links if link != own))
        if kind == "oms":
            return order_id, None, links
        return None, global_ref, links

    def _links(self, src: _Source, payload: Any, channel: str | None) -> tuple[str, ...]:
        """`<namespace>:<id>` of each configured link present (a channel's needs the channel)."""
        out = []
        for namespace, paths in src.links:
            ns = namespace or channel
            if ns is None:
                continue
            v, _ = self._text_field(payload, paths, "link")
            if v is not None:
                out.append(f"{ns}:{v}")
        return tuple(out)

    def _first_id(self, paths: Paths, payload: Any) -> str | None:
        """The first non-empty id (string or integer) at the paths."""
        for label, path in paths:
            v = _get(payload, path)
            if type(v) is str and v:
                if over(v, self._id_max):
                    raise _Bad(errors.INVALID_FIELD, self._too_long(f"event id {label}"), v)
                return v
            if type(v) is int:
                return str(v)
        return None

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
                if len(v) > self._id_chars and over(v, self._id_max):
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
        src: _Source, payload: Any, received_ms: int
    ) -> tuple[int, str | None, str | None]:
        """The first present event-time path, parsed; none present: the ingestion time.

        Offset-less times are read in the source's zone, or in the zone `zone_from` maps
        this event's field value to."""
        for label, path in src.event_time:
            v = payload.get(path, _MISSING) if type(path) is str else _get(payload, path)
            if v is None or v is _MISSING or v == "":
                continue
            try:
                if src.zone_from is None:
                    return src.parse_time(v), v if type(v) is str else _text(v), src.zone
                where = _get(payload, src.zone_from[0])
                hit = src.zone_from[1].get(where.strip()) if type(where) is str else None
                zone, parse = hit or (src.zone, src.parse_time)
                return parse(v), _text(v), zone
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

    def _event_id(
        self, src: _Source, paths: Paths, payload: Any, root: dict[str, Any], raw: bytes
    ) -> str:
        """The provider's own id if configured, else a hash of source + canonical payload."""
        eid = self._first_id(paths, payload) if paths else None
        if eid is not None:
            return eid
        try:
            body = orjson.dumps(root, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # nested deeper than orjson writes: the bytes identify it
            body = bytes(raw)
        h = src.hasher.copy()
        h.update(body)
        return "h:" + h.hexdigest()

    @staticmethod
    def _element_hash(src: _Source, ev: Event, element: object, raw: bytes, pos: str) -> str:
        """An element's identity without an id of its own: its content and what the event
        says (ids, status, time: some may come from above the element), not its position
        or its notification. So the same checkpoint is the same event in a redelivery, a
        reordered one, or a later push that repeats it (AfterShip sends every checkpoint
        each time), while an order-level status that changed makes a new event."""
        h = src.hasher.copy()
        try:
            about = (
                ev.order_id or ev.ref,
                ev.tracking_no,
                ev.raw_status,
                ev.event_time_raw,
                ev.claims,
                element,
            )
            h.update(orjson.dumps(about, option=orjson.OPT_SORT_KEYS))
        except orjson.JSONEncodeError:  # deeper than orjson writes: the notification's bytes
            h.update(bytes(raw) + pos.encode())
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
