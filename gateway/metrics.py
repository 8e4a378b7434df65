"""Prometheus metrics of the gateway, on a registry of their own (one per app, so several
apps in one process, as in tests, never collide).

Under ``claimflow gateway`` the app runs in several worker processes: prometheus_client's
multiprocess mode then keeps every worker's values in files of a shared folder, and the
exposition adds them up, so a scrape sees the whole gateway whichever worker answers it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import values as prometheus_values
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None,
                 multiprocess_dir: Path | None = None, cache_s: float = 1.0) -> None:
        """``multiprocess_dir``: the folder in ``PROMETHEUS_MULTIPROC_DIR``, which must have
        been set before prometheus_client was first imported in this process. ``cache_s``:
        how long a merged exposition is reused (multiprocess mode only)."""
        self._cache_s = cache_s
        self._cache_lock = threading.Lock()
        self._cached: tuple[float, bytes] | None = None
        if multiprocess_dir is not None and prometheus_values.ValueClass is \
                prometheus_values.MutexValue:
            raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR "
                               "was set: its values would stay in this process")
        self._multiprocess_dir = multiprocess_dir
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "gateway_requests", "HTTP requests answered.", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_seconds", "Time to answer an HTTP request.", ["method", "route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.decisions = Counter(
            "gateway_decisions", "Stream decisions returned to gateway clients.",
            ["decision", "replayed"],
            registry=self.registry,
        )
        self.undecided = Counter(
            "gateway_undecided", "Submitted claims answered without a decision: no decision "
            "by the deadline (202), dead-lettered by the stream, or decided on the stream for "
            "another payload.", ["cause"], registry=self.registry,
        )
        self.unavailable = Counter(
            "gateway_unavailable", "503 answers by cause.", ["cause"], registry=self.registry,
        )
        self.view_stored = Counter(
            "gateway_view_messages", "Decision messages read by the outcome view.", ["result"],
            registry=self.registry,
        )

    def on_view_stored(self, inserted: int, duplicates: int, invalid: int) -> None:
        self.view_stored.labels("inserted").inc(inserted)
        self.view_stored.labels("duplicate").inc(duplicates)
        self.view_stored.labels("invalid").inc(invalid)

    def install(self, app: Flask) -> None:
        """Time every request; label by route pattern (bounded), never by raw path."""

        @app.before_request
        def _start_timer() -> None:
            g.started = time.perf_counter()

        @app.after_request
        def _observe(response: Response) -> Response:
            started = g.get("started")
            route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            method = request.method if request.method in KNOWN_METHODS else "other"
            self.requests.labels(method, route, str(response.status_code)).inc()
            if started is not None:
                self.latency.labels(method, route).observe(
                    time.perf_counter() - started)
            return response

    def exposition(self) -> Response:
        if self._multiprocess_dir is None:
            return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)
        return Response(self._merged(), content_type=CONTENT_TYPE_LATEST)

    def _merged(self) -> bytes:
        """Every worker's value files merged. That reads and parses every file, and /metrics
        is open, so scrapes within ``cache_s`` share one merge (one merge at a time)."""
        with self._cache_lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._cache_s:
                return self._cached[1]
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
            text = generate_latest(registry)
            self._cached = (now, text)
            return text
