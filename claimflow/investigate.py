"""Simulated investigators, the pure part: what a simulated team answers and when.

Time is wall-clock seconds (``time.time()``), so that a demo shows a working team in
minutes:

- a **simulated day** lasts ``day_s`` wall-clock seconds; day *k* is
  ``[start + k * day_s, start + (k + 1) * day_s)`` where ``start`` is when the team began;
- the team answers at most ``per_day`` claims per simulated day; capacity left at the end of
  a day lapses (a team does not work twice as hard tomorrow);
- a claim becomes answerable ``delay_days`` simulated days after it entered the queue, that
  is after its decision's ``decided_at`` (the decision says when; re-reading the queue after
  a restart gives the same due times);
- answerable claims are answered oldest-due first, as capacity allows.

The answer comes from the ground truth the producer attached to the claim (Kafka headers
``is_anomaly`` and ``pattern``): an anomaly is ``fraud``, anything else ``legitimate``, and
the note names the pattern. The shell (:mod:`claimflow.investigate_run`) reads the topics
and writes the labels.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from schemas import Decision, Disposition

INVESTIGATOR: Final = "simulated"
TRUTH_HEADER: Final = "is_anomaly"
PATTERN_HEADER: Final = "pattern"


@dataclass(frozen=True, slots=True)
class Truth:
    """The producer's label of one claim."""

    is_anomaly: bool
    pattern: str


Headers = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None]


def truth_from_headers(headers: Headers | None) -> Truth | None:
    """The ground truth in a claim message's headers; None when they do not carry it."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or []
    values = {key: value.encode() if isinstance(value, str) else value for key, value in pairs}
    flag = values.get(TRUTH_HEADER)
    if flag not in (b"true", b"false"):
        return None
    pattern = (values.get(PATTERN_HEADER) or b"").decode("utf-8", "replace")
    return Truth(flag == b"true", pattern)


def answer(truth: Truth) -> tuple[Disposition, str]:
    """What a team that knows the truth decides, and its note."""
    if truth.is_anomaly:
        return "fraud", f"ground truth: {truth.pattern or 'anomaly'}"
    return "legitimate", "ground truth: normal claim"


@dataclass
class DailyCapacity:
    """``per_day`` answers per simulated day of ``day_s`` seconds, from ``start``."""

    per_day: int
    day_s: float
    start: float
    _day: int = field(default=-1, init=False)
    _used: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.per_day < 0 or self.day_s <= 0:
            raise ValueError("per_day must be >= 0 and day_s > 0")

    def day_of(self, now: float) -> int:
        return max(0, math.floor((now - self.start) / self.day_s))

    def left(self, now: float) -> int:
        """Answers still allowed in the day that contains ``now``."""
        day = self.day_of(now)
        return self.per_day - (self._used if day == self._day else 0)

    def take(self, now: float) -> bool:
        """Use one answer of today's capacity; False when today's is spent."""
        day = self.day_of(now)
        if day != self._day:
            self._day, self._used = day, 0
        if self._used >= self.per_day:
            return False
        self._used += 1
        return True

    def next_day_at(self, now: float) -> float:
        return self.start + (self.day_of(now) + 1) * self.day_s


@dataclass
class Backlog:
    """Decisions waiting for an answer, by due time (``decided_at`` + the delay)."""

    delay_s: float
    _heap: list[tuple[float, int, Decision]] = field(default_factory=list, init=False)
    _order: itertools.count[int] = field(default_factory=itertools.count, init=False)
    _queued: set[str] = field(default_factory=set, init=False)

    def add(self, decision: Decision) -> bool:
        """Queue a decision (a claim already queued is not queued twice)."""
        if decision.claim_id in self._queued:
            return False
        self._queued.add(decision.claim_id)
        due = decision.decided_at.timestamp() + self.delay_s
        heapq.heappush(self._heap, (due, next(self._order), decision))
        return True

    def pop_due(self, now: float) -> Decision | None:
        """The oldest-due decision whose time has come, or None."""
        if not self._heap or self._heap[0][0] > now:
            return None
        _, _, decision = heapq.heappop(self._heap)
        self._queued.discard(decision.claim_id)
        return decision

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)


def plan(backlog: Backlog, capacity: DailyCapacity, now: float,
         truth_of: dict[str, Truth], closed: set[str]) -> tuple[
             list[tuple[Decision, Truth]], list[Decision]]:
    """Take the answers a team gives at ``now``: due decisions, oldest first, while today's
    capacity lasts. Returns (answers, due decisions whose truth is not known yet); claims
    that already have a label are dropped without using capacity."""
    answers: list[tuple[Decision, Truth]] = []
    unknown: list[Decision] = []
    while capacity.left(now) > 0:
        decision = backlog.pop_due(now)
        if decision is None:
            break
        if decision.claim_id in closed:
            continue
        truth = truth_of.get(decision.claim_id)
        if truth is None:
            unknown.append(decision)
            continue
        capacity.take(now)
        answers.append((decision, truth))
    return answers, unknown
