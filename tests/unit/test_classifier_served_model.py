"""The model service serves the supervised family: the score is the fraud probability, the
threshold is the one chosen at training time, reasons come from the same explainer."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from schemas import ModelRef
from scorer.member_state import MemberStore, member_step
from scorer.model_settings import ModelSettings
from scorer.routing import Position
from scoring.classifier import GRADIENT_BOOSTING, classifier_scorer, family_of
from scoring.model import ModelLoadError, ServedModel, build_served_model
from scoring.score_file import score_claims
from tests.v2_factory import as_contract, v2_claims, write_jsonl
from tests.v2_factory import member_claim as resubmission
from trainer.jsonl import load_jsonl
from trainer.supervised import SupervisedModel, SupervisedParams, train_supervised

Trained = tuple[SupervisedModel, list[dict[str, Any]]]
REF = ModelRef(name="claim-anomaly", version="7", run_id="r7")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    claims = v2_claims(1_500, seed=9, anomaly_share=0.08)
    path = write_jsonl(tmp_path_factory.mktemp("clf") / "c.jsonl", claims)
    return train_supervised(load_jsonl(path), SupervisedParams(curve_sizes=())), claims


@pytest.fixture(scope="module")
def served(trained: Trained) -> ServedModel:
    model, _ = trained
    return build_served_model(model.estimator, model.reference, REF, "claim-anomaly:v7",
                              ModelSettings(), threshold=model.threshold)


def test_the_served_score_is_the_fraud_probability_of_the_training_features(
        trained: Trained, served: ServedModel) -> None:
    model, claims = trained
    assert served.family == GRADIENT_BOOSTING
    answers = list(score_claims(served, as_contract(claims)))
    test = answers[-model.split.x_test.shape[0]:]
    # score-file gives each claim the stream's member history: the same features training
    # computed point in time, hence the same probabilities.
    assert np.allclose([a["anomaly_score"] for a in test], model.test_scores, rtol=0,
                       atol=1e-12)
    assert {a["threshold"] for a in answers} == {model.threshold}


def test_decisions_follow_the_training_threshold_or_the_rule_and_give_reasons(
        trained: Trained, served: ServedModel) -> None:
    _, claims = trained
    answers = list(score_claims(served, as_contract(claims)))
    for answer in answers:
        by_rule = any(r["kind"] == "rule" for r in answer["reasons"])
        expected = by_rule or answer["anomaly_score"] > answer["threshold"]
        assert (answer["decision"] == "investigate") == expected
    flagged = [a for a in answers if a["decision"] == "investigate"]
    assert flagged, "the factory's gross outliers must be investigated"
    # Roughly the budget: 5 % of claims like the training claims score above the threshold.
    assert 0.02 < len(flagged) / len(answers) < 0.10
    assert all(a["reasons"] for a in flagged)
    assert all(0.0 <= a["anomaly_score"] <= 1.0 for a in answers)


def test_verdict_columns_are_the_explained_answers_without_reasons(
        trained: Trained, served: ServedModel) -> None:
    """What shadow scoring asks of a challenger: same scores, thresholds and decisions (the
    resubmission rule included), no reasons."""
    _, claims = trained
    resubmitted = [resubmission("C-R1", member="M-r", provider="P-r", charge=80.0),
                   resubmission("C-R2", member="M-r", provider="P-r", charge=80.0,
                                submitted_days=12)]
    contract = [*as_contract(claims), *resubmitted]
    store, positions = MemberStore(), [Position("file", 0, 0)] * len(contract)
    step = member_step(store, contract, positions)
    explained = orjson.loads(served.score_json(contract, step.features))
    columns = orjson.loads(served.verdicts_json(contract, step.features))
    assert columns == {"model": explained[0]["model"], "threshold": explained[0]["threshold"],
                       "claim_ids": [r["claim_id"] for r in explained],
                       "scores": [r["anomaly_score"] for r in explained],
                       "decisions": [r["decision"] for r in explained]}
    assert any(r["kind"] == "rule" for answer in explained for r in answer["reasons"])


def test_a_classifier_without_its_threshold_is_not_served(
        trained: Trained) -> None:
    model, _ = trained
    with pytest.raises(ModelLoadError, match="threshold chosen at training time"):
        build_served_model(model.estimator, model.reference, REF, "t:v7", ModelSettings())


def test_family_is_told_by_what_the_estimator_can_do(
        trained: Trained) -> None:
    model, _ = trained
    assert family_of(model.estimator) == GRADIENT_BOOSTING
    with pytest.raises(ValueError, match="neither"):
        family_of(object())
    with pytest.raises(ValueError, match="not a finite"):
        classifier_scorer(model.estimator, float("nan"))
    scorer = classifier_scorer(model.estimator, 0.5)
    row = model.split.x_test[0].tolist()
    assert scorer.anomaly_score(row) == scorer.anomaly_scores([row])[0]
    assert scorer.n_trees == model.estimator.n_iter_




def test_single_threaded_prediction_equals_predict_proba(trained: Trained) -> None:
    model, _ = trained
    scorer = classifier_scorer(model.estimator, model.threshold)
    x = model.split.x_test
    assert np.array_equal(scorer.anomaly_scores(x), model.estimator.predict_proba(x)[:, 1])
