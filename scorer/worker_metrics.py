"""Prometheus metrics of one stream-worker process (``claimflow_scorer_*``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from schemas import ScoreAnswer, ScoreResult
from scorer.routing import Batch

logger = logging.getLogger(__name__)

BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 200, 500, 1000, 2000, 5000, 10_000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class WorkerMetrics:
    """Prometheus metrics of one worker process (its own registry: no global state)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        prefix = "claimflow_scorer"
        self.consumed = Counter(f"{prefix}_consumed", "Messages consumed.", registry=r)
        self.approved = Counter(f"{prefix}_approved", "Claims approved.", registry=r)
        self.investigated = Counter(f"{prefix}_investigated", "Claims flagged.", registry=r)
        self.dead_lettered = Counter(f"{prefix}_dead_lettered", "Messages set aside.", registry=r)
        self.model_failures = Counter(
            f"{prefix}_model_unavailable", "Model-service calls that failed.", registry=r
        )
        self.aborted = Counter(f"{prefix}_transactions_aborted", "Aborted batches.", registry=r)
        self.batch_size = Histogram(
            f"{prefix}_batch_size", "Messages per batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            f"{prefix}_batch_latency_seconds",
            "From consume to committed transaction.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            f"{prefix}_model_call_seconds", "Model-service call.", buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_written = Counter(
            f"{prefix}_shadow_scores", "ShadowScore records committed (champion beside "
            "challenger).", registry=r,
        )
        self.shadow_missing = Counter(
            f"{prefix}_shadow_missing", "Decided claims without a ShadowScore although shadow "
            "answers were asked for, by reason (no_challenger is not a failure).", ["reason"],
            registry=r,
        )
        self.lag = Gauge(
            f"{prefix}_consumer_lag", "Messages not yet processed.", ["topic", "partition"],
            registry=r,
        )

    def committed(
        self, batch: Batch, results: Sequence[ScoreAnswer], dead_lettered: int, started: float
    ) -> None:
        decided = [r for r in results if isinstance(r, ScoreResult)]
        flagged = sum(1 for result in decided if result.decision == "investigate")
        self.consumed.inc(batch.consumed)
        self.investigated.inc(flagged)
        self.approved.inc(len(decided) - flagged)
        self.dead_lettered.inc(dead_lettered)
        self.batch_size.observe(batch.consumed)
        self.batch_latency.observe(time.perf_counter() - started)

    def shadow_committed(self, written: int, missing: dict[str, int]) -> None:
        self.shadow_written.inc(written)
        for reason, n in missing.items():
            self.shadow_missing.labels(reason).inc(n)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
        logger.info("metrics on http://%s:%d/metrics", host, port)
