"""Simulated investigators, the pure part: ground truth from headers, the answer, daily
capacity and the due-time backlog."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from claimflow.investigate import (
    Backlog,
    DailyCapacity,
    Truth,
    answer,
    plan,
    truth_from_headers,
)
from schemas import Decision
from tests.unit.gateway_fakes import claim_body

T0 = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
START = T0.timestamp()


def decision(claim_id: str, after_s: float = 0.0) -> Decision:
    return Decision.model_validate_json(json.dumps({
        "claim": claim_body(claim_id=claim_id), "decision": "investigate",
        "anomaly_score": 0.7, "threshold": 0.5,
        "model": {"name": "claim-anomaly", "version": "1"}, "reasons": [],
        "decided_at": (T0 + timedelta(seconds=after_s)).isoformat(),
        "source": {"kind": "stream", "topic": "claims", "partition": 0, "offset": 1},
    }))


@pytest.mark.parametrize(
    ("headers", "truth"),
    [
        ([("is_anomaly", b"true"), ("pattern", b"upcoding")], Truth(True, "upcoding")),
        ([("is_anomaly", b"false"), ("pattern", b"")], Truth(False, "")),
        ({"is_anomaly": "true", "pattern": "duplicate"}, Truth(True, "duplicate")),
        ([("is_anomaly", b"true")], Truth(True, "")),
        ([("is_anomaly", b"yes")], None),
        ([("pattern", b"upcoding")], None),
        ([], None),
        (None, None),
    ],
)
def test_truth_from_headers(headers: object, truth: Truth | None) -> None:
    assert truth_from_headers(headers) == truth  # type: ignore[arg-type]


def test_answer_follows_the_truth_and_names_the_pattern() -> None:
    assert answer(Truth(True, "phantom_billing")) == ("fraud", "ground truth: phantom_billing")
    assert answer(Truth(True, "")) == ("fraud", "ground truth: anomaly")
    assert answer(Truth(False, "")) == ("legitimate", "ground truth: normal claim")


def test_capacity_is_per_simulated_day_and_lapses() -> None:
    cap = DailyCapacity(per_day=2, day_s=10.0, start=START)
    assert [cap.take(START + s) for s in (0, 1, 2)] == [True, True, False]
    assert cap.left(START + 9.99) == 0
    assert cap.next_day_at(START + 9.99) == START + 10
    # Day 1 starts fresh; day 0's spent capacity does not matter, unused capacity lapses.
    assert cap.left(START + 10) == 2
    assert cap.take(START + 10)
    assert cap.left(START + 35) == 2  # day 3: days 1 and 2 are gone
    assert cap.day_of(START - 5) == 0


def test_zero_capacity_answers_nothing() -> None:
    cap = DailyCapacity(per_day=0, day_s=1.0, start=START)
    assert not cap.take(START)
    with pytest.raises(ValueError, match="day_s"):
        DailyCapacity(per_day=1, day_s=0, start=START)


def test_backlog_releases_decisions_after_the_delay_oldest_first() -> None:
    backlog = Backlog(delay_s=5.0)
    assert backlog.add(decision("C-2", after_s=2))
    assert backlog.add(decision("C-1", after_s=1))
    assert not backlog.add(decision("C-1", after_s=1))  # already queued
    assert backlog.pop_due(START + 5.9) is None
    assert backlog.next_due() == START + 6
    first = backlog.pop_due(START + 7)
    second = backlog.pop_due(START + 7)
    assert first is not None
    assert second is not None
    assert [first.claim_id, second.claim_id] == ["C-1", "C-2"]
    assert backlog.pop_due(START + 100) is None
    assert len(backlog) == 0


def test_plan_answers_due_claims_within_todays_capacity() -> None:
    backlog = Backlog(delay_s=0.0)
    for i in range(5):
        backlog.add(decision(f"C-{i}", after_s=i))
    cap = DailyCapacity(per_day=2, day_s=100.0, start=START)
    truth = {f"C-{i}": Truth(i % 2 == 0, "upcoding" if i % 2 == 0 else "") for i in range(5)}
    answers, unknown = plan(backlog, cap, START + 50, truth, closed=set())
    assert [(d.claim_id, t.is_anomaly) for d, t in answers] == [("C-0", True), ("C-1", False)]
    assert unknown == []
    assert plan(backlog, cap, START + 60, truth, closed=set()) == ([], [])  # spent today
    answers, _ = plan(backlog, cap, START + 100, truth, closed=set())  # day 1
    assert [d.claim_id for d, _ in answers] == ["C-2", "C-3"]
    assert len(backlog) == 1


def test_plan_skips_labelled_claims_and_reports_unknown_truth_without_using_capacity() -> None:
    backlog = Backlog(delay_s=0.0)
    for name in ("C-done", "C-unknown", "C-known"):
        backlog.add(decision(name))
    cap = DailyCapacity(per_day=1, day_s=100.0, start=START)
    answers, unknown = plan(backlog, cap, START + 1, {"C-known": Truth(False, "")},
                            closed={"C-done"})
    assert [d.claim_id for d, _ in answers] == ["C-known"]
    assert [d.claim_id for d in unknown] == ["C-unknown"]
    assert cap.left(START + 1) == 0


def test_claims_not_yet_due_wait() -> None:
    backlog = Backlog(delay_s=30.0)
    backlog.add(decision("C-1"))
    cap = DailyCapacity(per_day=10, day_s=100.0, start=START)
    assert plan(backlog, cap, START + 29, {"C-1": Truth(True, "x")}, set()) == ([], [])
    answers, _ = plan(backlog, cap, START + 30, {"C-1": Truth(True, "x")}, set())
    assert [d.claim_id for d, _ in answers] == ["C-1"]
