from __future__ import annotations

import numpy as np
import pytest

from trainer import evaluate
from trainer.evaluate import NORMAL_GROUP, PatternRow

# Ten claims, highest score first; positions 0, 1, 4 and 8 are anomalies.
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3])
LABELS = np.array([True, True, False, False, True, False, False, False, True, False])
FLAGS = SCORES > 0.65  # the top three


def test_anomaly_percentage() -> None:
    assert evaluate.anomaly_percentage(FLAGS) == pytest.approx(30.0)
    assert evaluate.anomaly_percentage(np.zeros(4, dtype=bool)) == 0.0
    with pytest.raises(ValueError, match="no rows"):
        evaluate.anomaly_percentage(np.array([], dtype=bool))


def test_classification_metrics_by_hand() -> None:
    metrics = evaluate.classification_metrics(LABELS, FLAGS, SCORES)
    assert metrics["precision"] == pytest.approx(2 / 3)  # 2 of 3 flagged are anomalies
    assert metrics["recall"] == pytest.approx(2 / 4)
    assert metrics["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    # ROC-AUC: share of (anomaly, normal) pairs ranked correctly: 6 + 6 + 4 + 1 of 24.
    assert metrics["roc_auc"] == pytest.approx(17 / 24)
    # Average precision: mean precision at each anomaly's rank (1, 2, 5, 9).
    assert metrics["pr_auc"] == pytest.approx((1 / 1 + 2 / 2 + 3 / 5 + 4 / 9) / 4)


def test_auc_metrics_need_both_classes() -> None:
    metrics = evaluate.classification_metrics(np.zeros(10, dtype=bool), FLAGS, SCORES)
    assert metrics["precision"] == 0.0
    assert metrics["recall"] == 0.0
    assert "roc_auc" not in metrics
    assert "pr_auc" not in metrics


@pytest.mark.parametrize(("rows", "percent", "expected"),
                         [(10, 30.0, 3), (210, 5.0, 11), (200, 5.0, 10), (5, 1.0, 1)])
def test_budget_size(rows: int, percent: float, expected: int) -> None:
    assert evaluate.budget_size(rows, percent) == expected


def test_budget_metrics() -> None:
    metrics = evaluate.budget_metrics(LABELS, SCORES, budget_percent=50.0)
    assert metrics["budget_claims"] == 5
    assert metrics["precision_at_budget"] == pytest.approx(3 / 5)
    assert metrics["recall_at_budget"] == pytest.approx(3 / 4)


def test_top_k_breaks_ties_by_position() -> None:
    mask = evaluate.top_k(np.array([0.5, 0.9, 0.5, 0.5]), 2)
    assert mask.tolist() == [True, True, False, False]


def test_naive_rule_metrics() -> None:
    train_amount = np.arange(1.0, 101.0)  # 98th percentile: 98.02
    test_amount = np.array([50.0, 99.0, 120.0, 10.0, 100.0])
    labels = np.array([False, True, False, False, True])
    metrics = evaluate.naive_rule_metrics(train_amount, test_amount, labels, quantile=98.0)
    assert metrics["naive_amount_cutoff"] == pytest.approx(98.02)
    # Flags 99, 120, 100: two of three right, both anomalies found.
    assert metrics["naive_precision"] == pytest.approx(2 / 3)
    assert metrics["naive_recall"] == 1.0
    # Binary scores: one threshold step at recall 1 with precision 2/3.
    assert metrics["naive_pr_auc"] == pytest.approx(2 / 3)
    # Ranking by amount: 120 (no), 100 (yes), 99 (yes) -> AP = (1/2 + 2/3) / 2.
    assert metrics["amount_pr_auc"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_per_pattern_table() -> None:
    patterns = np.array(["upcoding", "phantom", "", "", "upcoding", "", "", "", "phantom", ""],
                        dtype=object)
    rows = evaluate.per_pattern(patterns, FLAGS, SCORES, budget_percent=50.0)
    by_name = {row.pattern: row for row in rows}
    assert [row.pattern for row in rows] == sorted(by_name)
    assert by_name["upcoding"] == PatternRow(
        pattern="upcoding", claims=2, flagged=1, recall=0.5, flagged_at_budget=2,
        recall_at_budget=1.0, mean_score=by_name["upcoding"].mean_score)
    assert by_name["upcoding"].mean_score == pytest.approx((0.9 + 0.55) / 2)
    assert by_name["phantom"].flagged == 1
    assert by_name["phantom"].flagged_at_budget == 1
    normal = by_name[NORMAL_GROUP]
    assert (normal.claims, normal.flagged, normal.flagged_at_budget) == (6, 1, 2)
    assert evaluate.pattern_metrics(rows) == {"recall_phantom": 0.5, "recall_upcoding": 0.5,
                                              "recall_at_budget_phantom": 0.5,
                                              "recall_at_budget_upcoding": 1.0}


@pytest.mark.parametrize(("name", "key"), [("upcoding", "upcoding"),
                                           ("compromised provider!", "compromised_provider"),
                                           ("***", "unnamed")])
def test_metric_key(name: str, key: str) -> None:
    assert evaluate.metric_key(name) == key
