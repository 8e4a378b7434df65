"""Building blocks the streaming drills (1-4) share: a stream under way, a progress sampler,
and the final exactly-once verdict read from the read_committed view."""

from __future__ import annotations

import itertools
import logging
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.drill_common import (
    DrillContext,
    ExactlyOnceReport,
    Outcomes,
    check_exactly_once,
    input_claim_ids,
    read_outcomes,
    throughput_windows,
    wait_until,
)
from bench.stack_harness import ManagedProcess, Topics

logger = logging.getLogger(__name__)


@dataclass
class Stream:
    """One drill's topics, scorer group and producer."""

    ctx: DrillContext
    label: str
    rows: int
    rate: float
    partitions: int = 6
    topics: Topics = field(init=False)
    group: str = field(init=False)
    producer: ManagedProcess | None = None
    workers: list[ManagedProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topics = self.ctx.stack.create_topics(Topics.fresh(self.label), self.partitions)
        self.group = f"{self.label}-{uuid.uuid4().hex[:8]}"

    def worker_prefix(self, name: str) -> str:
        """A worker's transactional.id prefix: the same name after a restart fences the
        killed predecessor (its open transaction is aborted at once)."""
        return f"{self.group}-{name}"

    def start_scorer(self, name: str) -> ManagedProcess:
        worker = self.ctx.stack.start_scorer(f"{self.label}-{name}", self.topics, self.group,
                                             self.ctx.model.url,
                                             instance_prefix=self.worker_prefix(name))
        self.workers.append(worker)
        return worker

    def start_producer(self) -> ManagedProcess:
        self.producer = self.ctx.stack.start_producer(
            f"{self.label}-producer", self.topics.claims, self.rows, seed=self.ctx.seed,
            rate=self.rate)
        return self.producer

    def committed(self) -> int:
        return self.ctx.progress(self.group, self.topics.claims).committed()

    def wait_committed(self, target: float, timeout_s: float,
                       watch: list[ManagedProcess] | None = None) -> float:
        """Until the group committed ``target`` input messages; components in ``watch``
        must stay alive meanwhile."""
        def reached() -> bool:
            for proc in watch or []:
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited ({proc.returncode}) on its own:\n"
                                       f"{proc.log_tail()}")
            return self.committed() >= target

        return wait_until(reached, timeout_s, interval_s=0.05, what=f"{target:.0f} committed")

    def finish(self, timeout_s: float, stall_s: float = 120.0) -> dict[str, Any]:
        """Producer done, scorer group caught up with the whole input.

        Fails early when the group committed nothing for ``stall_s`` although input waits:
        by the time a drill calls this, every fault is over and the workers must be moving.
        """
        assert self.producer is not None
        code = self.producer.wait(timeout_s)
        progress = {"count": self.committed(), "at": time.monotonic()}

        def stalled() -> bool:
            count = self.committed()
            now = time.monotonic()
            if count != progress["count"]:
                progress.update(count=count, at=now)
                return False
            return now - progress["at"] > stall_s

        def done() -> bool:
            if self.workers and not any(worker.alive() for worker in self.workers):
                # Nobody restarts workers here (a drill that does, starts a new one first).
                ends = "; ".join(
                    f"{w.name} exited {w.returncode}: "
                    + " | ".join(w.log_tail(4).splitlines())[-600:] for w in self.workers[-2:])
                raise RuntimeError(f"every scorer worker exited on its own "
                                   f"(committed {self.committed()} of {self.rows}): {ends}")
            if self.ctx.caught_up(self.group, self.topics.claims, expected=self.rows):
                return True
            if stalled():
                raise TimeoutError(f"no commit for {stall_s:.0f} s with input waiting")
            return False

        try:
            drain_s = wait_until(done, timeout_s, interval_s=0.2, what="scorer group caught up")
        except TimeoutError as exc:
            # Leave the evidence: where each live worker is stuck, in its log and here.
            stuck = []
            for worker in self.workers:
                if worker.alive():
                    worker.dump_stacks()
                    stack = [line.strip() for line in worker.log_tail(40).splitlines()
                             if line.strip().startswith("File ")][:6]
                    stuck.append(f"{worker.name} (log {worker.log_path}) stuck at: "
                                 + " <- ".join(stack))
            raise TimeoutError(f"{exc}; committed {self.committed()} of {self.rows}; "
                               + ("; ".join(stuck) or "no worker alive")) from exc
        return {"producer_exit": code, "drain_s": round(drain_s, 2)}

    def verify(self) -> tuple[list[str], Outcomes, ExactlyOnceReport]:
        """The ground truth (claim_ids in the input topic) against the stream's decisions."""
        bootstrap = self.ctx.stack.bootstrap
        sent = input_claim_ids(bootstrap, self.topics.claims)
        outcomes = read_outcomes(bootstrap, self.topics.decisions, self.topics.deadletter)
        stream_ids = [d.claim_id for d in outcomes.decisions if d.source.kind == "stream"]
        return sent, outcomes, check_exactly_once(sent, stream_ids)

    def verdict_checks(self, sent: list[str], outcomes: Outcomes,
                       exactly: ExactlyOnceReport) -> dict[str, bool]:
        return {
            "all_claims_sent": len(sent) == self.rows == len(set(sent)),
            "exactly_once_read_committed": exactly.ok,
            "no_dead_letters": not outcomes.dead_letters,
            "outputs_keep_their_contract": not outcomes.invalid
            and outcomes.key_mismatches == 0,
        }


class Sampler:
    """Samples the group's committed count in the background: (seconds, committed)."""

    def __init__(self, stream: Stream, interval_s: float = 0.2) -> None:
        self.stream = stream
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        # (seconds, end offsets - committed): what is produced but not yet decided.
        self.lags: list[tuple[float, int]] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        # Its own watch: the drill's thread keeps using the context's.
        from bench.drill_common import GroupProgress

        self._progress = GroupProgress(stream.ctx.stack.bootstrap, stream.group,
                                       stream.topics.claims)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _run(self) -> None:
        while not self._stop.is_set():
            count = self._progress.committed()
            if count >= 0:
                now = self.now()
                self.samples.append((now, count))
                end = self._end()
                if end is not None:
                    self.lags.append((now, max(end - count, 0)))
            self._stop.wait(self.interval_s)

    def _end(self) -> int | None:
        end = self._progress.end()
        return None if end < 0 else end  # -1: the broker cannot answer right now

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join(timeout=30)
        self._progress.close()
        return self.samples

    def rates(self, window_s: float = 1.0) -> list[tuple[float, float]]:
        return throughput_windows(list(self.samples), window_s)


def steady_rate(rates: list[tuple[float, float]], start: float, end: float) -> float | None:
    """Median committed rate between two moments (None without samples)."""
    window = [r for t, r in rates if start <= t <= end]
    return statistics.median(window) if window else None


def drained_at(lags: Sequence[tuple[float, int]], after: float, normal_lag: int
               ) -> float | None:
    """First moment after ``after`` at which the lag was back to ``normal_lag`` (the lag of
    the steady stream): the backlog of an outage drained, not merely commits bursting."""
    for t, lag in lags:
        if t > after and lag <= normal_lag:
            return t
    return None


def normal_lag(lags: Sequence[tuple[float, int]], start: float, end: float) -> int | None:
    """The highest lag of a steady stream between two moments (what a batch in flight is)."""
    window = [lag for t, lag in lags if start <= t <= end]
    return max(window) if window else None


def first_time(rates: list[tuple[float, float]], after: float, at_least: float
               ) -> float | None:
    """First moment after ``after`` at which the windowed rate reached ``at_least``."""
    for t, rate in rates:
        if t >= after and rate >= at_least:
            return t
    return None


def first_progress(samples: list[tuple[float, int]], after: float,
                   base: int | None = None) -> float | None:
    """First moment after ``after`` at which the committed count went above ``base``
    (default: the last count sampled before ``after``)."""
    if base is None:
        before = [c for t, c in samples if t <= after]
        base = before[-1] if before else 0
    for t, c in samples:
        if t > after and c > base:
            return t
    return None


def steady_after(samples: list[tuple[float, int]], after: float, gap_s: float = 2.0,
                 base: int | None = None) -> float | None:
    """The moment after ``after`` from which the committed count kept rising, with no pause
    longer than ``gap_s``, until it reached its final value: when a recovering worker was
    really back (a first commit may still be followed by another stall). None when it never
    rose after ``after`` above ``base`` (default: the highest count sampled before)."""
    final = max((c for _, c in samples), default=0)
    if base is None:
        base = max((c for t, c in samples if t <= after), default=0)
    rises = []  # moments the count went up, after ``after``, before it was final
    last = base
    for t, c in samples:
        if t > after and c > last:
            rises.append(t)
        last = max(last, c)
        if t > after and c >= final:
            break
    if not rises:
        return None
    steady = rises[0]
    for earlier, later in itertools.pairwise(rises):
        if later - earlier > gap_s:
            steady = later
    return steady
