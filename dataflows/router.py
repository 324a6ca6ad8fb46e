"""The stateless first step: normalize a batch of raw lines and address the pieces.

It runs where the batch was read. Every order shard and every reference-index
shard gets exactly one message per input batch, even an empty one: it carries the
partition's `Mark`, from which each step knows its watermark and ingestion clock
(`state.watermark`), so deadlines fire in quiet shards too.

Lines of the `control` stream are operator commands (`schemas.commands`), not
envelopes for the normalizer: channel and carrier commands join the health batch
in their input position; customer commands ride on order shard 0's message, which
passes them to the customer desk with the shards' signals for the same batch.
"""

from __future__ import annotations

import zlib

from dataflows.messages import Mark, Records, ToHealth, ToIndex, ToShard
from schemas.commands import CONTROL, Command, CommandParser, is_control
from schemas.config import Settings
from schemas.event import DeadLetter, Event
from schemas.limits import kept, too_large
from schemas.normalize import Normalizer
from state.health import HealthBatch
from state.reference_index import Link, registered_keys, wait_key


def index_shards(settings: Settings) -> int:
    """Reference-index shards: half the order shards, so that with order shards a multiple
    of the lanes they are too, and each lives where its lane is read (`StateKeys`)."""
    return max(1, settings.pipeline.shards // 2)


def stable_shard(text: str, n: int) -> int:
    """crc32, not `hash`: the same id maps to the same shard in every process and run."""
    return zlib.crc32(text.encode()) % n


def index_shard(reference: str, n: int) -> int:
    """The index shard of a reference, by its id without the namespace (`taobao:123` by
    `123`): that is what the reference's own records are keyed by (`schemas.keys`), so an
    event waiting for its order is held in the lane it was read from, not sent away."""
    return zlib.crc32(reference.split(":", 1)[-1].encode()) % n


def _shed_health_fields(ev: Event) -> None:
    """Drop what only source health reads (payload keys, drift fields, raw time and zone)
    once the batch's `HealthBatch` has it: nothing after the router reads them, and with
    several processes an event that crosses to its order's process or waits pickled in
    the index would carry them (measured: 120 of an event's 320 pickled bytes)."""
    ev.keys = ev.drift_fields = ()
    ev.event_time_raw = ev.zone = None


class Router:
    def __init__(self, settings: Settings, normalizer: Normalizer | None = None) -> None:
        self._normalize = (normalizer or Normalizer(settings)).normalize
        self._command = CommandParser(settings).parse
        self._shards = settings.pipeline.shards
        self._index = index_shards(settings)
        self._settings = settings
        self._limits = settings.limits
        self._channel_of = {name: s.channel for name, s in settings.sources.items()}

    def route(
        self,
        mark: Mark,
        lines: list[tuple[int, bytes, dict]],
        stream: str | None = None,
        limits: list[int] | None = None,
    ) -> list[ToShard | ToIndex | ToHealth | Records]:
        """Messages for every shard, each with the batch's `mark`.

        `lines`: (merge key, raw, origin) of one input partition (`dataflows.stamp`);
        `stream`: theirs (None: a line that looks like a command is one, for replays
        of mixed files). `limits`: each line's latest plausible `received_at`.
        """
        shards, nindex = self._shards, self._index
        direct: list[list[Event]] = [[] for _ in range(shards)]
        index: list[list[Event | Link]] = [[] for _ in range(nindex)]
        health = HealthBatch.for_settings(self._settings)
        dead: list[DeadLetter] = []
        commands: list[Command] = []  # the customer desk's, via order shard 0
        normalize = self._normalize
        lim = self._limits
        for i, (seq, raw, origin) in enumerate(lines):
            not_after = None if limits is None else limits[i]
            if len(raw) > lim.input_record:  # any stream, commands too: never parsed
                result = too_large(raw, lim.input_record, lim.dead_letter_raw, origin, stream, seq)
            elif stream == CONTROL or (stream is None and is_control(raw)):
                result = self._command(raw, origin, seq, stream, not_after)
                if isinstance(result, Command):
                    if result.breaker == "customer":
                        commands.append(result)
                    else:
                        health.add_command(result, seq)
                    continue
            else:
                result = normalize(raw, origin=origin, stream=stream, seq=seq, not_after=not_after)
            # a split notification (`each:`) gives a tuple: one result per element
            for r in result if type(result) is tuple else (result,):
                if isinstance(r, DeadLetter):
                    health.add_dead_letter(r, self._channel_of.get(r.source or ""), seq)
                    dead.append(r)
                    continue
                health.add_event(r, seq)
                if r.kind == "telemetry":
                    continue
                _shed_health_fields(r)
                if r.order_id is not None:
                    direct[stable_shard(r.order_id, shards)].append(r)
                    keys = registered_keys(r)
                    if keys:  # to the index shard of each reference it registers, as a Link
                        owned: dict[int, list[str]] = {}
                        for key in keys:
                            owned.setdefault(index_shard(key, nindex), []).append(key)
                        for k in sorted(owned):
                            index[k].append((r.seq, r.received_ms, r.order_id, tuple(owned[k])))
                    continue
                key = wait_key(r)
                if key is not None:
                    # kept while it waits for its order: what its dead letter would embed
                    r.raw, r.raw_size, r.raw_sha256 = kept(raw, lim.dead_letter_raw)
                    r.origin = origin
                    index[index_shard(key, nindex)].append(r)
        health.clock_ms = max(health.clock_ms, mark.clock)
        out: list[ToShard | ToIndex | ToHealth | Records] = [
            ToShard(mark, i, evs, [] if i else commands) for i, evs in enumerate(direct)
        ]
        out.extend(ToIndex(mark, i, evs) for i, evs in enumerate(index))
        out.append(ToHealth(mark, health))
        if dead:
            out.append(Records(dead))
        return out
