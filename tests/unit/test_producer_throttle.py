"""The token bucket keeps the average rate even when every wait oversleeps."""

from __future__ import annotations

import pytest

from producer.throttle import TokenBucket, burst_for_rate, chunk_for_rate


def simulate(rate: float, total: int, oversleep_s: float) -> float:
    """Send ``total`` claims in chunks through a bucket with a fake clock whose every sleep
    lasts ``oversleep_s`` longer than asked (as real sleeps do); returns the elapsed time."""
    now = 0.0
    chunk = chunk_for_rate(rate)
    bucket = TokenBucket.full(rate, burst_for_rate(rate), now)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        delay = bucket.take(n, now)
        if delay > 0:
            now += delay + oversleep_s
            continue
        sent += n
    return now


@pytest.mark.parametrize("rate", [5.0, 100.0, 2_000.0, 50_000.0])
@pytest.mark.parametrize("oversleep_s", [0.0, 0.002])
def test_average_rate_is_kept(rate: float, oversleep_s: float) -> None:
    total = int(rate * 20)  # twenty seconds worth of claims
    elapsed = simulate(rate, total, oversleep_s)
    # Never faster than the rate, beyond the first burst.
    assert elapsed >= (total - burst_for_rate(rate)) / rate - 1e-6
    # Sleeping after each message would drift by the oversleep every time; the bucket keeps
    # what a late wake-up earned, so the error does not accumulate.
    assert elapsed <= total / rate + oversleep_s + 1e-6


def test_bucket_refills_up_to_its_burst() -> None:
    bucket = TokenBucket.full(rate=10, burst=5, now=0.0)
    assert bucket.take(5, 0.0) == 0.0
    assert bucket.take(1, 0.0) == pytest.approx(0.1)
    assert bucket.take(5, 100.0) == 0.0  # a long pause saves up no more than the burst
    assert bucket.take(1, 100.0) == pytest.approx(0.1)


def test_bucket_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket.full(rate=0, burst=1, now=0.0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket.full(rate=1, burst=0.5, now=0.0)
    with pytest.raises(ValueError, match="at once"):
        TokenBucket.full(rate=1, burst=2, now=0.0).take(3, 0.0)


def test_chunk_sizes() -> None:
    assert chunk_for_rate(None) == 10_000
    assert chunk_for_rate(0.5) == 1
    assert chunk_for_rate(1000) == 20
    assert chunk_for_rate(10_000_000) == 10_000
