"""The Redis order view's sink: the dataflow hands updates over, a background thread writes.

The dataflow never waits on Redis. `write_batch` only merges the batch's updates into
a `ViewBuffer` (latest value per key, timeline entries accumulated per order) and
returns; one writer thread per process drains the buffer with pipelined commands. When
Redis is away or too slow, the writer puts what it could not write back (newer values
win), counts the failure, waits `redis.retry_interval` and tries again, so the view
catches up when Redis returns. The buffer holds at most `redis.buffer_max_keys` keys:
beyond that the least recently updated are dropped and counted.

At least once, and only roughly: a crash loses what the buffer held; after a restart
the replay of the last epoch writes part of it again (the same values, the same
timeline members). What was dropped from a full buffer is rewritten only when its
order changes again (or never: its key then shows an older state, until it expires).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors.metrics import VIEW_BUFFERED, VIEW_DROPPED, VIEW_FAILURES, VIEW_WRITES
from connectors.redis_server import _redacted
from schemas.config import RedisView
from schemas.timeparse import wall_clock_ms
from state.view import ViewUpdate

log = logging.getLogger("orderguard.redis_view")

CHUNK = 500
"""Keys per pipelined round trip."""
CLOSE_FLUSH = 5.0
"""Seconds the sink's close keeps retrying while Redis fails (while it answers, close
writes everything still buffered, however long that takes)."""
STILL_AWAY_EVERY = 60.0
"""Seconds between log lines while Redis stays away (one when it goes, one when it returns)."""

Key = tuple[str, ...]
"""("order", id) | ("alias", ref) | ("timeline", id) | ("breaker", kind, key) | ("hold", id)."""

CLAIM_REF = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
"""
"""A reference's alias: set or refreshed by the order holding it, never moved to another
(the first link wins, as in `state.reference_index`); it expires with its order."""


class ViewBuffer:
    """Pending writes, one entry per Redis key, oldest first; thread-safe, no I/O.

    Values: an order's `(doc, expires)` (doc None: delete it and its timeline), an alias's
    `(order id, expires)`, a timeline's `({member: score}, expires)` (capped at the newest
    `timeline_max`), a breaker's doc, a hold's `(doc or None, expires)` (None: released,
    delete it; expires 0: none known).

    `expires` is an epoch ms instant, fixed when the update is added (`now_ms` then plus
    the update's time to live): every key of an order expires at once, however the writer
    splits them into round trips, and what waits out a Redis outage does not live longer.
    """

    def __init__(
        self, max_keys: int, timeline_max: int, now_ms: Callable[[], int] = wall_clock_ms
    ) -> None:
        self.max_keys = max_keys
        self.timeline_max = timeline_max
        self._now = now_ms
        self.dropped = 0
        self._entries: OrderedDict[Key, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, update: ViewUpdate) -> int:
        """Merge one update (newer values replace older ones); return the keys dropped."""
        now = self._now()
        with self._lock:
            expiry: dict[str, int] = {}
            for oid, doc, ttl in update.orders:
                expiry[oid] = now + ttl
                self._put(("order", oid), (doc, expiry[oid]))
            for ref, oid, ttl in update.aliases:
                pending = self._entries.get(("alias", ref))
                if pending is None or pending[0] == oid:  # a first claim is not replaced
                    self._put(("alias", ref), (oid, now + ttl))
            for oid in update.forgotten:  # both keys go; a pending timeline need not be written
                self._put(("order", oid), (None, 0))
                self._entries.pop(("timeline", oid), None)
            for oid, score, member in update.timeline:
                key = ("timeline", oid)
                old = self._entries.get(key)
                members = old[0] if old is not None else {}
                members[member] = score
                expires = expiry.get(oid, old[1] if old else now + 1)
                self._put(key, (self._capped(members), expires))
            for kind, key_, doc in update.breakers:
                self._put(("breaker", kind, key_), doc)
            for cid, hold, ttl in update.holds:
                self._put(("hold", cid), (hold, now + ttl if ttl else 0))
            return self._trim()

    def take(self, n: int) -> list[tuple[Key, Any]]:
        """Remove and return up to n entries, oldest first, to be written."""
        with self._lock:
            entries = self._entries
            return [entries.popitem(last=False) for _ in range(min(n, len(entries)))]

    def put_back(self, items: list[tuple[Key, Any]]) -> int:
        """Return entries that could not be written, as the oldest; newer values win.

        Returns the keys dropped because the buffer is full (the oldest go first).
        """
        with self._lock:
            entries = self._entries
            for key, value in reversed(items):
                newer = entries.get(key)
                if newer is None:
                    entries[key] = value
                    entries.move_to_end(key, last=False)
                elif key[0] == "timeline":  # the members of both, the newer ttl
                    merged = {**value[0], **newer[0]}
                    entries[key] = (self._capped(merged), newer[1])
            return self._trim()

    def _put(self, key: Key, value: Any) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)

    def _capped(self, members: dict[bytes, int]) -> dict[bytes, int]:
        if len(members) <= self.timeline_max:
            return members
        newest = sorted(members.items(), key=lambda kv: (kv[1], kv[0]))[-self.timeline_max :]
        return dict(newest)

    def _trim(self) -> int:
        n = 0
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)
            n += 1
        self.dropped += n
        return n


def commands(pipe: Any, prefix: str, timeline_max: int, key: Key, value: Any) -> None:
    """Queue the Redis commands that write one buffered entry (each one idempotent)."""
    kind = key[0]
    if kind == "order":
        doc, expires = value
        name = f"{prefix}order:{key[1]}"
        if doc is None:
            pipe.delete(name, f"{name}:timeline")
        else:
            pipe.set(name, doc, pxat=expires)
    elif kind == "alias":
        oid, expires = value
        pipe.eval(CLAIM_REF, 1, f"{prefix}ref:{key[1]}", oid, expires)
    elif kind == "timeline":
        members, expires = value
        name = f"{prefix}order:{key[1]}:timeline"
        pipe.zadd(name, members)
        pipe.zremrangebyrank(name, 0, -(timeline_max + 1))
        pipe.pexpireat(name, expires)
    elif kind == "breaker":
        pipe.hset(f"{prefix}breaker:{key[1]}", key[2], value)
    else:  # hold
        doc, expires = value
        name = f"{prefix}hold:{key[1]}"
        if doc is None:
            pipe.delete(name)
        else:
            pipe.set(name, doc, pxat=expires or None)  # 0: no expiry known


class ViewWriter:
    """The one thread per process that writes the buffer to Redis, and retries."""

    def __init__(self, cfg: RedisView, buffer: ViewBuffer) -> None:
        assert cfg.url is not None
        self.buffer = buffer
        self.url = _redacted(cfg.url)
        self._prefix = cfg.key_prefix
        self._timeline_max = cfg.timeline_max
        self._retry = cfg.retry_interval / 1000
        # our own loop retries: no hidden retries (each would wait a socket timeout)
        self._client = redis.Redis.from_url(
            cfg.url, retry=Retry(NoBackoff(), 0), **cfg.client_options()
        )
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-view-writer", daemon=True)
        self._away_since: float | None = None
        self._away_logged = 0.0
        self._failed = 0

    def start(self) -> ViewWriter:
        self._thread.start()
        return self

    def notify(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._closing.is_set():
                return
            self._wake.clear()
            if not self._drain():
                self._closing.wait(self._retry)
                self._wake.set()  # try again, new updates or not

    def _drain(self) -> bool:
        """Write until the buffer is empty; False when Redis failed (the rest waits)."""
        while True:
            items = self.buffer.take(CHUNK)
            if not items:
                return True
            ok = self._write(items)
            VIEW_BUFFERED.set(len(self.buffer))
            if not ok:
                return False

    def _write(self, items: list[tuple[Key, Any]]) -> bool:
        pipe = self._client.pipeline(transaction=False)
        for key, value in items:
            commands(pipe, self._prefix, self._timeline_max, key, value)
        try:
            results = pipe.execute(raise_on_error=False)
        except (redis.RedisError, OSError) as e:
            VIEW_DROPPED.inc(self.buffer.put_back(items))
            VIEW_FAILURES.inc()
            self._away(e)
            return False
        refused = [r for r in results if isinstance(r, Exception)]
        if refused:  # a command Redis will never take (a key of another type): not retried
            VIEW_FAILURES.inc()
            log.error(
                "redis view: %s refused %d of %d commands, first: %s",
                self.url,
                len(refused),
                len(results),
                refused[0],
            )
        VIEW_WRITES.inc(len(items))
        self._back()
        return True

    def _away(self, error: BaseException) -> None:
        now = time.monotonic()
        self._failed += 1
        if self._away_since is None:
            self._away_since = self._away_logged = now
            log.warning(
                "redis view: cannot write to %s (%s); the pipeline goes on, updates wait "
                "(at most %d keys), retrying every %gs",
                self.url,
                error,
                self.buffer.max_keys,
                self._retry,
            )
        elif now - self._away_logged >= STILL_AWAY_EVERY:
            self._away_logged = now
            log.warning(
                "redis view: %s still away after %.0fs (%d attempts failed, %d keys waiting, "
                "%d dropped)",
                self.url,
                now - self._away_since,
                self._failed,
                len(self.buffer),
                self.buffer.dropped,
            )

    def _back(self) -> None:
        if self._away_since is None:
            return
        log.warning(
            "redis view: %s answers again after %.0fs; catching up (%d keys waiting, %d dropped)",
            self.url,
            time.monotonic() - self._away_since,
            len(self.buffer),
            self.buffer.dropped,
        )
        self._away_since = None
        self._failed = 0

    def close(self, timeout: float = CLOSE_FLUSH) -> None:
        """Stop the thread and write what is left; give up `timeout` seconds in if Redis fails."""
        deadline = time.monotonic() + timeout
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)
        while not self._drain():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(self._retry, left))
        if len(self.buffer):
            log.warning(
                "redis view: closed with %d keys unwritten (%s away)", len(self.buffer), self.url
            )
        self._client.close()


class _ViewPartition(StatelessSinkPartition[ViewUpdate]):
    def __init__(self, sink: RedisViewSink, writer: ViewWriter) -> None:
        self._sink = sink
        self._writer = writer

    def write_batch(self, items: list[ViewUpdate]) -> None:
        buffer = self._writer.buffer
        dropped = 0
        for update in items:
            dropped += buffer.add(update)
        if dropped:
            VIEW_DROPPED.inc(dropped)
        VIEW_BUFFERED.set(len(buffer))
        self._writer.notify()

    def close(self) -> None:
        self._sink.release()


class RedisViewSink(DynamicSink[ViewUpdate]):
    """One partition per worker, all handing over to one writer for this process."""

    def __init__(self, cfg: RedisView) -> None:
        if cfg.url is None:
            raise ValueError("redis.url is not set: there is no view to write")
        self._cfg = cfg
        self._lock = threading.Lock()
        self._open = 0
        self.writer: ViewWriter | None = None

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ViewPartition:
        with self._lock:
            if self.writer is None:
                buffer = ViewBuffer(self._cfg.buffer_max_keys, self._cfg.timeline_max)
                self.writer = ViewWriter(self._cfg, buffer).start()
            self._open += 1
            return _ViewPartition(self, self.writer)

    def release(self) -> None:
        """A partition closed; the last one flushes and stops the writer."""
        with self._lock:
            self._open -= 1
            writer = self.writer if self._open == 0 else None
            if writer is not None:
                self.writer = None
        if writer is not None:
            writer.close()
