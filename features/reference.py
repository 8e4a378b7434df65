"""Feature reference statistics: what "usual" looks like in the training data.

The model service explains a decision by placing each feature value against these
quantiles ("claim_amount 14,200 is above the 99.9th percentile"). The reference travels as
the MLflow artifact ``reference.json`` and inside the BentoML model (custom object
``reference``), so this module stays light: pydantic and numpy only, no MLflow/BentoML.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Final

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from features.codes import CodeReference
from schemas import CLAIM_FEATURES

# Dense in the tails, where explanations happen; coarse in the middle, where nothing is unusual.
QUANTILE_LEVELS: Final[tuple[float, ...]] = (
    0.0, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0,
    75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.9, 100.0,
)


class FeatureReference(BaseModel):
    """Per-feature quantiles (at ``quantile_levels``, in percent) and medians of training data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: list[str]
    quantile_levels: list[float]
    # Which claims the model reads and how (features.sets). References written before
    # feature sets existed lack both and were v1 models.
    feature_set: str = "v1"
    claim_version: int = 1
    quantiles: dict[str, list[float]]
    medians: dict[str, float]
    # Per-code charge norms and demographic mix (stateful feature sets only), learned from the
    # training claims and shipped with the model: serving computes the same values.
    codes: CodeReference | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FeatureReference:
        levels = self.quantile_levels
        if not levels or any(not 0.0 <= q <= 100.0 for q in levels) or levels != sorted(levels):
            raise ValueError("quantile_levels must be non-empty, ascending, within 0..100")
        if set(self.quantiles) != set(self.features) or set(self.medians) != set(self.features):
            raise ValueError("quantiles and medians need exactly one entry per feature")
        for name, values in self.quantiles.items():
            if len(values) != len(levels):
                raise ValueError(f"{name}: {len(values)} quantiles for {len(levels)} levels")
        return self

    def percentile_of(self, feature: str, value: float) -> float:
        """Approximate percentile rank (0..100) of ``value`` among the training values.

        Linear interpolation between the stored quantiles; values outside the training
        range clamp to 0 or 100.
        """
        qs = self.quantiles[feature]
        levels = self.quantile_levels
        if value <= qs[0]:
            return levels[0]
        if value >= qs[-1]:
            return levels[-1]
        hi = bisect.bisect_right(qs, value)
        lo = hi - 1
        span = qs[hi] - qs[lo]
        if span <= 0:
            return levels[hi]
        return levels[lo] + (levels[hi] - levels[lo]) * (value - qs[lo]) / span


def build_reference(
    X: np.ndarray,  # noqa: N803 -- the agreed interface name, as in scikit-learn
    features: Sequence[str] = CLAIM_FEATURES,
    levels: Sequence[float] = QUANTILE_LEVELS,
    *,
    feature_set: str = "v1",
    claim_version: int = 1,
    codes: CodeReference | None = None,
) -> FeatureReference:
    """Reference statistics of a training matrix whose columns are ``features``."""
    matrix = np.asarray(X, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(features):
        raise ValueError(f"expected a (rows, {len(features)}) matrix, got shape {matrix.shape}")
    if matrix.shape[0] == 0:
        raise ValueError("cannot build a reference from zero rows")
    table = np.percentile(matrix, list(levels), axis=0)  # shape (levels, features)
    medians = np.median(matrix, axis=0)
    return FeatureReference(
        features=list(features),
        quantile_levels=[float(q) for q in levels],
        quantiles={name: [float(v) for v in table[:, i]] for i, name in enumerate(features)},
        medians={name: float(medians[i]) for i, name in enumerate(features)},
        feature_set=feature_set,
        claim_version=claim_version,
        codes=codes,
    )
