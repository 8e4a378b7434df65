"""The supervised family as the model service scores it: a fitted classifier whose
``anomaly_score`` is the probability of fraud (higher = more unusual, as the contract says),
with the threshold chosen at training time (``trainer.supervised.budget_threshold``: the
investigation budget's share of training claims scores above it) and stored with the model.

:class:`Scorer` is what :class:`scoring.model.ServedModel` needs of either family; the
Isolation Forest's :class:`scoring.forest.CompiledForest` has the same four members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

ISOLATION_FOREST: Final = "isolation-forest"
GRADIENT_BOOSTING: Final = "gradient-boosting"
FAMILIES: Final = (ISOLATION_FOREST, GRADIENT_BOOSTING)


class Scorer(Protocol):
    """Anomaly scores (higher = more unusual) and the threshold above which to investigate."""

    @property
    def threshold(self) -> float: ...

    @property
    def n_trees(self) -> int: ...

    def anomaly_scores(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]: ...

    def anomaly_score(self, features: Sequence[float]) -> float: ...


def family_of(estimator: Any) -> str:
    """Which family a fitted estimator belongs to (by what it can do, not its class name)."""
    if hasattr(estimator, "predict_proba"):
        return GRADIENT_BOOSTING
    if hasattr(estimator, "offset_") and hasattr(estimator, "score_samples"):
        return ISOLATION_FOREST
    raise ValueError(f"{type(estimator).__name__} is neither an anomaly detector nor a "
                     "probabilistic classifier")


@dataclass(frozen=True)
class ClassifierScorer:
    """A fitted binary classifier (class 1 = fraud) with its training-time threshold."""

    estimator: Any
    fraud_column: int
    _threshold: float

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def n_trees(self) -> int:
        return int(getattr(self.estimator, "n_iter_", 0))

    def anomaly_scores(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        matrix = np.asarray(x, dtype=np.float64)
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        scores: npt.NDArray[np.float64] = self._proba(matrix)[:, self.fraud_column]
        return scores

    def _proba(self, matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``predict_proba`` on one thread. scikit-learn's gradient boosting predicts with
        every OpenMP thread by default; on a busy machine (the broker, the workers and this
        service share the cores) that made a 500-claim batch 5x slower (25.6 ms against
        4.9 ms wall, one claim 21 ms against 3.6 ms). A unit test checks equality with
        ``predict_proba``."""
        raw = getattr(self.estimator, "_raw_predict", None)
        loss = getattr(self.estimator, "_loss", None)
        if raw is None or loss is None:  # another classifier: its own predict_proba
            proba: npt.NDArray[np.float64] = self.estimator.predict_proba(matrix)
            return proba
        single: npt.NDArray[np.float64] = loss.predict_proba(raw(matrix, n_threads=1))
        return single

    def anomaly_score(self, features: Sequence[float]) -> float:
        return float(self.anomaly_scores([features])[0])


def classifier_scorer(estimator: Any, threshold: float) -> ClassifierScorer:
    """The fraud column is the one of class ``True``/``1``; a model without it is refused."""
    classes = [bool(c) for c in getattr(estimator, "classes_", [])]
    if sorted(classes) != [False, True]:
        raise ValueError(f"a fraud classifier has classes False and True, not {classes}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold {threshold} is not a finite number")
    return ClassifierScorer(estimator, classes.index(True), float(threshold))
