"""The supervised family's pure parts: threshold, label join, training on labelled claims."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from schemas.decision import ModelRef
from schemas.label import AnsweredDecision, Label
from tests.v2_factory import v2_claims, write_jsonl
from trainer.data import DataError
from trainer.jsonl import load_jsonl
from trainer.supervised import (
    SupervisedParams,
    budget_threshold,
    join_labels,
    latest_labels,
    train_supervised,
)

WHEN = datetime(2026, 12, 1, tzinfo=UTC)


def label(claim_id: str, disposition: str) -> Label:
    return Label(claim_id=claim_id, disposition=disposition,  # type: ignore[arg-type]
                 investigator="alice", decided_at=WHEN,
                 answers=AnsweredDecision(decision="investigate",
                                          model=ModelRef(name="m", version="1", run_id="r"),
                                          anomaly_score=0.7, threshold=0.6, decided_at=WHEN))


def test_threshold_puts_the_budget_share_of_training_claims_above_it() -> None:
    scores = np.linspace(0.0, 1.0, 1_000)
    threshold = budget_threshold(scores, 5.0)
    assert np.count_nonzero(scores > threshold) == 50


def test_claims_tied_with_the_budgets_last_score_are_all_above_the_threshold() -> None:
    scores = np.asarray([0.9] * 10 + [0.1] * 90)
    threshold = budget_threshold(scores, 5.0)
    # 10 tied claims where 5 fit: all flagged rather than none (the top must never pass).
    assert np.count_nonzero(scores > threshold) == 10
    assert budget_threshold(np.asarray([0.2, 0.4]), 100.0) < 0.2  # everything fits


def test_latest_label_wins_and_needs_info_is_no_label() -> None:
    labels = [label("a", "fraud"), label("b", "legitimate"), label("a", "legitimate"),
              label("c", "fraud"), label("c", "needs_info"), label("d", "needs_info")]
    assert latest_labels(labels) == {"a": False, "b": False}


def test_join_marks_unlabelled_claims_unknown() -> None:
    y, known = join_labels(["a", "b", "c"], {"a": True, "c": False})
    assert y.tolist() == [True, False, False]
    assert known.tolist() == [True, False, True]


@pytest.fixture(scope="module")
def labelled_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("sup") / "c.jsonl",
                       v2_claims(1_500, seed=5, anomaly_share=0.08))


def test_trains_on_file_labels_and_reports_the_holdout(labelled_file: Path) -> None:
    model = train_supervised(load_jsonl(labelled_file), SupervisedParams(curve_sizes=(100,)))
    assert model.labels_used == 1_200
    assert model.metrics["holdout_claims"] == 300
    # The factory's anomalies are gross outliers: easy for a classifier with labels.
    assert model.metrics["pr_auc"] > 0.9
    assert [p["labels"] for p in model.curve] == [100.0]
    assert np.all((model.test_scores >= 0) & (model.test_scores <= 1))


def test_topic_labels_choose_training_rows_and_holdout(labelled_file: Path) -> None:
    dataset = load_jsonl(labelled_file)
    assert dataset.claims is not None
    assert dataset.labels is not None
    # Investigators labelled every other claim.
    by_id = {c.claim_id: bool(y) for c, y in
             zip(dataset.claims[::2], dataset.labels[::2], strict=True)}
    model = train_supervised(dataset, SupervisedParams(curve_sizes=()), by_id)
    assert model.labels_used == 600
    assert model.metrics["holdout_claims"] == 150
    assert int(model.test_known.sum()) == 150


def test_labels_trailing_the_stream_still_leave_a_labelled_holdout(labelled_file: Path
                                                                  ) -> None:
    """Investigators answer late, so the newest claims have no labels yet: the holdout is
    the latest labelled claims, not the newest claims."""
    dataset = load_jsonl(labelled_file)
    assert dataset.claims is not None
    assert dataset.labels is not None
    answered = 750  # the first half of the stream has labels, the second none
    by_id = {c.claim_id: bool(y) for c, y in
             zip(dataset.claims[:answered], dataset.labels[:answered], strict=True)}
    model = train_supervised(dataset, SupervisedParams(curve_sizes=()), by_id)
    assert model.labels_used == 600
    assert model.metrics["holdout_claims"] == 150
    # Claims 600..1499 are the test split (features still replay every claim), and only
    # 600..749 of them are judged.
    assert model.test_known.shape == (900,)
    assert np.array_equal(np.flatnonzero(model.test_known), np.arange(150))


def test_one_class_of_labels_is_refused(labelled_file: Path) -> None:
    dataset = load_jsonl(labelled_file)
    assert dataset.claims is not None
    with pytest.raises(DataError, match="need both fraud and legitimate"):
        train_supervised(dataset, SupervisedParams(),
                         {claim.claim_id: True for claim in dataset.claims[:100]})


def test_same_data_and_seed_give_the_same_model(labelled_file: Path) -> None:
    params = SupervisedParams(curve_sizes=(100,))
    a = train_supervised(load_jsonl(labelled_file), params)
    b = train_supervised(load_jsonl(labelled_file), params)
    assert np.array_equal(a.test_scores, b.test_scores)
    assert a.metrics == b.metrics
