"""The compiled forest must score exactly like scikit-learn's IsolationForest."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length

from scoring.forest import CompiledForest, average_path_length, compile_forest

FloatArray = npt.NDArray[np.float64]


def claims_like(n: int, seed: int) -> FloatArray:
    """Claim-shaped features (amount, services, age, provider, days) with a few oddities."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.lognormal(7.0, 1.0, n),
            rng.integers(1, 20, n),
            rng.integers(0, 100, n),
            rng.integers(1, 500, n),
            rng.integers(0, 365, n),
        ]
    ).astype(np.float64)
    odd = rng.random(n) < 0.03
    x[odd, 0] *= rng.uniform(5, 20, odd.sum())
    return x


def fit(x: FloatArray, **params: Any) -> IsolationForest:
    defaults: dict[str, Any] = {"n_estimators": 100, "contamination": 0.05, "random_state": 42}
    return IsolationForest(**{**defaults, **params}).fit(x)


@pytest.fixture(scope="module")
def training() -> FloatArray:
    return claims_like(20_000, seed=1)


@pytest.fixture(scope="module")
def forest(training: FloatArray) -> IsolationForest:
    return fit(training)


@pytest.fixture(scope="module")
def compiled(forest: IsolationForest) -> CompiledForest:
    return compile_forest(forest)


def assert_parity(estimator: IsolationForest, compiled: CompiledForest, x: FloatArray) -> None:
    expected = -estimator.score_samples(x)
    ours = compiled.anomaly_scores(x)
    assert np.max(np.abs(ours - expected)) <= 1e-9
    # Bit-for-bit in practice: same float32 rounding, same summation order.
    assert np.array_equal(ours, expected)
    np.testing.assert_array_equal(compiled.investigate(ours), estimator.predict(x) == -1)


def test_parity_on_100k_claims(forest: IsolationForest, compiled: CompiledForest) -> None:
    x = claims_like(100_000, seed=2)
    assert_parity(forest, compiled, x)
    # Both outcomes really occur, so "identical decisions" is not vacuous.
    flagged = compiled.investigate(compiled.anomaly_scores(x)).mean()
    assert 0.01 < flagged < 0.2


def test_threshold_is_negated_offset(forest: IsolationForest, compiled: CompiledForest) -> None:
    assert compiled.threshold == -forest.offset_
    assert compiled.n_trees == 100
    assert compiled.n_features == 5


def test_training_claims_flag_the_contamination_share(
    training: FloatArray, compiled: CompiledForest
) -> None:
    flagged = compiled.investigate(compiled.anomaly_scores(training)).mean()
    assert flagged == pytest.approx(0.05, abs=0.002)


def test_single_claim_path_equals_batch_path(compiled: CompiledForest) -> None:
    x = claims_like(2_000, seed=3)
    batch = compiled.anomaly_scores(x)
    singles = np.array([compiled.anomaly_score(row) for row in x.tolist()])
    assert np.array_equal(singles, batch)


def test_values_on_thresholds_and_float32_rounding(
    forest: IsolationForest, compiled: CompiledForest
) -> None:
    """Claims sitting exactly on split thresholds, or that round differently in float32."""
    thresholds = np.concatenate(
        [e.tree_.threshold[e.tree_.feature >= 0] for e in forest.estimators_[:5]]
    )
    features = np.concatenate(
        [e.tree_.feature[e.tree_.feature >= 0] for e in forest.estimators_[:5]]
    )
    x = claims_like(len(thresholds), seed=4)
    x[np.arange(len(x)), features] = thresholds
    x[::3, 0] = x[::3, 0] + 1e-5  # below float32 resolution for these amounts
    x[1::7, 3] = 123_456_789.0  # a provider id that float32 cannot represent
    assert_parity(forest, compiled, x)


def test_extreme_values(forest: IsolationForest, compiled: CompiledForest) -> None:
    x = np.array(
        [[1e-9, 1, 0, 1, 0], [1e7, 1000, 120, 1e9, 36_500], [0.01, 1000, 0, 1e9, 0]],
        dtype=np.float64,
    )
    assert_parity(forest, compiled, x)


def test_feature_subsampling(training: FloatArray) -> None:
    estimator = fit(training, n_estimators=40, max_features=0.6)
    assert_parity(estimator, compile_forest(estimator), claims_like(20_000, seed=5))


def test_large_trees_and_several_table_groups(training: FloatArray) -> None:
    """max_samples 2048 -> trees of up to ~2000 leaves (32 words); a small budget forces
    several tree groups."""
    estimator = fit(training, n_estimators=12, max_samples=2048, contamination="auto")
    compiled = compile_forest(estimator, table_budget_bytes=4 * 1024 * 1024)
    assert len(compiled.groups) > 1
    assert max(group.words for group in compiled.groups) > 4
    assert_parity(estimator, compiled, claims_like(5_000, seed=6))


def test_duplicated_training_rows(training: FloatArray) -> None:
    """Leaves holding several identical samples carry the c(n) correction."""
    repeated = np.repeat(training[:50], 40, axis=0)
    estimator = fit(repeated, n_estimators=20)
    assert_parity(estimator, compile_forest(estimator), claims_like(3_000, seed=7))


def test_forest_fitted_on_one_sample_scores_a_half() -> None:
    estimator = fit(np.array([[1.0, 2.0]]), n_estimators=5, contamination="auto")
    compiled = compile_forest(estimator)
    x = np.array([[1.0, 2.0], [5.0, -3.0]])
    assert_parity(estimator, compiled, x)
    assert compiled.anomaly_score([5.0, -3.0]) == 0.5


def test_average_path_length_matches_scikit_learn() -> None:
    n = np.array([0, 1, 2, 3, 4, 5, 17, 255, 256, 257, 10_000, 2**31])
    assert np.array_equal(average_path_length(n), _average_path_length(n))


def test_rejects_bad_input(compiled: CompiledForest) -> None:
    with pytest.raises(ValueError, match="shape"):
        compiled.anomaly_scores(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="shape"):
        compiled.anomaly_scores(np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        compiled.anomaly_scores(np.array([[np.nan, 1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="expected 5 features"):
        compiled.anomaly_score([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        compiled.anomaly_score([float("inf"), 1, 1, 1, 1])


def test_rejects_unfitted_estimator() -> None:
    with pytest.raises(ValueError, match="not a fitted IsolationForest"):
        compile_forest(IsolationForest())


def test_empty_batch(compiled: CompiledForest) -> None:
    assert compiled.anomaly_scores(np.zeros((0, 5))).shape == (0,)
