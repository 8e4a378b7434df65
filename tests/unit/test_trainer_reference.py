from __future__ import annotations

import json

import numpy as np
import pytest

from features.reference import QUANTILE_LEVELS, FeatureReference, build_reference
from schemas import CLAIM_FEATURES


def _matrix(rows: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.column_stack([
        rng.lognormal(7, 0.5, rows),
        rng.integers(1, 10, rows),
        rng.integers(0, 100, rows),
        rng.integers(1, 50, rows),
        rng.integers(0, 365, rows),
    ]).astype(float)


def test_reference_matches_numpy_percentiles() -> None:
    x = _matrix()
    ref = build_reference(x)
    assert ref.features == list(CLAIM_FEATURES)
    assert ref.quantile_levels == list(QUANTILE_LEVELS)
    for i, name in enumerate(CLAIM_FEATURES):
        assert ref.quantiles[name] == pytest.approx(np.percentile(x[:, i], QUANTILE_LEVELS))
        assert ref.medians[name] == pytest.approx(float(np.median(x[:, i])))
        assert ref.quantiles[name][0] == x[:, i].min()
        assert ref.quantiles[name][-1] == x[:, i].max()


def test_reference_round_trips_through_json() -> None:
    ref = build_reference(_matrix())
    text = json.dumps(ref.model_dump())
    assert FeatureReference.model_validate_json(text) == ref


def test_percentile_of_interpolates_and_clamps() -> None:
    ref = build_reference(_matrix())
    amounts = ref.quantiles["claim_amount"]
    assert ref.percentile_of("claim_amount", amounts[8]) == pytest.approx(50.0)
    assert ref.percentile_of("claim_amount", amounts[-1] * 10) == 100.0
    assert ref.percentile_of("claim_amount", amounts[0] / 10) == 0.0
    mid = (amounts[13] + amounts[14]) / 2  # between the 99th and 99.5th
    assert 99.0 < ref.percentile_of("claim_amount", mid) < 99.5


@pytest.mark.parametrize("shape", [(0, 5), (10, 4), (5,)])
def test_build_reference_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        build_reference(np.zeros(shape))


def test_inconsistent_reference_is_rejected() -> None:
    ref = build_reference(_matrix()).model_dump()
    ref["quantiles"]["claim_amount"] = ref["quantiles"]["claim_amount"][:-1]
    with pytest.raises(ValueError, match="claim_amount"):
        FeatureReference.model_validate(ref)
