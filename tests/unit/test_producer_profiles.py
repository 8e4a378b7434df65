"""Generation profiles: determinism, pattern shares, believable shapes, contract validity."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from producer.columns import ALL_COLUMNS
from producer.profiles import generate
from producer.realistic import DEFAULT_PATTERN_SHARES, PROVIDERS, pattern_counts
from schemas import CLAIM_FEATURES, Claim

ROWS = 40_000


@pytest.fixture(scope="module")
def realistic() -> pd.DataFrame:
    return generate("realistic", ROWS, seed=11)


def claims_of(frame: pd.DataFrame) -> list[Claim]:
    """Every row through the contract, built independently of the producer's JSON path."""
    rows = frame.to_dict("records")
    return [
        Claim(
            claim_id=str(row["claim_id"]),
            claim_amount=float(row["claim_amount"]),
            num_services=int(row["num_services"]),
            patient_age=int(row["patient_age"]),
            provider_id=int(row["provider_id"]),
            days_since_last_claim=int(row["days_since_last_claim"]),
            submitted_at=row["submitted_at"].to_pydatetime(),
        )
        for row in rows
    ]


@pytest.mark.parametrize("profile", ["seed", "realistic"])
def test_same_arguments_same_frame_other_seed_other_frame(profile: str) -> None:
    first = generate(profile, 5000, seed=3)  # type: ignore[arg-type]
    again = generate(profile, 5000, seed=3)  # type: ignore[arg-type]
    other = generate(profile, 5000, seed=4)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    assert not first[list(CLAIM_FEATURES)].equals(other[list(CLAIM_FEATURES)])
    assert list(first.columns) == list(ALL_COLUMNS)


def test_every_realistic_claim_satisfies_the_contract(realistic: pd.DataFrame) -> None:
    claims = claims_of(realistic)
    assert len(claims) == ROWS
    assert len({c.claim_id for c in claims}) == ROWS


@pytest.mark.parametrize("seed", [0, 1, 42, 48, 115])
def test_every_seed_profile_claim_satisfies_the_contract(seed: int) -> None:
    # Seeds 48 and 115 draw negative lab amounts: they must still become valid claims.
    assert len(claims_of(generate("seed", seed=seed))) == 1050


def test_default_pattern_shares_are_exact(realistic: pd.DataFrame) -> None:
    counts = realistic["pattern"].value_counts()
    assert len(DEFAULT_PATTERN_SHARES) >= 4
    for name, share in DEFAULT_PATTERN_SHARES.items():
        assert abs(counts[name] - ROWS * share) <= 1, name
    assert realistic["is_anomaly"].sum() == round(ROWS * 0.05)
    assert (realistic["is_anomaly"] == (realistic["pattern"] != "")).all()


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.2, 1.0])
def test_anomaly_rate_scales_every_pattern(rate: float) -> None:
    counts = pattern_counts(10_001, rate)
    assert sum(counts.values()) == round(10_001 * rate)
    for name, share in DEFAULT_PATTERN_SHARES.items():
        expected = 10_001 * rate * share / sum(DEFAULT_PATTERN_SHARES.values())
        assert abs(counts[name] - expected) <= 1, name


def test_patterns_are_spread_over_the_stream(realistic: pd.DataFrame) -> None:
    positions = np.flatnonzero(realistic["is_anomaly"].to_numpy())
    halves = np.histogram(positions, bins=2, range=(0, ROWS))[0]
    assert abs(halves[0] - halves[1]) < 0.1 * len(positions)


def test_hundreds_of_providers_with_uneven_volume(realistic: pd.DataFrame) -> None:
    volume = realistic["provider_id"].value_counts()
    assert 300 <= len(volume) <= PROVIDERS
    assert volume.iloc[0] > 10 * volume.median()


def test_normal_claims_look_like_claims(realistic: pd.DataFrame) -> None:
    normal = realistic[~realistic["is_anomaly"]]
    amount = normal["claim_amount"]
    assert amount.mean() > amount.median()  # right-skewed
    assert normal["claim_amount"].corr(normal["num_services"], method="spearman") > 0.3
    assert normal["patient_age"].corr(normal["days_since_last_claim"], method="spearman") < 0
    assert (normal["claim_amount"].round(2) == normal["claim_amount"]).all()  # cents
    times = realistic["submitted_at"]
    assert times.is_monotonic_increasing
    assert str(times.dt.tz) == "UTC"


def test_each_pattern_has_its_signature(realistic: pd.DataFrame) -> None:
    normal = realistic[realistic["pattern"] == ""]
    per_service = realistic["claim_amount"] / realistic["num_services"]

    def rows(name: str) -> pd.DataFrame:
        return realistic[realistic["pattern"] == name]

    assert per_service[rows("upcoding").index].median() > 1.8 * per_service[normal.index].median()
    assert rows("phantom_services")["num_services"].median() >= normal["num_services"].median() + 3
    assert rows("frequency_abuse")["days_since_last_claim"].max() <= 2
    assert rows("compromised_provider")["provider_id"].nunique() <= 4
    assert rows("gross_outlier")["claim_amount"].median() > 5 * normal["claim_amount"].median()


def test_fraud_is_not_trivially_separable(realistic: pd.DataFrame) -> None:
    """Apart from the lab-like gross outliers, no single feature (nor amount per service)
    separates a pattern from normal claims cleanly."""
    frame = realistic.assign(per_service=realistic["claim_amount"] / realistic["num_services"])
    features = [*CLAIM_FEATURES, "per_service"]
    for name in DEFAULT_PATTERN_SHARES:
        subset = frame[frame["pattern"].isin(["", name])]
        best = max(
            max(auc, 1 - auc)
            for auc in (roc_auc_score(subset["is_anomaly"], subset[f]) for f in features)
        )
        if name == "gross_outlier":
            assert best > 0.99
        else:
            assert best < 0.98, name


def test_realistic_claim_ids_carry_the_seed() -> None:
    frame = generate("realistic", 3, seed=7)
    assert frame["claim_id"].tolist() == ["C-7-0000001", "C-7-0000002", "C-7-0000003"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rows": 0}, "rows must be"),
    ({"anomaly_rate": 1.5}, "anomaly rate"),
    ({"seed": -1}, "seed must be"),
])
@pytest.mark.parametrize("profile", ["seed", "realistic"])
def test_bad_parameters_are_rejected(profile: str, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(profile, **kwargs)  # type: ignore[arg-type]


def test_submitted_at_is_a_fixed_base_plus_offsets() -> None:
    times = generate("realistic", 1000, seed=1)["submitted_at"]
    assert times.min() >= pd.Timestamp(datetime(2025, 1, 1), tz="UTC")
    assert times.max() < pd.Timestamp(datetime(2025, 4, 1), tz="UTC")
