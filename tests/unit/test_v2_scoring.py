"""Claims of contract version 2 through the pure scoring core: feature sets, the served model
and its version guard, explanations, the worker's routing, the trainer's JSON Lines."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest

from features.reference import build_reference
from features.sets import (
    V1,
    V2_CLAIM,
    V2_VELOCITY,
    FeatureSetError,
    feature_set,
    for_claim_version,
)
from schemas import Claim, ClaimV2, DeadLetter, Decision, ModelRef, ScoreRefusal, ScoreResult
from scorer.model_settings import ModelSettings
from scorer.routing import route_batch, split_batch
from scoring.model import ModelLoadError, ServedModel, build_served_model
from tests.fake_message import FakeMessage
from tests.v1_factory import MAX_BYTES, TOPICS, claim_bytes
from tests.v2_factory import as_contract, v2_claim, v2_claims, without_labels, write_jsonl
from trainer.data import DataError
from trainer.jsonl import load_jsonl
from trainer.model import TrainParams, train

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
REF = ModelRef(name="claim-anomaly", version="9", run_id="run-9")


def contract(**overrides: object) -> ClaimV2:
    return as_contract([v2_claim(**overrides)])[0]


# -- feature sets -----------------------------------------------------------------------------


def test_v2_claim_features_are_claim_level_numbers() -> None:
    claim = contract(lines=[{"procedure_code": "99213", "units": 2, "charge": 300.0},
                            {"procedure_code": "80053", "units": 1, "charge": 50.0}],
                     diagnosis_codes=["E11.9", "I10"], patient_age=61)
    values = dict(zip(V2_CLAIM.features, V2_CLAIM.values(claim), strict=True))
    assert values == {"claim_amount": 350.0, "num_services": 3.0, "num_lines": 2.0,
                      "num_diagnoses": 2.0, "patient_age": 61.0, "max_unit_charge": 150.0,
                      "amount_per_service": pytest.approx(350.0 / 3)}


def test_no_identifier_or_code_is_a_feature() -> None:
    assert not {"member_id", "provider_id", "claim_id", "procedure_code"} & set(V2_CLAIM.features)


def test_v1_features_are_the_lab_five_unchanged() -> None:
    claim = Claim.from_json(claim_bytes())
    assert V1.features == ("claim_amount", "num_services", "patient_age", "provider_id",
                           "days_since_last_claim")
    assert tuple(map(float, V1.values(claim))) == claim.features()


def test_a_feature_set_reads_only_its_claim_version() -> None:
    with pytest.raises(FeatureSetError, match="scores claims of schema_version 2; this claim "
                       "is schema_version 1"):
        V2_CLAIM.values(Claim.from_json(claim_bytes()))
    assert for_claim_version(2) is V2_VELOCITY  # the default for v2 training data
    with pytest.raises(FeatureSetError, match="unknown feature set"):
        feature_set("v3")


# -- the served model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v2_model(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    path = write_jsonl(tmp_path_factory.mktemp("v2") / "train.jsonl", v2_claims(800))
    trained = train(load_jsonl(path, "v2-claim"), TrainParams(n_estimators=50))
    return build_served_model(trained.estimator, trained.reference, REF, "claim-anomaly:v9",
                              ModelSettings())


def test_v2_model_scores_v2_claims_like_scikit_learn(v2_model: ServedModel) -> None:
    claims = as_contract(v2_claims(200, seed=11))
    answers = v2_model.score(claims)
    assert all(isinstance(a, ScoreResult) for a in answers)
    # The reference the model was built from is the v2 feature set's.
    assert v2_model.explainer.features == V2_CLAIM.features
    assert v2_model.score_one(claims[0]) == answers[0]


def test_v2_reasons_speak_in_words(v2_model: ServedModel) -> None:
    lines = [{"procedure_code": "99213", "units": 1, "charge": 90_000.0}] * 40
    [answer] = v2_model.score(as_contract([v2_claim(lines=lines)]))
    assert isinstance(answer, ScoreResult)
    assert answer.decision == "investigate"
    messages = [reason.message for reason in answer.reasons]
    assert any(m.startswith("claim_amount 3,600,000 is above the training maximum") for m in
               messages), messages


def test_v2_model_refuses_v1_claims_in_place(v2_model: ServedModel) -> None:
    v1 = Claim.from_json(claim_bytes(claim_id="C-v1"))
    v2 = as_contract(v2_claims(2, seed=3))
    answers = v2_model.score([v2[0], v1, v2[1]])
    assert [type(a) for a in answers] == [ScoreResult, ScoreRefusal, ScoreResult]
    assert answers[0] == v2_model.score([v2[0]])[0]
    refusal = answers[1]
    assert isinstance(refusal, ScoreRefusal)
    assert refusal.claim_id == "C-v1"
    assert refusal.error_kind == "unsupported_version"
    assert "feature set v2-claim" in refusal.error
    assert v2_model.score_one(v1) == refusal


def test_a_reference_whose_features_disagree_with_its_set_is_not_served() -> None:
    reference = build_reference(np.array([[1.0] * 5, [2.0] * 5]), V1.features,
                                feature_set="v2-claim", claim_version=2)
    with pytest.raises(ModelLoadError, match="feature set v2-claim"):
        build_served_model(None, reference, REF, "t:v1", ModelSettings())


# -- the worker's routing ---------------------------------------------------------------------


def test_v2_claims_become_decisions_keyed_by_claim_id_whatever_the_input_key(
    v2_model: ServedModel,
) -> None:
    raw = orjson.dumps(without_labels(v2_claim(claim_id="C2-77", member_id="M-5")))
    batch = split_batch([FakeMessage(raw, _offset=4, _key=b"M-5")], max_bytes=MAX_BYTES, now=NOW)
    routed = route_batch(batch, v2_model.score(batch.claims), decided_at=NOW, topics=TOPICS,
                         max_bytes=MAX_BYTES)
    [out] = routed.outgoing
    assert out.key == b"C2-77"
    decision = Decision.from_json(out.value)
    assert decision.claim.schema_version == 2
    assert decision.claim == batch.claims[0]
    assert routed.refused == []


def test_refused_claims_are_dead_lettered_with_original_bytes_and_key(
    v2_model: ServedModel,
) -> None:
    v1_raw = claim_bytes(claim_id="C-v1")
    v2_raw = orjson.dumps(without_labels(v2_claim(claim_id="C2-1")))
    batch = split_batch([FakeMessage(v2_raw, _offset=0, _key=b"M-1"),
                         FakeMessage(v1_raw, _offset=1, _key=b"C-v1")],
                        max_bytes=MAX_BYTES, now=NOW)
    routed = route_batch(batch, v2_model.score(batch.claims), decided_at=NOW, topics=TOPICS,
                         max_bytes=MAX_BYTES)
    assert [o.key for o in routed.outgoing] == [b"C2-1"]
    [rejected] = routed.refused
    letter = rejected.letter
    assert letter.error_kind == "unsupported_version"
    assert "schema_version 2; this claim is schema_version 1" in letter.error
    assert "claim-anomaly v9" in letter.error
    assert letter.original_value == v1_raw
    assert letter.original_key_b64 == base64.b64encode(b"C-v1").decode()
    assert letter.source.offset == 1
    assert DeadLetter.from_json(rejected.outgoing(TOPICS.deadletter).value) == letter


@pytest.mark.parametrize(
    ("claim", "path"),
    [
        (v2_claim(claim_amount=1.0), "claim_amount"),
        (v2_claim(lines=[{"procedure_code": "99213", "units": 1, "charge": 1.0}] * 101),
         "lines"),
        (v2_claim(lines=[{"procedure_code": "99 213", "units": 1, "charge": 1.0}]),
         "lines.0.procedure_code"),
        (v2_claim(service_date="2026/11/20"), "service_date"),
    ],
)
def test_bad_v2_input_is_dead_lettered_with_its_field_path(claim: dict[str, object],
                                                           path: str) -> None:
    raw = orjson.dumps(claim)
    batch = split_batch([FakeMessage(raw, _key=b"M-1")], max_bytes=1 << 16, now=NOW)
    [rejected] = batch.rejected
    assert rejected.letter.error_kind == "contract_violation"
    assert f"{path}:" in rejected.letter.error
    assert rejected.key == b"M-1"


# -- the trainer's JSON Lines -----------------------------------------------------------------


def test_jsonl_strips_labels_and_records_the_feature_set(tmp_path: Path) -> None:
    data = load_jsonl(write_jsonl(tmp_path / "x.jsonl", v2_claims(50)), "v2-claim")
    assert data.feature_set == "v2-claim"
    assert data.features.shape == (50, len(V2_CLAIM.features))
    assert data.labels is not None
    assert data.patterns is not None
    assert set(data.patterns) <= {"", "gross_outlier"}


def test_jsonl_mixing_versions_is_rejected(tmp_path: Path) -> None:
    v1 = orjson.loads(claim_bytes())
    path = write_jsonl(tmp_path / "x.jsonl", [*v2_claims(3), v1])
    with pytest.raises(DataError, match="line 4 is a schema_version 1 claim, line 1 is "
                       "schema_version 2"):
        load_jsonl(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "line 2 is not JSON"),
        (b"[1]", "line 2 is not a JSON object"),
        (orjson.dumps({**v2_claim(), "is_anomaly": "yes"}), "is_anomaly must be true or false"),
        (orjson.dumps(v2_claim(num_services=7)), "line 2: invalid Claim: num_services"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, line: bytes, message: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(orjson.dumps(v2_claim()) + b"\n" + line + b"\n")
    with pytest.raises(DataError, match=message):
        load_jsonl(path)


def test_v2_training_is_deterministic_and_evaluated(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", v2_claims(600))
    first = train(load_jsonl(path, "v2-claim"), TrainParams(n_estimators=30))
    again = train(load_jsonl(path, "v2-claim"), TrainParams(n_estimators=30))
    assert first.metrics == again.metrics
    assert first.reference.feature_set == "v2-claim"
    assert first.reference.claim_version == 2
    assert {"pr_auc", "precision_at_budget", "recall_gross_outlier"} <= set(first.metrics)
