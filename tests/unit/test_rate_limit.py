"""TokenBucket: the gateway's 429 and its Retry-After come from here, with the clock passed in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state.rate_limit import TokenBucket


def test_burst_then_refusal_with_the_wait_for_one_token() -> None:
    bucket = TokenBucket(rate=10.0, burst=5, now=100.0)
    assert [bucket.take(100.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(100.0) == pytest.approx(0.1)  # one token at 10/s
    assert bucket.take(100.0) == pytest.approx(0.1)  # a refusal costs nothing
    assert bucket.take(100.05) == pytest.approx(0.05)  # half a token refilled


def test_slow_rate_wait_is_seconds() -> None:
    bucket = TokenBucket(rate=0.5, burst=1, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(2.0)
    assert bucket.take(1.5) == pytest.approx(0.5)
    assert bucket.take(2.0) == 0.0


def test_refill_over_time() -> None:
    bucket = TokenBucket(rate=4.0, burst=8, now=0.0)
    for _ in range(8):
        bucket.take(0.0)
    assert bucket.take(0.0) > 0
    assert bucket.take(0.25) == 0.0  # one token after 1/rate s
    assert bucket.take(0.25) > 0
    assert [bucket.take(1.25) for _ in range(4)] == [0.0] * 4  # four more after 1 s
    assert bucket.take(1.25) > 0


def test_never_more_than_burst_saved_up() -> None:
    bucket = TokenBucket(rate=1000.0, burst=3, now=0.0)
    granted = [bucket.take(3600.0) for _ in range(10)]  # an hour idle
    assert granted.count(0.0) == 3
    assert bucket.tokens <= bucket.burst


def test_clock_going_backwards_neither_refills_nor_breaks() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, now=50.0)
    assert bucket.take(50.0) == 0.0
    assert bucket.take(50.0) == 0.0
    assert bucket.take(10.0) == pytest.approx(1.0)  # an earlier time gives nothing back
    assert bucket.take(49.0) == pytest.approx(1.0)
    assert bucket.take(50.5) == pytest.approx(0.5)  # and time runs on from the latest seen
    assert bucket.take(51.0) == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0), (1, -5)])
def test_degenerate_buckets_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 1000),
    burst=st.integers(1, 50),
    steps=st.lists(st.floats(-5, 5, allow_nan=False), max_size=200),
)
def test_grants_never_exceed_burst_plus_refill(rate: float, burst: int, steps: list[float]) -> None:
    """Over any clock (jumps back included), grants <= burst + rate * (time moved forward)."""
    bucket = TokenBucket(rate, burst, 0.0)
    now = latest = 0.0
    granted = 0
    for step in steps:
        now += step
        latest = max(latest, now)
        wait = bucket.take(now)
        assert wait >= 0.0
        assert 0.0 <= bucket.tokens <= burst
        if wait == 0.0:
            granted += 1
        else:
            assert wait <= 1.0 / rate + 1e-9
        assert granted <= burst + rate * latest + 1e-6
