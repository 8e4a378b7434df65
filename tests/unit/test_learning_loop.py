"""The learning loop's next step, from what it has observed (pure), and its rounds."""

from __future__ import annotations

import pytest

from claimflow.learning_loop import (
    LearningLoop,
    LearnSettings,
    LoopResult,
    Observed,
    Step,
    next_round_labels,
    next_step,
)


@pytest.mark.parametrize(("seen", "step"), [
    (Observed(), Step.WAIT_LABELS),
    (Observed(labels=199), Step.WAIT_LABELS),
    (Observed(labels=200), Step.TRAIN),
    (Observed(labels=5_000), Step.TRAIN),
    (Observed(labels=200, challenger="2"), Step.WAIT_SHADOW),
    (Observed(labels=200, challenger="2", shadow_labelled=19), Step.WAIT_SHADOW),
    (Observed(labels=200, challenger="2", shadow_labelled=20), Step.PROMOTE),
    # Once trained, more labels never train again: the loop runs once.
    (Observed(labels=10_000, challenger="2", shadow_labelled=3), Step.WAIT_SHADOW),
])
def test_next_step(seen: Observed, step: Step) -> None:
    assert next_step(seen, min_labels=200, min_shadow_labelled=20) is step



class ScriptedLoop(LearningLoop):
    """The rounds of the real loop around scripted round outcomes (no broker, no MLflow)."""

    def __init__(self, rounds: int, outcomes: list[LoopResult]) -> None:
        self.printed: list[str] = []
        super().__init__(LearnSettings(rounds=rounds, min_labels=200), self.printed.append)
        self.outcomes = iter(outcomes)
        self.asked: list[int] = []

    def run_round(self, min_labels: int, deadline: float) -> LoopResult:
        self.asked.append(min_labels)
        return next(self.outcomes)


def refused(labels: int) -> LoopResult:
    return LoopResult("2", promoted=False, message="worse: ...", labels=labels)


def test_a_refusal_starts_another_round_on_twice_the_labels() -> None:
    promoted = LoopResult("4", promoted=True, message="better", labels=1_100)
    loop = ScriptedLoop(3, [refused(250), refused(520), promoted])
    assert loop.run() == promoted
    assert loop.asked == [200, 500, 1_040]
    assert loop.printed == [
        "[learn] round 2 of 3: a new challenger once 500 closing labels are in",
        "[learn] round 3 of 3: a new challenger once 1040 closing labels are in"]


def test_the_loop_stops_at_the_first_promotion_or_after_its_last_round() -> None:
    first = LoopResult("2", promoted=True, message="better", labels=250)
    assert ScriptedLoop(3, [first]).run() == first
    last = ScriptedLoop(2, [refused(250), refused(600)])
    assert last.run() == refused(600)
    assert last.asked == [200, 500]
    once = ScriptedLoop(1, [refused(250)])
    assert once.run() == refused(250)
    assert once.printed == []


def test_the_next_round_waits_for_twice_the_labels_of_the_refused_one() -> None:
    assert next_round_labels(refused(250), 200) == 500
    assert next_round_labels(refused(0), 200) == 400  # a result without a count
