"""``/readyz``: what the gateway depends on, checked at most once per ``cache_s``.

A check costs a model-service call and a Kafka metadata request. Probes come from load
balancers and orchestrators every few seconds per replica, and ``/readyz`` is open (no
key), so anyone could make the gateway spend those calls in a loop. The answer is cached;
one request refreshes it while the others are served the previous answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.outcome_consumer import OutcomeConsumer
from gateway.publisher import DecisionPublisher
from gateway.service import Scorer

BROKER_TIMEOUT_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, bool]


class ReadinessProbe:
    def __init__(self, scorer: Scorer, publisher: DecisionPublisher,
                 consumer: OutcomeConsumer | None, cache_s: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._scorer = scorer
        self._publisher = publisher
        self._consumer = consumer
        self._cache_s = cache_s
        self._monotonic = monotonic
        self._refreshing = threading.Lock()
        self._last: dict[str, bool] | None = None
        self._checked_at = 0.0

    def check(self) -> Readiness:
        checks = dict(self._dependencies())
        if self._consumer is not None:
            # Not cached: a flag and a clock read, and a stale view should show at once.
            checks["outcome_view"] = self._consumer.fresh()
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
            self._last = {
                "model_service": self._scorer.ready(),
                "broker": self._publisher.ready(BROKER_TIMEOUT_S),
            }
            self._checked_at = self._monotonic()
            return self._last
        finally:
            self._refreshing.release()
