"""Circuit breakers: per sales channel, per carrier, per customer.

Each is a small state machine driven by the ingestion clock (epoch ms) its caller
passes in, never the wall clock, so that a replay gives the same decisions at any
speed. They are slotted and picklable as they are: Bytewax snapshots them in state.

Operators force breakers (`orderguard breaker force`, `orderguard hold release`):
- A forced channel or carrier state is sticky: while forced the rules still take
  in windows and calls but make no transition (no cool-down, no trip, no close),
  until the operator forces another state or AUTO. AUTO hands the breaker back to
  its rules in the state it is in, with fresh counting windows (and a fresh
  cool-down if OPEN): the spec's windows start afresh on every change of state.
- Each command that changes the state or the forced flag is one decision (OPEN
  by the rules, then forced OPEN, is a decision with previous_state OPEN); a
  command that changes neither (a repeat, AUTO on a breaker not forced) is none,
  so applying a command twice (at-least-once input) is harmless.
- Customer holds are not sticky: an operator's hold expires like any hold, and a
  released customer is held again by the next alert that holds customers.
"""

from __future__ import annotations

import heapq
from collections import deque

from schemas.config import CarrierBreakerConfig, ChannelBreakerConfig, CustomerHoldConfig
from state.records import Decision

CLOSED, OPEN, HALF_OPEN = "CLOSED", "OPEN", "HALF_OPEN"
HOLD, RELEASED = "HOLD", "RELEASED"
REVIEW, RESUME, PAUSE = "route_to_manual_review", "resume", "pause_auto_ship"
AUTO = "AUTO"
"""Not a state: an operator's command to give a breaker back to its rules."""

MAX_HELD_ORDERS = 20
"""Orders remembered per customer hold (the first, then the extra ones): figures stay small."""


def _pct(ratio: float) -> str:
    return f"{ratio * 100:g}%"


class ChannelBreaker:
    """The share of a channel's events that were bad, per completed window aligned to the window.

    Only windows that start at or after the last change of state count toward the
    next decision. A window with fewer than `min_events` events (an empty one too) is
    neither bad nor healthy: it breaks the consecutive run, whether of bad windows
    (CLOSED) or of healthy ones (HALF_OPEN). Windows complete strictly in time order.
    """

    __slots__ = ("cfg", "forced", "key", "now", "pending", "run", "since", "state")

    def __init__(self, key: str, cfg: ChannelBreakerConfig) -> None:
        self.key = key
        self.cfg = cfg
        self.state = CLOSED
        self.forced = False  # an operator holds the state: the rules make no transition
        self.since = 0  # the last change of state; windows starting before it do not count
        self.now = 0  # windows ending at or before this are complete
        self.pending: dict[int, list[int]] = {}  # window start -> [total, bad]
        self.run: list[tuple[int, int, int]] = []  # the current consecutive (start, total, bad)

    def count(self, at_ms: int, total: int, bad: int = 0) -> None:
        """Add to the window holding at_ms; a late count goes to the current window."""
        at = max(at_ms, self.now)
        w = self.pending.setdefault(at - at % self.cfg.window, [0, 0])
        w[0] += total
        w[1] += bad

    def advance(self, now_ms: int) -> list[Decision]:
        """Complete every window that ends by now_ms, and the cool-down, in time order."""
        out: list[Decision] = []
        size = self.cfg.window
        while True:
            first = min(self.pending) if self.pending else None
            if self.state == OPEN and not self.forced:
                due = self.since + self.cfg.open_for
                if due <= now_ms and (first is None or due <= first + size):
                    reason = f"open for {self.cfg.open_for // 1000}s: trying again"
                    out.append(self._change(HALF_OPEN, due, reason, []))
                    continue
            if first is None or first + size > now_ms:
                break
            total, bad = self.pending.pop(first)
            out += self._complete(first, total, bad)
        self.now = max(self.now, now_ms)
        return out

    def _complete(self, start: int, total: int, bad: int) -> list[Decision]:
        cfg = self.cfg
        if start < self.since or self.state == OPEN or self.forced:
            return []
        if self.run and self.run[-1][0] + cfg.window != start:
            self.run = []  # empty windows since the last one: too few events, the run is broken
        if total < cfg.min_events and not (self.state == HALF_OPEN and total and not bad):
            # too few events to judge; but a half-open channel that is merely quiet and
            # sends nothing bad is healthy, or a low-volume channel could never close
            self.run = []
            return []
        window = (start, total, bad)
        end = start + cfg.window
        is_bad = bad / total > cfg.bad_ratio
        if self.state == CLOSED:
            if not is_bad:
                self.run = []
                return []
            self.run.append(window)
            if len(self.run) < cfg.bad_windows:
                return []
            reason = f"bad share above {_pct(cfg.bad_ratio)} in {len(self.run)} consecutive windows"
            return [self._change(OPEN, end, reason, self.run)]
        if is_bad:  # HALF_OPEN
            reason = f"bad share above {_pct(cfg.bad_ratio)} in a window while half-open"
            return [self._change(OPEN, end, reason, [window])]
        self.run.append(window)
        if len(self.run) < cfg.healthy_windows:
            return []
        return [self._change(CLOSED, end, f"{len(self.run)} consecutive healthy windows", self.run)]

    def _change(
        self, state: str, at: int, reason: str, windows: list[tuple[int, int, int]]
    ) -> Decision:
        cfg = self.cfg
        figures = {
            "windows": [
                {"start": s, "total": t, "bad": b, "share": round(b / t, 4)} for s, t, b in windows
            ],
            "thresholds": {
                "bad_ratio": cfg.bad_ratio,
                "min_events": cfg.min_events,
                "bad_windows": cfg.bad_windows,
                "healthy_windows": cfg.healthy_windows,
                "window_ms": cfg.window,
                "open_for_ms": cfg.open_for,
            },
        }
        return self._transition(state, at, reason, figures)

    def force(
        self, state: str, at_ms: int, reason: str, figures: dict[str, object]
    ) -> Decision | None:
        """An operator's command: `state` (sticky) or AUTO; None when it changes nothing."""
        return _force(self, state, at_ms, reason, figures)

    def _transition(self, state: str, at: int, reason: str, figures: dict[str, object]) -> Decision:
        action = REVIEW if state == OPEN else RESUME
        d = Decision("channel", self.key, state, self.state, reason, action, figures, at)
        self.state, self.since, self.run = state, at, []
        return d


class CarrierBreaker:
    """A carrier's API health from the shipping service's calls, in call order.

    Calls that arrive while OPEN, before the cool-down ends, are counted nowhere.
    In HALF_OPEN a probe that fails or is slow reopens at once; `probe_calls` good
    probes in a row close. The call history starts afresh on every change of state.
    """

    __slots__ = (
        "backup",
        "calls",
        "cfg",
        "failures",
        "forced",
        "key",
        "probes",
        "since",
        "slow",
        "state",
        "streak",
    )

    def __init__(self, key: str, cfg: CarrierBreakerConfig, backup: str | None = None) -> None:
        self.key = key
        self.cfg = cfg
        self.backup = backup
        self.state = CLOSED
        self.forced = False  # an operator holds the state: the rules make no transition
        self.since = 0
        self._reset()

    def _reset(self) -> None:
        self.calls: deque[int] = deque()  # the last window_calls calls: bit 1 failed, bit 2 slow
        self.failures = 0  # failed calls among self.calls
        self.slow = 0  # slow calls among self.calls
        self.streak = 0  # consecutive failures
        self.probes: list[dict[str, object]] = []

    def advance(self, now_ms: int) -> list[Decision]:
        """End the cool-down if it is over by now_ms (at exactly opened_at + open_for)."""
        due = self.since + self.cfg.open_for
        if self.state != OPEN or self.forced or due > now_ms:
            return []
        reason = f"open for {self.cfg.open_for // 1000}s: probing"
        return [self._change(HALF_OPEN, due, reason, {"opened_at": self.since})]

    def call(self, at_ms: int, ok: bool, latency_ms: float) -> list[Decision]:
        """One call to the carrier's API; calls come in order."""
        out = self.advance(at_ms)
        if self.state == OPEN and not self.forced:
            return out
        cfg = self.cfg
        slow = latency_ms > cfg.slow_ms
        if self.forced:  # counted, but the rules decide nothing while an operator does
            self._count(ok, slow)
            return out
        if self.state == HALF_OPEN:
            self.probes.append({"at": at_ms, "ok": ok, "latency_ms": latency_ms})
            figures = {"probes": self.probes}
            if not ok or slow:
                reason = "a probe call failed" if not ok else "a probe call was slow"
                out.append(self._change(OPEN, at_ms, reason, figures))
            elif len(self.probes) >= cfg.probe_calls:
                reason = f"{len(self.probes)} good probe calls"
                out.append(self._change(CLOSED, at_ms, reason, figures))
            return out
        self._count(ok, slow)
        reason = self._trip_reason()
        if reason:
            figures = {
                "calls": len(self.calls),
                "failures": self.failures,
                "slow": self.slow,
                "consecutive_failures": self.streak,
            }
            out.append(self._change(OPEN, at_ms, reason, figures))
        return out

    def _count(self, ok: bool, slow: bool) -> None:
        """One call into the history of the last `window_calls` calls."""
        self.calls.append((not ok) | slow << 1)
        self.failures += not ok
        self.slow += slow
        self.streak = 0 if ok else self.streak + 1
        if len(self.calls) > self.cfg.window_calls:
            gone = self.calls.popleft()
            self.failures -= gone & 1
            self.slow -= gone >> 1

    def _trip_reason(self) -> str | None:
        cfg, n = self.cfg, len(self.calls)
        if self.streak >= cfg.consecutive_failures:
            return f"{self.streak} consecutive failures"
        if n < cfg.min_calls:
            return None
        if self.failures / n > cfg.failure_ratio:
            return f"{self.failures} of the last {n} calls failed (above {_pct(cfg.failure_ratio)})"
        if self.slow / n > cfg.slow_ratio:
            return (
                f"{self.slow} of the last {n} calls slower than {cfg.slow_ms:g} ms"
                f" (above {_pct(cfg.slow_ratio)})"
            )
        return None

    def _change(self, state: str, at: int, reason: str, figures: dict[str, object]) -> Decision:
        cfg = self.cfg
        figures["thresholds"] = {
            "consecutive_failures": cfg.consecutive_failures,
            "failure_ratio": cfg.failure_ratio,
            "window_calls": cfg.window_calls,
            "min_calls": cfg.min_calls,
            "slow_ms": cfg.slow_ms,
            "slow_ratio": cfg.slow_ratio,
            "open_for_ms": cfg.open_for,
            "probe_calls": cfg.probe_calls,
        }
        return self._transition(state, at, reason, figures)

    def force(
        self, state: str, at_ms: int, reason: str, figures: dict[str, object]
    ) -> Decision | None:
        """An operator's command: `state` (sticky) or AUTO; None when it changes nothing."""
        return _force(self, state, at_ms, reason, figures)

    def _transition(self, state: str, at: int, reason: str, figures: dict[str, object]) -> Decision:
        action = f"failover_to:{self.backup or 'none'}" if state == OPEN else RESUME
        d = Decision("carrier", self.key, state, self.state, reason, action, figures, at)
        self.state, self.since = state, at
        self._reset()
        return d


def _force(
    b: ChannelBreaker | CarrierBreaker, state: str, at: int, reason: str, figures: dict[str, object]
) -> Decision | None:
    """Set the forced flag for a command and make the transition; None if nothing changes."""
    if state == AUTO:
        if not b.forced:
            return None
        b.forced = False
        new = b.state
    elif state not in (OPEN, CLOSED, HALF_OPEN):
        raise ValueError(f"a breaker cannot be forced to {state!r}")
    elif b.forced and b.state == state:
        return None
    else:
        b.forced = True
        new = state
    return b._transition(new, at, reason, {**figures, "forced": b.forced})


class CustomerHolds:
    """Customers whose automatic shipping is paused, until an operator or the expiry releases them.

    A second hold for a held customer keeps the first hold and its expiry and only
    records the extra order. Call `advance(now)` before `hold`/`release` at `now`,
    so that an expired hold is released (and says so) before anything else.
    """

    __slots__ = ("cfg", "due", "held")

    def __init__(self, cfg: CustomerHoldConfig) -> None:
        self.cfg = cfg
        self.held: dict[str, tuple[int, str, str, list[str]]] = {}  # at, reason, type, orders
        self.due: list[tuple[int, str]] = []  # heap of (expires, customer); stale ones skipped

    def is_held(self, customer_id: str, at_ms: int) -> bool:
        h = self.held.get(customer_id)
        return h is not None and at_ms < h[0] + self.cfg.expires_after

    def hold(
        self, customer_id: str, at_ms: int, reason: str, order_id: str, alert_type: str
    ) -> Decision | None:
        if self.is_held(customer_id, at_ms):
            orders = self.held[customer_id][3]
            if order_id not in orders and len(orders) < MAX_HELD_ORDERS:
                orders.append(order_id)
            return None
        figures = {"order_id": order_id, "alert_type": alert_type}
        return self._open(customer_id, at_ms, reason, alert_type, [order_id], figures)

    def hold_by_operator(
        self, customer_id: str, at_ms: int, reason: str, figures: dict[str, object]
    ) -> Decision | None:
        """An operator's hold, expiring like any hold; None when the customer is held."""
        if self.is_held(customer_id, at_ms):
            return None
        return self._open(customer_id, at_ms, reason, "", [], figures)

    def _open(
        self,
        customer_id: str,
        at_ms: int,
        reason: str,
        alert_type: str,
        orders: list[str],
        figures: dict[str, object],
    ) -> Decision:
        expires = at_ms + self.cfg.expires_after
        self.held[customer_id] = (at_ms, reason, alert_type, orders)
        heapq.heappush(self.due, (expires, customer_id))
        figures = {**figures, "expires_at": expires}
        return Decision("customer", customer_id, HOLD, RELEASED, reason, PAUSE, figures, at_ms)

    def release(
        self,
        customer_id: str,
        at_ms: int,
        by: str,
        reason: str | None = None,
        figures: dict[str, object] | None = None,
    ) -> Decision | None:
        """An operator's release; None when the customer is not held.

        `reason` and `figures` (the command's) replace and extend the defaults.
        """
        if not self.is_held(customer_id, at_ms):
            return None
        d = self._release(customer_id, at_ms, reason or f"released by operator {by}")
        d.figures.update(figures or {})
        return d

    def advance(self, now_ms: int) -> list[Decision]:
        """Release, in expiry order, every hold that has expired by now_ms."""
        out = []
        while self.due and self.due[0][0] <= now_ms:
            expires, customer_id = heapq.heappop(self.due)
            h = self.held.get(customer_id)
            if h is not None and h[0] + self.cfg.expires_after == expires:
                out.append(self._release(customer_id, expires, "expired"))
        return out

    def _release(self, customer_id: str, at: int, reason: str) -> Decision:
        held_at, why, alert_type, orders = self.held.pop(customer_id)
        figures = {
            "held_at": held_at,
            "hold_reason": why,
            "alert_type": alert_type or None,  # None: an operator's hold
            "orders": orders,
        }
        return Decision("customer", customer_id, RELEASED, HOLD, reason, RESUME, figures, at)
