"""Which webhook deliveries were already stored, remembered in Redis for the retry horizon.

A delivery is claimed before it is produced (`SET key pending NX GET`, expiring
soon), marked stored once Kafka acknowledged it (expiring with the provider's retry
horizon) and released if Kafka did not. So a redelivery of a stored webhook is
acknowledged without a second record, a concurrent one is asked to retry, and a
delivery that failed, or whose gateway crashed mid-way, is taken again by the next
retry. One pipelined round trip at a time carries every claim and mark queued
meanwhile, so a claim waits at most two round trips (each bounded by the timeout).

Redis is an optimisation of at-least-once, never a condition for taking a webhook:
while it is away or slower than the timeout, claims answer UNAVAILABLE at once
(tried again every `retry_interval`) and the gateway accepts without de-duplication.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import StrEnum

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from schemas.config import RedisView

log = logging.getLogger("orderguard.gateway.redis")

PENDING = b"p"
STORED = b"s"


class Claim(StrEnum):
    NEW = "new"
    STORED = "stored"
    """Already produced: acknowledge, produce nothing."""
    IN_FLIGHT = "in_flight"
    """Another request is producing it right now: ask the provider to retry."""
    UNAVAILABLE = "unavailable"
    """Redis away or slow: take it without de-duplication (at least once)."""


_Op = tuple[str, bytes, int, "asyncio.Future[bytes | None] | None"]


class DeliveryLedger:
    def __init__(self, cfg: RedisView, timeout_ms: int) -> None:
        assert cfg.url is not None
        self._redis = aioredis.Redis.from_url(cfg.url, **cfg.client_options())
        self._prefix = cfg.key_prefix + "wh:"
        self._timeout = timeout_ms / 1000
        self._retry = cfg.retry_interval / 1000
        self._queue: list[_Op] = []
        self._away_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    def key(self, source: str, delivery_id: str) -> bytes:
        return f"{self._prefix}{source}:{delivery_id}".encode()

    async def claim(self, key: bytes, pending_ms: int) -> Claim:
        if time.monotonic() < self._away_until:
            return Claim.UNAVAILABLE
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._enqueue(("claim", key, pending_ms, fut))
        try:
            old = await fut
        except (RedisError, OSError, TimeoutError):
            return Claim.UNAVAILABLE
        if old is None:
            return Claim.NEW
        return Claim.STORED if old == STORED else Claim.IN_FLIGHT

    def stored(self, key: bytes, horizon_ms: int) -> None:
        """Kafka acknowledged it: redeliveries within the horizon produce nothing."""
        if time.monotonic() >= self._away_until:
            self._enqueue(("stored", key, horizon_ms, None))

    def release(self, key: bytes) -> None:
        """Kafka did not take it: the provider's retry must be produced."""
        if time.monotonic() >= self._away_until:
            self._enqueue(("release", key, 0, None))

    def _enqueue(self, op: _Op) -> None:
        self._queue.append(op)
        if len(self._queue) == 1 and not self._tasks:  # else the round trip's end sends it
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self._tasks or not self._queue:
            return
        ops, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._execute(ops))
        self._tasks.add(task)
        task.add_done_callback(self._next)

    def _next(self, task: asyncio.Task[None]) -> None:
        # One round trip at a time: what queued meanwhile goes in the next, so under load
        # each pipeline carries many commands (a pipeline's cost is mostly per call).
        self._tasks.discard(task)
        self._flush()

    async def _execute(self, ops: list[_Op]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        command = pipe.execute_command  # what pipe.set / pipe.delete send, without their checks
        for op, key, ms, _ in ops:
            if op == "claim":
                command("SET", key, PENDING, "PX", ms, "NX", "GET", get=True)
            elif op == "stored":
                command("SET", key, STORED, "PX", ms)
            else:
                command("DEL", key)
        try:
            results = await asyncio.wait_for(pipe.execute(raise_on_error=False), self._timeout)
        except (RedisError, OSError, TimeoutError) as e:
            self._went_away(e)
            for *_, fut in ops:
                if fut is not None and not fut.done():
                    fut.set_exception(TimeoutError() if isinstance(e, TimeoutError) else e)
            return
        for (*_, fut), result in zip(ops, results, strict=True):
            if fut is None or fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    def _went_away(self, e: BaseException) -> None:
        if time.monotonic() >= self._away_until:
            what = "did not answer in time" if isinstance(e, TimeoutError) else type(e).__name__
            log.warning(
                "Redis %s; taking webhooks without de-duplication for %gs", what, self._retry
            )
        self._away_until = time.monotonic() + self._retry

    async def close(self) -> None:
        """Send what is still queued (the last `stored` marks), then close."""
        deadline = time.monotonic() + 2 * self._timeout
        while (self._tasks or self._queue) and time.monotonic() < deadline:
            self._flush()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=deadline - time.monotonic())
            await asyncio.sleep(0)  # the finished round trip's callback sends the next
        await self._redis.aclose()
