"""``/readyz``: the gateway is ready when it can produce claims and hear the stream's
answers: the broker answers and has the topics, the reply consumer and the outcome view
are current. The model service is not a dependency any more (the stream worker calls it).

The broker check costs a Kafka metadata request. Probes come from load balancers and
orchestrators every few seconds per replica, and ``/readyz`` is open (no key), so anyone
could make the gateway spend those calls in a loop. The answer is cached; one request
refreshes it while the others are served the previous answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from gateway.claim_producer import ClaimProducer

BROKER_TIMEOUT_S: Final = 2.0


class Fresh(Protocol):
    def fresh(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, bool]


class ReadinessProbe:
    def __init__(self, producer: ClaimProducer, consumers: Mapping[str, Fresh],
                 cache_s: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._producer = producer
        self._consumers = dict(consumers)
        self._cache_s = cache_s
        self._monotonic = monotonic
        self._refreshing = threading.Lock()
        self._last: dict[str, bool] | None = None
        self._checked_at = 0.0

    def check(self) -> Readiness:
        checks = dict(self._dependencies())
        for name, consumer in self._consumers.items():
            # Not cached: a flag and a clock read, and a stale consumer should show at once.
            checks[name] = consumer.fresh()
        return Readiness(all(checks.values()), checks)

    def _dependencies(self) -> dict[str, bool]:
        last = self._last
        if last is not None and self._monotonic() - self._checked_at < self._cache_s:
            return last
        if last is not None and not self._refreshing.acquire(blocking=False):
            return last  # another request is refreshing it right now
        if last is None:
            self._refreshing.acquire()
        try:
            self._last = {"broker": self._producer.ready(BROKER_TIMEOUT_S)}
            self._checked_at = self._monotonic()
            return self._last
        finally:
            self._refreshing.release()
