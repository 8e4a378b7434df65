"""The served model (compiled forest + explainer): what the model service answers."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from sklearn.ensemble import IsolationForest

from features.reference import build_reference
from schemas import ModelRef, ScoreResult
from schemas.score import only_results
from scorer.holder import ModelHolder
from scorer.model_settings import ModelSettings
from scoring.model import ModelLoadError, ServedModel, Wanted, build_served_model
from tests.v1_factory import claim, claims_for

REF = ModelRef(name="claim-anomaly", version="7", run_id="run-7")


@pytest.fixture(scope="module")
def training() -> np.ndarray:
    rng = np.random.default_rng(5)
    n = 5_000
    return np.column_stack(
        [
            np.round(rng.lognormal(7.0, 0.5, n), 2),
            rng.integers(1, 8, n),
            rng.integers(18, 91, n),
            rng.integers(1, 1001, n),
            rng.integers(0, 366, n),
        ]
    ).astype(np.float64)


@pytest.fixture(scope="module")
def estimator(training: np.ndarray) -> IsolationForest:
    return IsolationForest(n_estimators=60, contamination=0.05, random_state=3).fit(training)


@pytest.fixture(scope="module")
def served(estimator: IsolationForest, training: np.ndarray) -> ServedModel:
    settings = ModelSettings(claimflow_home="/nonexistent")
    return build_served_model(
        estimator, build_reference(training), REF, "claim-anomaly:v7", settings
    )


def test_batch_results_equal_scikit_learn(
    served: ServedModel, estimator: IsolationForest, training: np.ndarray
) -> None:
    claims = claims_for(training[:2_000])
    claims.append(claim(99_999, claim_amount=250_000.0, num_services=60))
    results = only_results(served.score(claims))
    x = np.array([c.features() for c in claims])
    expected = -estimator.score_samples(x)
    assert [r.claim_id for r in results] == [c.claim_id for c in claims]
    np.testing.assert_array_equal([r.anomaly_score for r in results], expected)
    assert [r.decision == "investigate" for r in results] == (estimator.predict(x) == -1).tolist()
    assert {r.threshold for r in results} == {-estimator.offset_}
    assert {r.model for r in results} == {REF}
    odd = results[-1]
    assert odd.decision == "investigate"
    assert [reason.feature for reason in odd.reasons] == ["claim_amount", "num_services"]
    assert "is above the training maximum" in odd.reasons[0].message


def test_wire_format_is_the_contract(served: ServedModel) -> None:
    claims = [claim(1), claim(2, claim_amount=90_000.0)]
    raw = orjson.loads(served.score_json(claims))
    assert [ScoreResult.model_validate_json(orjson.dumps(item)) for item in raw] == (
        served.score(claims)
    )
    assert raw[1]["model"] == {"name": "claim-anomaly", "version": "7", "run_id": "run-7"}
    assert raw[1]["schema_version"] == 1


def test_single_claim_equals_batch(served: ServedModel, training: np.ndarray) -> None:
    claims = claims_for(training[:300])
    claims.append(claim(12_345, patient_age=0, claim_amount=5.0))
    assert [served.score_one(c) for c in claims] == served.score(claims)


def test_typical_claim_is_approved_without_reasons(
    served: ServedModel, training: np.ndarray
) -> None:
    median = np.median(training, axis=0)
    typical = claim(3, claim_amount=float(median[0]), num_services=int(median[1]),
                    patient_age=int(median[2]), provider_id=int(median[3]),
                    days_since_last_claim=int(median[4]))
    [result] = only_results([served.score_one(typical)])
    assert result.decision == "approve"
    assert result.reasons == []
    assert 0.0 < result.anomaly_score < result.threshold


def test_empty_batch(served: ServedModel) -> None:
    assert served.score([]) == []


class FlakySource:
    """A model source whose answers the test controls (no registry needed)."""

    def __init__(self) -> None:
        self.error: str | None = "registered model 'claim-anomaly' has no alias champion"

    def wanted(self) -> Wanted:
        if self.error:
            raise ModelLoadError(self.error)
        return Wanted(tag="claim-anomaly:v1", version="1", run_id="r1")


def test_holder_keeps_nothing_until_a_model_exists() -> None:
    holder = ModelHolder(ModelSettings(claimflow_home="/nonexistent"), FlakySource())
    with pytest.raises(ModelLoadError, match="no alias champion"):
        holder.refresh()
    assert holder.current is None


def test_settings_reject_inverted_tails() -> None:
    with pytest.raises(ValueError, match="below the high one"):
        ModelSettings(reason_low_percentile=99.5, reason_high_percentile=99.0)
