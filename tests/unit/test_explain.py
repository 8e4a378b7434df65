"""Explanations: which features of a claim sit in the tails of the training reference."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from features.reference import FeatureReference, build_reference
from schemas import CLAIM_FEATURES, Reason
from scoring.explain import Explainer, explain, format_value, ordinal


def training_matrix(n: int = 50_000, seed: int = 11) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.lognormal(7.0, 0.6, n),  # claim_amount, continuous
            rng.integers(1, 11, n),  # num_services 1..10, discrete with ties
            rng.integers(18, 91, n),  # patient_age
            rng.integers(1, 1001, n),  # provider_id
            rng.integers(0, 366, n),  # days_since_last_claim
        ]
    ).astype(np.float64)


@pytest.fixture(scope="module")
def reference() -> FeatureReference:
    return build_reference(training_matrix())


@pytest.fixture(scope="module")
def explainer(reference: FeatureReference) -> Explainer:
    return Explainer.from_reference(reference)


def median_claim(reference: FeatureReference) -> list[float]:
    return [reference.medians[name] for name in CLAIM_FEATURES]


def test_typical_claim_has_no_reasons(
    explainer: Explainer, reference: FeatureReference
) -> None:
    assert explainer.explain(median_claim(reference)) == []


def test_huge_amount_is_explained_with_its_percentile(
    explainer: Explainer, reference: FeatureReference
) -> None:
    values = median_claim(reference)
    q999 = reference.quantiles["claim_amount"][reference.quantile_levels.index(99.9)]
    q_max = reference.quantiles["claim_amount"][-1]
    values[0] = (q999 + q_max) / 2  # between the 99.9th percentile and the maximum
    [reason] = explainer.explain(values)
    assert isinstance(reason, Reason)
    assert reason.feature == "claim_amount"
    assert reason.direction == "high"
    assert 99.9 < reason.percentile < 100.0
    assert reason.value == values[0]
    assert reason.message == (
        f"claim_amount {format_value(values[0])} is above the 99.9th percentile"
    )


def test_values_beyond_the_training_range(
    explainer: Explainer, reference: FeatureReference
) -> None:
    values = median_claim(reference)
    values[0] = 10 * reference.quantiles["claim_amount"][-1]
    values[2] = 5.0  # patient_age below every training age
    reasons = explainer.explain(values)
    assert [(r.feature, r.direction, r.percentile) for r in reasons] == [
        # Both at the edge (percentile 100 / 0); the amount is far further out.
        ("claim_amount", "high", 100.0),
        ("patient_age", "low", 0.0),
    ]
    assert reasons[0].message.startswith("claim_amount ")
    assert "is above the training maximum (" in reasons[0].message
    assert reasons[1].message == "patient_age 5 is below the training minimum (18)"


def test_sorted_by_extremeness_and_capped(reference: FeatureReference) -> None:
    values = median_claim(reference)
    amounts = reference.quantiles["claim_amount"]
    levels = reference.quantile_levels
    values[0] = (amounts[levels.index(99.0)] + amounts[levels.index(99.5)]) / 2  # ~99.2
    values[4] = 1_000.0  # days beyond the maximum: the most extreme
    values[2] = 18.0  # the youngest training age: a low tail, percentile ~0.7
    explainer = Explainer.from_reference(reference, max_reasons=2)
    reasons = explainer.explain(values)
    assert [r.feature for r in reasons] == ["days_since_last_claim", "patient_age"]
    everything = Explainer.from_reference(reference, max_reasons=5).explain(values)
    assert [r.feature for r in everything] == [
        "days_since_last_claim", "patient_age", "claim_amount",
    ]
    assert everything[2].message.endswith("is above the 99th percentile")
    assert Explainer.from_reference(reference, max_reasons=0).explain(values) == []


def test_tied_quantiles_use_the_mid_rank(
    explainer: Explainer, reference: FeatureReference
) -> None:
    """num_services 10 is the top value, shared by ~10% of claims: not an outlier."""
    j = CLAIM_FEATURES.index("num_services")
    assert reference.quantiles["num_services"][-1] == 10.0
    pct = explainer.percentile(j, 10.0)
    assert 94.0 < pct < 96.0  # mid-rank of the top ~10%
    values = median_claim(reference)
    values[j] = 10.0
    assert explainer.explain(values) == []


def test_percentile_matches_reference_between_quantiles(
    explainer: Explainer, reference: FeatureReference
) -> None:
    rng = np.random.default_rng(3)
    for value in rng.lognormal(7.0, 0.8, 200).tolist():
        assert explainer.percentile(0, value) == pytest.approx(
            reference.percentile_of("claim_amount", value), abs=1e-9
        )


def test_batch_equals_one_by_one(explainer: Explainer) -> None:
    x = training_matrix(5_000, seed=12)
    x[::50, 0] *= 30  # some huge amounts
    x[::70, 4] = 0.0
    batch = explainer.explain_batch(x)
    assert len(batch) == len(x)
    assert sum(1 for reasons in batch if reasons) > 100
    for row, reasons in zip(x.tolist(), batch, strict=True):
        assert explainer.explain(row) == reasons
    np.testing.assert_array_equal(
        explainer.percentiles(x[:100]),
        [[explainer.percentile(j, v) for j, v in enumerate(row)] for row in x[:100].tolist()],
    )


def test_convenience_function(reference: FeatureReference) -> None:
    values = median_claim(reference)
    values[0] = 1e7
    [reason] = explain(values, reference)
    assert reason.feature == "claim_amount"


def test_rejects_bad_configuration(reference: FeatureReference) -> None:
    with pytest.raises(ValueError, match="no quantiles for bogus"):
        Explainer.from_reference(reference, ("claim_amount", "bogus"))
    with pytest.raises(ValueError, match="low < high"):
        Explainer.from_reference(reference, high=1.0, low=5.0)
    explainer = Explainer.from_reference(reference)
    with pytest.raises(ValueError, match="expected 5 values"):
        explainer.explain([1.0])
    with pytest.raises(ValueError, match="shape"):
        explainer.percentiles(np.zeros((2, 3)))


def test_constant_feature_has_no_reasons_inside_its_value() -> None:
    x = training_matrix(1_000)
    x[:, 1] = 3.0
    explainer = Explainer.from_reference(build_reference(x))
    assert explainer.percentile(1, 3.0) == 50.0
    assert explainer.percentile(1, 4.0) == 100.0
    assert explainer.percentile(1, 2.0) == 0.0


@pytest.mark.parametrize(
    ("level", "text"),
    [(99.9, "99.9th"), (99.0, "99th"), (1.0, "1st"), (2.0, "2nd"), (3.0, "3rd"), (0.1, "0.1th"),
     (11.0, "11th"), (2.5, "2.5th"), (97.5, "97.5th")],
)
def test_ordinal(level: float, text: str) -> None:
    assert ordinal(level) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(14200.0, "14,200"), (14200.37, "14,200.37"), (0.5, "0.5"), (3.0, "3"), (1e7, "10,000,000"),
     (12.301, "12.3")],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text
