"""Evaluation metrics: pure functions of labels, flags and anomaly scores.

Conventions: ``scores`` are anomaly scores (higher = more unusual, the negated
``score_samples``); ``flags`` are the model's decisions (True = investigate, i.e. sklearn's
``predict == -1``); ``labels`` are the ground truth (True = anomaly).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

NORMAL_GROUP = "(normal)"  # the per-pattern table's row for claims without a fraud pattern


def anomaly_percentage(flags: np.ndarray) -> float:
    """Percentage of rows flagged (the lab's ``train/test_anomaly_percentage``)."""
    if flags.size == 0:
        raise ValueError("no rows")
    return float(100.0 * np.count_nonzero(flags) / flags.size)


def has_both_classes(labels: np.ndarray) -> bool:
    return bool(labels.any() and not labels.all())


def classification_metrics(labels: np.ndarray, flags: np.ndarray,
                           scores: np.ndarray) -> dict[str, float]:
    """precision, recall, F1 of the flags; ROC-AUC and PR-AUC of the scores.

    PR-AUC is average precision (the step-wise area, no optimistic interpolation). The two
    AUCs need both classes and are left out otherwise.
    """
    metrics = {
        "precision": float(precision_score(labels, flags, zero_division=0)),
        "recall": float(recall_score(labels, flags, zero_division=0)),
        "f1": float(f1_score(labels, flags, zero_division=0)),
    }
    if has_both_classes(labels):
        metrics["roc_auc"] = float(roc_auc_score(labels, scores))
        metrics["pr_auc"] = float(average_precision_score(labels, scores))
    return metrics


def budget_size(rows: int, budget_percent: float) -> int:
    """How many claims an investigation budget of ``budget_percent`` % covers (at least 1)."""
    return max(1, math.ceil(rows * budget_percent / 100.0 - 1e-9))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` highest scores (ties broken by position, deterministically)."""
    order = np.argsort(-scores, kind="stable")
    mask = np.zeros(scores.shape[0], dtype=bool)
    mask[order[:k]] = True
    return mask


def budget_metrics(labels: np.ndarray, scores: np.ndarray,
                   budget_percent: float) -> dict[str, float]:
    """Precision and recall when investigators can look at the top ``budget_percent`` %."""
    k = budget_size(labels.shape[0], budget_percent)
    chosen = top_k(scores, k)
    hits = int(np.count_nonzero(labels & chosen))
    positives = int(np.count_nonzero(labels))
    return {
        "budget_claims": float(k),
        "precision_at_budget": hits / k,
        "recall_at_budget": hits / positives if positives else 0.0,
    }


def naive_rule_metrics(train_amount: np.ndarray, test_amount: np.ndarray,
                       labels: np.ndarray, quantile: float) -> dict[str, float]:
    """Baseline: flag amounts above the training ``quantile``-th percentile.

    ``naive_pr_auc`` is the average precision of the rule's yes/no flags; ``amount_pr_auc``
    ranks by amount alone (the best any amount-threshold rule can do), for comparison.
    """
    cutoff = float(np.percentile(train_amount, quantile))
    flags = test_amount > cutoff
    metrics = {
        "naive_amount_cutoff": cutoff,
        "naive_precision": float(precision_score(labels, flags, zero_division=0)),
        "naive_recall": float(recall_score(labels, flags, zero_division=0)),
    }
    if has_both_classes(labels):
        metrics["naive_pr_auc"] = float(average_precision_score(labels, flags.astype(float)))
        metrics["amount_pr_auc"] = float(average_precision_score(labels, test_amount))
    return metrics


@dataclass(frozen=True)
class PatternRow:
    """How the model does on one fraud pattern (or on normal claims) in the test split."""

    pattern: str
    claims: int
    flagged: int
    recall: float  # share flagged; for the normal group, the false-positive rate
    flagged_at_budget: int
    recall_at_budget: float
    mean_score: float

    def as_dict(self) -> dict[str, str | int | float]:
        return asdict(self)


def per_pattern(patterns: np.ndarray, flags: np.ndarray, scores: np.ndarray,
                budget_percent: float) -> list[PatternRow]:
    """One row per pattern (normal claims as :data:`NORMAL_GROUP`), sorted by name."""
    chosen = top_k(scores, budget_size(scores.shape[0], budget_percent))
    names = np.where(patterns == "", NORMAL_GROUP, patterns).astype(str)
    rows = []
    for name in sorted(set(names.tolist())):
        member = names == name
        count = int(np.count_nonzero(member))
        flagged = int(np.count_nonzero(flags & member))
        at_budget = int(np.count_nonzero(chosen & member))
        rows.append(PatternRow(
            pattern=name, claims=count, flagged=flagged, recall=flagged / count,
            flagged_at_budget=at_budget, recall_at_budget=at_budget / count,
            mean_score=float(scores[member].mean()),
        ))
    return rows


def metric_key(text: str) -> str:
    """A safe MLflow metric-name fragment for a pattern name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "unnamed"


def pattern_metrics(rows: list[PatternRow]) -> dict[str, float]:
    """``recall_<pattern>`` (share flagged) and ``recall_at_budget_<pattern>`` (share in
    the investigation budget) per fraud pattern (normal claims excluded)."""
    metrics: dict[str, float] = {}
    for row in rows:
        if row.pattern != NORMAL_GROUP:
            metrics[f"recall_{metric_key(row.pattern)}"] = row.recall
            metrics[f"recall_at_budget_{metric_key(row.pattern)}"] = row.recall_at_budget
    return metrics
