"""The demo stack's live summary (``python -m claimflow.stack summary``, one of the processes
``claimflow up`` runs): the URLs once they answer, then one line per interval with the
approved / investigated / dead-lettered rates read from the outcome topics (read_committed)."""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from claimflow.logging_setup import configure_logging
from claimflow.stack_plan import (
    Endpoint,
    StackSettings,
    endpoints,
    url_banner,
)
from claimflow.stack_procs import endpoint_answers, mlflow_tracking_server


@dataclass
class Counts:
    approved: int = 0
    investigated: int = 0
    deadlettered: int = 0

    def minus(self, other: Counts) -> Counts:
        return Counts(self.approved - other.approved, self.investigated - other.investigated,
                      self.deadlettered - other.deadlettered)

    def copy(self) -> Counts:
        return Counts(self.approved, self.investigated, self.deadlettered)


def summary_line(total: Counts, delta: Counts, seconds: float) -> str:
    per_s = [n / seconds if seconds > 0 else 0.0
             for n in (delta.approved, delta.investigated, delta.deadlettered)]
    return (f"approved {per_s[0]:,.1f}/s  investigated {per_s[1]:,.1f}/s  "
            f"dead-lettered {per_s[2]:,.1f}/s  |  totals {total.approved:,} / "
            f"{total.investigated:,} / {total.deadlettered:,}")


def waiting_line(pending: Sequence[Endpoint], elapsed_s: float) -> str:
    line = f"waiting for the first decision ({elapsed_s:.0f} s since start)"
    if pending:
        line += f"; not answering yet: {', '.join(e.name for e in pending)}"
    return line


@click.command("summary")
@click.option("--interval", "interval_s", type=click.FloatRange(min=0, min_open=True),
              default=5.0, show_default=True, help="Seconds between summary lines.")
@click.option("--started-at", type=float, default=None,
              help="Epoch seconds `claimflow up` started (for time-to-first-decision).")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Exit 0 after S seconds (ends a bounded `up` run).")
def summary_command(interval_s: float, started_at: float | None, duration_s: float | None) -> None:
    """Print the URLs once they answer, then a live approved / investigated / dead-lettered
    rate read from the outcome topics (read_committed)."""
    configure_logging("WARNING")
    settings = StackSettings()
    run_summary(settings, interval_s=interval_s, started_at=started_at or time.time(),
                duration_s=duration_s)


def run_summary(
    settings: StackSettings, *, interval_s: float, started_at: float, duration_s: float | None
) -> None:
    from confluent_kafka import Consumer

    from scorer.worker_settings import ScorerSettings

    scorer = ScorerSettings()
    topics = {scorer.approved_topic: "approved", scorer.investigate_topic: "investigated",
              scorer.deadletter_topic: "deadlettered"}
    stop = install_summary_stop()
    consumer = Consumer({
        "bootstrap.servers": scorer.kafka_bootstrap_servers,
        "group.id": f"claimflow-stack-summary-{uuid.uuid4().hex[:12]}",
        "isolation.level": "read_committed",
        "auto.offset.reset": "latest",
        "enable.auto.commit": False,
        "logger": logging.getLogger("claimflow.stack.librdkafka"),
    })
    consumer.subscribe(list(topics))
    loop = SummaryLoop(settings, topics, started_at=started_at, interval_s=interval_s)
    end = None if duration_s is None else time.monotonic() + duration_s
    try:
        while not stop() and (end is None or time.monotonic() < end):
            loop.count(consumer.consume(num_messages=1000, timeout=0.2))
            loop.tick()
    finally:
        consumer.close()
        loop.close()
    click.echo(f"final: {summary_line(loop.total, loop.total, time.monotonic() - loop.began)}")


def install_summary_stop() -> Callable[[], bool]:
    stopped: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        stopped.append(signum)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return lambda: bool(stopped)


class SummaryLoop:
    """Counts outcome messages, announces readiness and prints one line per interval."""

    def __init__(self, settings: StackSettings, topics: Mapping[str, str], *,
                 started_at: float, interval_s: float) -> None:
        import httpx

        self.topics = topics
        self.started_at = started_at
        self.interval_s = interval_s
        self.began = time.monotonic()
        self.total = Counts()
        self.last = Counts()
        self.last_at = self.began
        self.first_decision_reported = False
        self.endpoints = endpoints(settings, mlflow_tracking_server())
        self.pending = list(self.endpoints)
        self.next_probe = 0.0
        self.http = httpx.Client(timeout=1.0)

    def count(self, messages: Sequence[Any]) -> None:
        for msg in messages:
            if msg.error() is not None:
                continue
            field = self.topics.get(msg.topic())
            if field is None:
                continue
            setattr(self.total, field, getattr(self.total, field) + 1)
            if not self.first_decision_reported:
                self.first_decision_reported = True
                _kind, ts_ms = msg.timestamp()
                at = ts_ms / 1000 if ts_ms > 0 else time.time()
                click.echo(f"first decision {at - self.started_at:.1f} s after "
                           "`claimflow up` started")

    def tick(self) -> None:
        now = time.monotonic()
        if self.pending and now >= self.next_probe:
            self.next_probe = now + 1.0
            self.announce_ready()
        if now - self.last_at >= self.interval_s:
            if self.first_decision_reported:
                click.echo(summary_line(self.total, self.total.minus(self.last),
                                        now - self.last_at))
            else:
                click.echo(waiting_line(self.pending, time.time() - self.started_at))
            self.last, self.last_at = self.total.copy(), now

    def announce_ready(self) -> None:
        ready = [e for e in self.pending if endpoint_answers(self.http, e)]
        for endpoint in ready:
            click.echo(f"ready: {endpoint.name} {endpoint.url} "
                       f"({time.time() - self.started_at:.1f} s after start)")
        self.pending = [e for e in self.pending if e not in ready]
        if ready and not self.pending:
            click.echo("all services answer:\n" + url_banner(self.endpoints))

    def close(self) -> None:
        self.http.close()
