"""A token bucket: a steady average rate without the drift of sleeping after every message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TOKEN_EPSILON: Final = 1e-9


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. Time is passed in (``now``,
    seconds from a monotonic clock), so the bucket is pure and testable."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        return cls(rate=rate, burst=burst, tokens=burst, updated=now)

    def take(self, n: int, now: float) -> float:
        """Take ``n`` tokens if they are there and return 0; otherwise take nothing and return
        how long to wait before they will be."""
        if n > self.burst:
            raise ValueError(f"cannot take {n} tokens at once from a bucket of {self.burst}")
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= n - TOKEN_EPSILON:  # refills land a rounding error short
            self.tokens = max(0.0, self.tokens - n)
            return 0.0
        return (n - self.tokens) / self.rate


def chunk_for_rate(rate: float | None, unthrottled: int = 10_000) -> int:
    """Records handed to librdkafka per step: ~50 steps a second when throttled, so the
    stream is smooth and a Ctrl-C is seen quickly."""
    if rate is None:
        return unthrottled
    return max(1, min(unthrottled, int(rate / 50)))


def burst_for_rate(rate: float) -> float:
    """Room for two chunks or 0.1 s of claims: what a late wake-up earns is kept, not lost
    (a bucket only one chunk deep would drop it and the rate would sag by the oversleep)."""
    return max(2.0 * chunk_for_rate(rate), 0.1 * rate)
