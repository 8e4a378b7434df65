"""The supervised family: a gradient-boosted classifier on the champion's point-in-time
features, trained on investigators' labels (the pure core; no MLflow, no Kafka).

scikit-learn's ``HistGradientBoostingClassifier`` (LightGBM is not installed here). It was
chosen by measurement on the realistic profile (200k claims, seed 7, v2-history, time split
80/20, 5 % budget): PR-AUC 0.745 / precision at budget 0.897 with all 160k training labels,
against 0.575 / 0.677 for the Isolation Forest champion.

The served score is the classifier's fraud probability (higher = more unusual, as the
contract says of ``anomaly_score``); the threshold is chosen here, at training time, from the
TRAINING claims (:func:`budget_threshold`) and stored with the model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from features.reference import FeatureReference, build_reference
from features.sets import FeatureSet, feature_set
from schemas.label import Label
from trainer import evaluate
from trainer.data import DataError, Dataset
from trainer.model import Split, history_split, ranking, split_dataset

log = logging.getLogger(__name__)

FAMILY: Final = "gradient-boosting"
CURVE_SIZES: Final = (100, 1_000, 10_000)
# A disposition is a label only when it closes the claim one way or the other.
LABEL_OF: Final[dict[str, bool | None]] = {"fraud": True, "legitimate": False,
                                           "needs_info": None}


@dataclass(frozen=True)
class SupervisedParams:
    test_size: float = 0.2
    seed: int = 42
    budget_percent: float = 5.0
    curve_sizes: tuple[int, ...] = CURVE_SIZES

    def as_params(self) -> dict[str, str | int | float]:
        return {"family": FAMILY, "estimator": "HistGradientBoostingClassifier",
                "test_size": self.test_size, "seed": self.seed,
                "budget_percent": self.budget_percent,
                "curve_sizes": ",".join(map(str, self.curve_sizes))}


# -- labels ---------------------------------------------------------------------------------


def latest_labels(labels: Iterable[Label]) -> dict[str, bool]:
    """claim_id -> fraud? from labels in topic order: the latest per claim wins (as
    compaction keeps it); a ``needs_info`` latest label means no label."""
    latest: dict[str, Label] = {}
    for label in labels:
        latest[label.claim_id] = label
    return {claim_id: answer for claim_id, label in latest.items()
            if (answer := LABEL_OF[label.disposition]) is not None}


def join_labels(claim_ids: Sequence[str], by_id: Mapping[str, bool]
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, known)`` per claim of the file: unlabelled claims get ``known`` False."""
    known = np.asarray([cid in by_id for cid in claim_ids], dtype=bool)
    labels = np.asarray([by_id.get(cid, False) for cid in claim_ids], dtype=bool)
    return labels, known


# -- threshold, metrics ---------------------------------------------------------------------


def budget_threshold(train_scores: np.ndarray, budget_percent: float) -> float:
    """The threshold that puts the budget share of TRAINING claims above it.

    ``investigate iff score > threshold`` flags the claims scoring at least the k-th highest
    training score (k = the budget's share of training claims): about the investigation
    budget's share of claims like the training claims, whatever the fraud rate, which is the
    queue investigators can work and what precision at budget measures. Claims tied with the
    k-th score are all above it (a classifier gives many identical probabilities; the other
    way round, a tie at the top would approve the most suspicious claims).
    """
    if train_scores.size == 0:
        raise ValueError("no training scores")
    k = min(evaluate.budget_size(train_scores.shape[0], budget_percent), train_scores.shape[0])
    kth = np.sort(train_scores)[::-1][k - 1]
    return float(np.nextafter(kth, -np.inf))


def holdout_metrics(labels: np.ndarray, queue: np.ndarray, flags: np.ndarray,
                    patterns: np.ndarray | None, budget_percent: float) -> dict[str, float]:
    """PR-AUC, precision/recall at budget, per-pattern recall at budget on a labelled holdout.
    ``queue`` orders the investigators' queue (rule findings first)."""
    metrics = {"holdout_claims": float(labels.shape[0]),
               "test_positives": float(np.count_nonzero(labels)),
               **evaluate.classification_metrics(labels, flags, queue),
               **evaluate.budget_metrics(labels, queue, budget_percent)}
    if patterns is not None:
        rows = evaluate.per_pattern(patterns, flags, queue, budget_percent)
        metrics.update(evaluate.pattern_metrics(rows))
    return metrics


# -- training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledSplit:
    """Point-in-time features for every claim; which of them are labelled training rows and
    which are the labelled holdout."""

    split: Split
    features: FeatureSet
    reference: FeatureReference
    y_train: np.ndarray  # labels of the labelled training rows
    x_train: np.ndarray  # their features
    test_known: np.ndarray  # (test rows,) bool: labelled holdout claims
    test_rules: np.ndarray | None  # (test rows,) bool: exact resubmissions (a rule decides)


@dataclass(frozen=True)
class SupervisedModel:
    estimator: HistGradientBoostingClassifier
    reference: FeatureReference
    feature_set: FeatureSet
    split: Split
    threshold: float
    labels_used: int
    metrics: dict[str, float]
    test_scores: np.ndarray  # probabilities of every test claim
    test_known: np.ndarray
    test_rules: np.ndarray | None
    curve: list[dict[str, float]] = field(default_factory=list)


def labelled_split(dataset: Dataset, test_size: float, seed: int,
                   topic_labels: Mapping[str, bool] | None = None) -> LabelledSplit:
    """Features as the champion's trainer computes them; labels from the file or a topic."""
    features = feature_set(dataset.feature_set)
    codes, rules = None, None
    if topic_labels is not None:
        ids = [claim.claim_id for claim in dataset.claims or []]
        if not ids:
            raise DataError("labels from a topic need claims with claim ids (a JSON Lines file)")
        labels, known = join_labels(ids, topic_labels)
        dataset = _with_labels(dataset, labels)
    elif dataset.labels is None:
        raise DataError("supervised training needs labels: an is_anomaly field in the file, "
                        "or --labels-topic")
    else:
        known = np.ones(dataset.labels.shape[0], dtype=bool)
    if features.stateful:
        history = history_split(dataset, test_size, known)
        split, codes, rules = history.split, history.codes, history.test_rules
        cut = split.x_train.shape[0]
        known_train, known_test = known[:cut], known[cut:]
    else:
        split = split_dataset(dataset, test_size, seed)
        if topic_labels is not None:
            raise DataError("labels from a topic need a time split (a feature set that "
                            f"reads member history), not {features.name}")
        known_train = np.ones(split.x_train.shape[0], dtype=bool)
        known_test = np.ones(split.x_test.shape[0], dtype=bool)
    assert split.y_train is not None
    assert split.y_test is not None
    y_train = split.y_train[known_train]
    if y_train.size == 0 or not evaluate.has_both_classes(y_train):
        raise DataError(f"the training part has {int(y_train.size)} labelled claim(s) "
                        f"({int(np.count_nonzero(y_train))} fraud): need both fraud and "
                        "legitimate labels")
    reference = build_reference(split.x_train, features.features, feature_set=features.name,
                                claim_version=features.claim_version, codes=codes)
    return LabelledSplit(split=split, features=features, reference=reference, y_train=y_train,
                         x_train=split.x_train[known_train], test_known=known_test,
                         test_rules=rules)


def _with_labels(dataset: Dataset, labels: np.ndarray) -> Dataset:
    from dataclasses import replace

    return replace(dataset, labels=labels)


def fit_classifier(x: np.ndarray, y: np.ndarray, seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(random_state=seed).fit(x, y)


def fraud_scores(estimator: HistGradientBoostingClassifier, x: np.ndarray) -> np.ndarray:
    """The probability of the fraud class: the served ``anomaly_score``."""
    scores: np.ndarray = estimator.predict_proba(x)[:, 1]
    return scores


def train_supervised(dataset: Dataset, params: SupervisedParams,
                     topic_labels: Mapping[str, bool] | None = None) -> SupervisedModel:
    """Fit on the labelled training rows, evaluate on the labelled holdout, learning curve."""
    data = labelled_split(dataset, params.test_size, params.seed, topic_labels)
    split = data.split
    estimator = fit_classifier(data.x_train, data.y_train, params.seed)
    threshold = budget_threshold(fraud_scores(estimator, split.x_train), params.budget_percent)
    test_scores = fraud_scores(estimator, split.x_test)
    metrics = {"labels_used": float(data.y_train.size),
               "labels_fraud": float(np.count_nonzero(data.y_train)),
               "threshold": threshold,
               **evaluate_on_holdout(data, test_scores, threshold, params.budget_percent)}
    curve = learning_curve(data, params)
    for point in curve:
        n = int(point["labels"])
        metrics[f"curve_pr_auc_{n}"] = point["pr_auc"]
        metrics[f"curve_precision_at_budget_{n}"] = point["precision_at_budget"]
    log.info("supervised: %d labels (%d fraud), holdout PR-AUC %.3f, precision at budget "
             "%.3f", data.y_train.size, np.count_nonzero(data.y_train),
             metrics.get("pr_auc", float("nan")), metrics["precision_at_budget"])
    return SupervisedModel(estimator=estimator, reference=data.reference,
                           feature_set=data.features, split=split, threshold=threshold,
                           labels_used=int(data.y_train.size), metrics=metrics,
                           test_scores=test_scores, test_known=data.test_known,
                           test_rules=data.test_rules, curve=curve)


def evaluate_on_holdout(data: LabelledSplit, test_scores: np.ndarray, threshold: float,
                        budget_percent: float) -> dict[str, float]:
    """Any model's scores of the test claims, judged on the labelled ones (the same
    holdout for the challenger and the champion)."""
    known = data.test_known
    split = data.split
    assert split.y_test is not None
    if not known.any():
        raise DataError("the test split has no labelled claims: no holdout to judge on")
    rules = None if data.test_rules is None else data.test_rules[known]
    scores = test_scores[known]
    flags = scores > threshold if rules is None else (scores > threshold) | rules
    patterns = None if split.p_test is None else split.p_test[known]
    return holdout_metrics(split.y_test[known], ranking(scores, rules), flags, patterns,
                           budget_percent)


def learning_curve(data: LabelledSplit, params: SupervisedParams) -> list[dict[str, float]]:
    """PR-AUC and precision at budget on the holdout when trained on seeded subsamples of
    the training labels (only sizes below the labels available, with both classes)."""
    rng = np.random.default_rng(params.seed)
    points = []
    for n in params.curve_sizes:
        if n >= data.y_train.size:
            log.info("learning curve: %d labels asked, %d available; skipped", n,
                     data.y_train.size)
            continue
        chosen = rng.choice(data.y_train.size, size=n, replace=False)
        y = data.y_train[chosen]
        if not evaluate.has_both_classes(y):
            log.info("learning curve: %d labels hold one class only; skipped", n)
            continue
        estimator = fit_classifier(data.x_train[chosen], y, params.seed)
        threshold = budget_threshold(fraud_scores(estimator, data.split.x_train),
                                     params.budget_percent)
        got = evaluate_on_holdout(data, fraud_scores(estimator, data.split.x_test), threshold,
                                  params.budget_percent)
        points.append({"labels": float(n), "pr_auc": got.get("pr_auc", float("nan")),
                       "precision_at_budget": got["precision_at_budget"]})
    return points
