"""The learning loop's next step, from what it has observed (pure)."""

from __future__ import annotations

import pytest

from claimflow.learning_loop import Observed, Step, next_step


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
