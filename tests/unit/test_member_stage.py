"""The member stage's pure parts and the v2-history model: state as changelog bytes, a
batch's features kept apart from the store until commit, the served model's history path
(resubmission rule, reasons in words, no score without history) and point-in-time
training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from features.codes import build_code_reference
from features.member import (
    NO_HISTORY,
    PAYLOAD_FIELDS,
    MemberHistory,
    decode_history,
    encode_history,
    fingerprint,
    payload_digest,
    remember,
    step_histories,
)
from features.sets import V2_HISTORY, V2_PEERS, V2_VELOCITY, FeatureSetError
from features.vector import (
    HISTORY_FEATURES,
    PEER_FEATURES,
    VELOCITY_FEATURES,
    is_resubmission,
    replay,
)
from schemas import ClaimV2, MemberContext, ModelRef
from scorer.member_state import MemberStore, member_step
from scorer.model_settings import ModelSettings
from scorer.routing import Position
from scoring.model import MissingHistoryError, ServedModel, build_served_model
from scoring.model import member_features as served_member_features
from scoring.score_file import score_claims
from tests.v2_factory import as_contract, v2_claim, v2_claims, write_jsonl
from tests.v2_factory import member_claim as claim
from trainer.jsonl import load_jsonl
from trainer.model import TrainParams, train

REF = ModelRef(name="claim-anomaly", version="3", run_id="run-3")


def at(partition: int, offset: int = 0) -> Position:
    return Position("claims", partition, offset)


def test_state_round_trips_through_changelog_bytes() -> None:
    history = MemberHistory()
    for i, c in enumerate([claim("C-1"), claim("C-2", day=3), claim("C-3", day=3)]):
        history = remember(history, c)
        assert decode_history(encode_history(history)) == history, i
    with pytest.raises(ValueError, match="member state format"):
        decode_history(b"[99, 0, [], []]")


def test_a_batch_sees_its_own_earlier_claims_but_the_store_waits_for_the_commit() -> None:
    store = MemberStore()
    claims = [claim("C-1"), claim("C-2", day=1), claim("C-3", member="M2")]
    step = member_step(store, claims, [at(0, 0), at(0, 1), at(1, 0)])
    assert [f.claims_7d for f in step.features] == [1.0, 2.0, 1.0]
    assert store.get(0, "M1") == MemberHistory()  # nothing applied before the commit
    records = step.changelog("cl")
    assert sorted((r.key, r.partition) for r in records) == [(b"M1", 0), (b"M2", 1)]
    store.apply(step.updates)
    again = member_step(store, [claim("C-4", day=2)], [at(0, 2)])
    assert again.features[0].claims_7d == 3.0


def test_restored_bytes_are_decoded_on_first_use_and_revoked_partitions_forgotten() -> None:
    history = remember(MemberHistory(), claim("C-1"))
    store = MemberStore()
    store.load(4, {"M1": encode_history(history)})
    assert store.get(4, "M1") == history
    store.drop([4])
    assert store.get(4, "M1") == MemberHistory()


def test_a_v1_claim_has_no_member_history() -> None:
    from schemas import Claim
    from tests.v1_factory import claim_bytes

    step = member_step(MemberStore(), [Claim.from_json(claim_bytes())], [at(0)])
    assert step.features == [NO_HISTORY]
    assert not step.any_history()



def test_score_files_history_equals_the_streams_member_step_batch_by_batch() -> None:
    """score-file keys histories by member alone, the stream's member_step by partition and
    member: on one partition both give every claim the same member features (batches split
    mid-member, v1 claims mixed in)."""
    from schemas import Claim
    from tests.v1_factory import claim_bytes

    v1 = Claim.from_json(claim_bytes())
    claims: list[Claim | ClaimV2] = [*as_contract(v2_claims(120, seed=9)), v1]
    claims.insert(30, v1)
    store, histories = MemberStore(), dict[str, MemberHistory]()
    offset = 0
    for start in range(0, len(claims), 17):
        batch = claims[start:start + 17]
        step = member_step(store, batch, [at(0, offset + i) for i in range(len(batch))])
        offset += len(batch)
        keys = [c.member_id if isinstance(c, ClaimV2) else None for c in batch]
        by_member = step_histories(batch, keys, lambda m: histories.get(m, MemberHistory()))
        assert by_member.features == step.features
        histories.update(by_member.updates)
        store.apply(step.updates)
    assert member_step(store, [v1], [at(0, offset)]).features == [NO_HISTORY]

# -- the v2-history model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def history_model(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    path = write_jsonl(tmp_path_factory.mktemp("h") / "train.jsonl", v2_claims(1_500, seed=4))
    trained = train(load_jsonl(path), TrainParams(n_estimators=40, seed=4))
    return build_served_model(trained.estimator, trained.reference, REF, "claim-anomaly:v3",
                              ModelSettings())


@pytest.mark.parametrize(("chosen", "features", "peers", "recent"), [
    (None, VELOCITY_FEATURES, True, True),  # the default for v2 claims
    ("v2-peers", PEER_FEATURES, True, False),
    ("v2-history", HISTORY_FEATURES, False, False),
])
def test_training_is_point_in_time_and_split_by_time(
    tmp_path: Path, chosen: str | None, features: tuple[str, ...], peers: bool, recent: bool,
) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", v2_claims(500, seed=2))
    data = load_jsonl(path, chosen)
    trained = train(data, TrainParams(n_estimators=20, test_size=0.2))
    assert data.feature_set == (chosen or "v2-velocity")
    assert trained.reference.codes is not None
    assert trained.split.x_train.shape == (400, len(features))
    assert data.claims is not None
    expected = np.asarray([values for _, values, _ in
                           replay(data.claims, trained.reference.codes, peers, recent)])
    assert np.array_equal(trained.split.x_test, expected[400:])  # the file's last part
    assert "test_rule_findings" in trained.metrics


def test_a_history_model_never_scores_without_history(history_model: ServedModel) -> None:
    claims = as_contract(v2_claims(3, seed=9))
    with pytest.raises(MissingHistoryError, match="needs one member context per claim"):
        history_model.score(claims)
    with pytest.raises(MissingHistoryError):
        history_model.score(claims, [NO_HISTORY])


def test_a_velocity_model_refuses_contexts_of_an_older_worker(history_model: ServedModel
                                                              ) -> None:
    """A worker older than providers_7d sends contexts without it: a clear refusal, never a
    score from a stand-in value."""
    claims = as_contract(v2_claims(2, seed=9))
    old = {"claims_1d": 1.0, "claims_7d": 1.0, "claims_30d": 1.0, "providers_30d": 1.0,
           "days_since_previous": -1.0, "same_provider_same_day": 0.0, "duplicate": 0.0}
    contexts = [served_member_features(MemberContext.model_validate(old)) for _ in claims]
    assert contexts[0].providers_7d is None
    with pytest.raises(MissingHistoryError, match=r"reads providers_7d.*upgrade the workers"):
        history_model.score(claims, contexts)
    fresh = [served_member_features(MemberContext.model_validate({**old, "providers_7d": 1.0}))
             for _ in claims]
    assert len(history_model.score(claims, fresh)) == 2


def test_a_peers_model_scores_the_same_with_or_without_providers_7d(
    tmp_path: Path,
) -> None:
    """A model of an earlier set behind a worker that sends providers_7d (or one that does
    not) reads the 30-day count only: the same scores either way."""
    path = write_jsonl(tmp_path / "train.jsonl", v2_claims(600, seed=4))
    trained = train(load_jsonl(path, "v2-peers"), TrainParams(n_estimators=20, seed=4))
    model = build_served_model(trained.estimator, trained.reference, REF, "claim-anomaly:v3",
                               ModelSettings())
    claims = as_contract(v2_claims(40, seed=8))
    step = member_step(MemberStore(), claims, [at(0, i) for i in range(len(claims))])
    # An extreme value would move the scores if the model read it.
    extreme = orjson.loads(model.score_json(
        claims, [f._replace(providers_7d=99.0) for f in step.features]))
    without = orjson.loads(model.score_json(
        claims, [f._replace(providers_7d=None) for f in step.features]))
    assert extreme == without == orjson.loads(model.score_json(claims, step.features))


def test_score_file_equals_the_forest_on_replayed_features(history_model: ServedModel) -> None:
    claims = as_contract(v2_claims(300, seed=6))
    assert history_model.codes is not None
    assert history_model.feature_set is V2_VELOCITY
    x = np.asarray([values for _, values, _ in replay(claims, history_model.codes, peers=True,
                                                      recent_providers=True)])
    expected = history_model.forest.anomaly_scores(x)
    answers = list(score_claims(history_model, claims, batch=64))  # batch edges mid-member
    assert [a["claim_id"] for a in answers] == [c.claim_id for c in claims]
    assert np.allclose([a["anomaly_score"] for a in answers], expected, rtol=0, atol=1e-12)


def test_a_resubmission_is_investigated_by_rule_with_its_reason(
    history_model: ServedModel,
) -> None:
    original = claim("C-100", member="M-r", provider="P-r", charge=80.0)
    again = claim("C-101", member="M-r", provider="P-r", charge=80.0, submitted_days=12)
    same_day = claim("C-102", member="M-s", provider="P-s", charge=80.0)
    repeat = claim("C-103", member="M-s", provider="P-s", charge=80.0)
    answers = list(score_claims(history_model, [original, again, same_day, repeat]))
    rule = answers[1]
    assert rule["decision"] == "investigate"
    assert rule["reasons"][0]["kind"] == "rule"
    assert rule["reasons"][0]["message"] == (
        "same provider, date and services as claim C-100 filed 12 days earlier")
    # The same service billed twice on one day, submitted together: not a resubmission.
    assert all(r["kind"] != "rule" for r in answers[3]["reasons"])


def test_every_investigate_decision_has_a_reason_in_words(history_model: ServedModel) -> None:
    claims = as_contract(v2_claims(1_000, seed=8, anomaly_share=0.1))
    flagged = [a for a in score_claims(history_model, claims) if a["decision"] == "investigate"]
    assert flagged
    for answer in flagged:
        assert answer["reasons"], answer
        for reason in answer["reasons"]:
            # Investigator's words, not "claims_7d 9 is above the 99th percentile".
            assert not reason["message"].startswith(reason["feature"]), reason


@pytest.mark.parametrize("features", [V2_HISTORY, V2_PEERS, V2_VELOCITY])
def test_the_history_sets_have_no_identifiers_and_no_row_of_one_claim(features: Any) -> None:
    assert features.stateful
    assert not {"member_id", "provider_id", "claim_id", "procedure_code",
                "provider_specialty"} & set(features.features)
    with pytest.raises(FeatureSetError, match="need the member's history"):
        features.row(claim("C-1"))
    codes = build_code_reference(as_contract(v2_claims(200, seed=1)))
    assert not is_resubmission(next(replay([claim("C-1")], codes))[2])


# -- claim ids: decided once per member


def test_a_repeated_claim_id_is_set_aside_and_leaves_the_history_alone() -> None:
    first = claim("C-1")
    resent = claim("C-1", submitted_days=1)  # the same claim, another submitted_at
    other = claim("C-1", charge=999.0)  # another claim under the same id
    later = claim("C-2", day=1)
    step = member_step(MemberStore(), [first, resent, other, later],
                       [at(0, 0), at(0, 1), at(0, 2), at(0, 3)])
    assert {i: r.kind for i, r in step.repeats.items()} == {
        1: "duplicate_claim_id", 2: "claim_id_conflict"}
    assert step.features[3].claims_7d == 2.0  # C-1 counted once
    [history] = step.updates.values()
    assert [f.claim_id for f in history.fingerprints] == ["C-1", "C-2"]


def test_the_payload_digest_covers_every_field_of_the_contract_but_submitted_at() -> None:
    covered = [name for names in PAYLOAD_FIELDS.values() for name in names]
    assert sorted(covered) == sorted(ClaimV2.model_fields)
    base = claim("C-1")
    assert payload_digest(base) == payload_digest(claim("C-1", submitted_days=3))
    changes = {"provider_specialty": "cardiology", "place_of_service": "home",
               "patient_age": 45, "patient_sex": "M", "diagnosis_codes": ["Z00.0"]}
    for name, value in changes.items():
        assert payload_digest(base.model_copy(update={name: value})) != payload_digest(base)


def test_a_format_1_record_still_restores_and_its_claim_ids_are_recognised() -> None:
    c1 = claim("C-1")
    record = orjson.dumps([1, c1.service_date.toordinal(), [
        ["C-1", "P1", c1.service_date.toordinal(), c1.submitted_at.timestamp()]],
        [[fingerprint(c1), "C-1", c1.service_date.toordinal(), c1.submitted_at.timestamp()]]])
    store = MemberStore()
    store.load(0, {"M1": record})
    assert store.get(0, "M1").fingerprints[0].payload == ""
    step = member_step(store, [claim("C-1", submitted_days=2), claim("C-1", charge=50.0)],
                       [at(0, 5), at(0, 6)])
    # Without a payload digest the resubmission fingerprint (provider, date, lines) decides.
    assert [r.kind for r in step.repeats.values()] == ["duplicate_claim_id",
                                                       "claim_id_conflict"]
    assert encode_history(store.get(0, "M1")).startswith(b"[2,")


def test_score_file_answers_a_repeated_claim_id_as_the_stream_sets_it_aside(
    history_model: ServedModel,
) -> None:
    claims = [claim("C-1"), claim("C-2", day=1), claim("C-1", submitted_days=3),
              claim("C-1", charge=999.0), claim("C-3", day=2)]
    answers = list(score_claims(history_model, claims, batch=2))  # repeats across chunks
    assert [a["claim_id"] for a in answers] == ["C-1", "C-2", "C-1", "C-1", "C-3"]
    assert [a.get("error_kind") for a in answers] == [
        None, None, "duplicate_claim_id", "claim_id_conflict", None]
    unique = list(score_claims(history_model, [claims[0], claims[1], claims[4]]))
    assert [answers[i]["anomaly_score"] for i in (0, 1, 4)] == [
        a["anomaly_score"] for a in unique]


def test_a_charge_far_above_the_specialty_peers_is_a_reason_in_words(
    history_model: ServedModel,
) -> None:
    usual = v2_claim(claim_id="C-peer-1", member_id="M-peer", provider_id="P-peer",
                     lines=[{"procedure_code": "99213", "units": 1, "charge": 90.0}])
    inflated = v2_claim(claim_id="C-peer-2", member_id="M-peer2", provider_id="P-peer",
                        lines=[{"procedure_code": "99213", "units": 1, "charge": 60_000.0}])
    answers = list(score_claims(history_model, as_contract([usual, inflated])))
    assert answers[1]["decision"] == "investigate"
    messages = [reason["message"] for reason in answers[1]["reasons"]]
    assert any(m.startswith("charge ") and m.endswith(
        "the median for code 99213 among family medicine providers") for m in messages), messages
