"""Shadow scoring in the worker: the ShadowScore contract, its fast encoder, and the loop
writing one record per decided claim inside the batch's transaction (fakes from
tests/fake_kafka.py). The service's side: tests/unit/test_shadow_service.py."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from confluent_kafka import KafkaError

from schemas import (
    ContractError,
    ModelRef,
    ScoreAnswer,
    ScoreRefusal,
    ScoreResult,
    ShadowScore,
)
from scorer.client import ShadowAnswer
from scorer.routing import Position
from scorer.shadow import (
    ENCODED_SHADOW_FIELDS,
    ShadowColumns,
    ShadowEncoder,
    ShadowMismatchError,
    shadow_records,
)
from tests.fake_kafka import FakeModelClient, Harness, abortable, fast_settings, three_claims
from tests.v1_factory import claim_bytes

NOW = datetime(2026, 11, 26, 18, 0, 0, 123456, tzinfo=UTC)
CHAMPION = ModelRef(name="claim-anomaly", version="7", run_id="run-7")
CHALLENGER = ModelRef(name="claim-anomaly", version="8", run_id="run-8")
SHADOW = "claims.shadow"


def result(claim_id: str, score: float, model: ModelRef, threshold: float = 0.5
           ) -> ScoreResult:
    return ScoreResult(claim_id=claim_id, anomaly_score=score, threshold=threshold,
                       decision="investigate" if score > threshold else "approve", model=model)


def shadows(h: Harness) -> list[ShadowScore]:
    return [ShadowScore.from_json(record.value) for record in h.cluster.on(SHADOW)]


def challenger(threshold: float = 20_000.0) -> FakeModelClient:
    return FakeModelClient(threshold=threshold, model=CHALLENGER)


# -- the contract and its encoder


def columns(answers: list[ScoreAnswer], model: ModelRef = CHALLENGER,
            threshold: float = 0.5) -> ShadowColumns:
    scored = [a if isinstance(a, ScoreResult) else None for a in answers]
    return ShadowColumns(model=model, threshold=threshold,
                         claim_ids=[a.claim_id for a in answers],
                         scores=[None if r is None else r.anomaly_score for r in scored],
                         decisions=[None if r is None else r.decision for r in scored])


def test_the_encoder_writes_what_the_contract_writes() -> None:
    # Scores as both families give them: a forest's near 0.5, a classifier's as small as
    # 1e-9 (written in exponent form), and round numbers.
    rng = np.random.default_rng(5)
    scores = [*rng.random(40), *(10 ** rng.uniform(-12, 0, 40)), 0.0, 1.0, 0.5, 1e-5]
    n = len(scores)
    champion = [result(f"C-{i}", float(s), CHAMPION, 0.61) for i, s in enumerate(scores)]
    challenger = columns([result(f"C-{i}", float(s), CHALLENGER, 1e-3)
                          for i, s in enumerate(scores[::-1])], threshold=1e-3)
    positions = [Position("claims", i % 3, 1234 + i) for i in range(n)]
    encoded = ShadowEncoder(NOW).encode_batch(champion, challenger, list(range(n)), positions)
    assert tuple(ShadowScore.model_fields) == ENCODED_SHADOW_FIELDS
    for i, record in enumerate(encoded):
        message = ShadowScore.from_json(record)
        assert message.to_json() == record
        assert message.champion.anomaly_score == scores[i]
        assert message.challenger.anomaly_score == scores[n - 1 - i]
        assert message.champion.model == CHAMPION
        assert message.challenger.model == CHALLENGER
        assert message.agree is (message.champion.decision == message.challenger.decision)
        assert (message.source.partition, message.source.offset) == (i % 3, 1234 + i)
        assert message.decided_at == NOW
    assert {orjson.loads(r)["agree"] for r in encoded} == {True, False}


def test_the_contract_refuses_a_verdict_without_a_model() -> None:
    good = orjson.loads(ShadowEncoder(NOW).encode_batch(
        [result("C-1", 0.6, CHAMPION)], columns([result("C-1", 0.6, CHALLENGER)]), [0],
        [Position("claims", 0, 1)])[0])
    del good["challenger"]["model"]
    with pytest.raises(ContractError) as info:
        ShadowScore.from_json(orjson.dumps(good))
    assert "challenger.model" in info.value.paths()


def test_records_skip_claims_either_model_refused_and_count_agreement() -> None:
    from scorer.routing import split_batch
    from tests.fake_message import FakeMessage

    batch = split_batch([FakeMessage(claim_bytes(claim_id=f"C-{i}"), i) for i in range(4)],
                        max_bytes=16_384, now=NOW)
    refusal = ScoreRefusal(claim_id="", error_kind="unsupported_version", error="v2 only",
                           model=CHALLENGER)
    champion: list[ScoreAnswer] = [result("C-0", 0.6, CHAMPION), result("C-1", 0.2, CHAMPION),
                refusal.model_copy(update={"claim_id": "C-2", "model": CHAMPION}),
                result("C-3", 0.2, CHAMPION)]
    challenger_answers: list[ScoreAnswer] = [
        result("C-0", 0.7, CHALLENGER), result("C-1", 0.9, CHALLENGER),
        result("C-2", 0.1, CHALLENGER), refusal.model_copy(update={"claim_id": "C-3"})]
    records = shadow_records(batch.claims, batch.positions, champion,
                             columns(challenger_answers), decided_at=NOW, topic=SHADOW)
    assert [r.key for r in records.outgoing] == [b"C-0", b"C-1"]
    assert (records.refused, records.agreed) == (1, 1)
    sent = [ShadowScore.from_json(r.value) for r in records.outgoing]
    assert [(m.claim_id, m.challenger.anomaly_score, m.source.offset) for m in sent] == [
        ("C-0", 0.7, 0), ("C-1", 0.9, 1)]
    with pytest.raises(ShadowMismatchError, match="3 claim ids, 3 scores and 3 decisions "
                                                  "for 4 claims"):
        shadow_records(batch.claims, batch.positions, champion,
                       columns(challenger_answers[:3]), decided_at=NOW, topic=SHADOW)
    with pytest.raises(ShadowMismatchError, match="claim_id=C-3 where claim_id=C-0"):
        shadow_records(batch.claims, batch.positions, champion,
                       columns(challenger_answers[::-1]), decided_at=NOW, topic=SHADOW)
    ragged = columns(challenger_answers).model_copy(update={"scores": [0.7, 0.9, 0.1]})
    with pytest.raises(ShadowMismatchError, match="4 claim ids, 3 scores"):
        shadow_records(batch.claims, batch.positions, champion, ragged, decided_at=NOW,
                       topic=SHADOW)


def test_columns_are_read_leniently() -> None:
    wire = orjson.dumps({"model": CHALLENGER.model_dump(), "threshold": 0.5,
                         "claim_ids": ["C-1", "C-2"], "scores": [0.42, None],
                         "decisions": ["approve", None], "added_later": [1, 2]})
    read = ShadowColumns.model_validate_json(wire)
    assert (read.scores, read.decisions) == ([0.42, None], ["approve", None])


# -- the loop


def decided_without_shadow(h: Harness, reason: str) -> None:
    """Three claims are decided, none gets a shadow record, each is counted as ``reason``."""
    three_claims(h.cluster)
    h.run()
    assert len(h.cluster.decisions()) == 3
    assert h.cluster.on(SHADOW) == []
    assert h.metrics.registry.get_sample_value(
        "claimflow_scorer_shadow_missing_total", {"reason": reason}) == 3


def test_each_decided_claim_gets_one_shadow_score_in_the_batch_transaction() -> None:
    h = Harness(client=FakeModelClient(challenger=challenger()))
    three_claims(h.cluster)
    h.run()

    assert h.cluster.commits == 1
    # Routing is the champion's: C-2 is investigated though the challenger approves it.
    assert h.cluster.decisions() == {"C-1": "claims.approved", "C-2": "claims.investigate",
                                     "C-3": "claims.approved"}
    records = shadows(h)
    assert sorted(r.claim_id for r in records) == ["C-1", "C-2", "C-3"]
    assert [r.key for r in h.cluster.on(SHADOW)] == [b"C-1", b"C-2", b"C-3"]
    by_id = {r.claim_id: r for r in records}
    assert by_id["C-2"].champion.decision == "investigate"
    assert by_id["C-2"].challenger.decision == "approve"
    assert by_id["C-2"].agree is False
    assert by_id["C-1"].agree is True
    assert {r.champion.model.version for r in records} == {"7"}
    assert {r.challenger.model.version for r in records} == {"8"}
    # Same features for both: the challenger saw the same claims and member contexts.
    assert h.client.calls[0][0] == h.client.challenger.calls[0][0]  # type: ignore[union-attr]
    assert h.client.calls[0][1] == h.client.challenger.calls[0][1]  # type: ignore[union-attr]
    # Same decided_at and source as the decision.
    decision = orjson.loads(h.cluster.on("claims.investigate")[0].value)
    assert by_id["C-2"].decided_at.isoformat().replace("+00:00", "Z") == decision["decided_at"]
    assert by_id["C-2"].source.model_dump() == decision["source"]
    assert h.counter("shadow_scores_total") == 3


def test_no_challenger_means_no_shadow_records() -> None:
    h = Harness()
    decided_without_shadow(h, "no_challenger")


def test_shadow_off_asks_the_plain_api() -> None:
    h = Harness(client=FakeModelClient(challenger=challenger()),
                settings=fast_settings(shadow=False))
    three_claims(h.cluster)
    h.run()
    assert len(h.cluster.decisions()) == 3
    assert h.cluster.on(SHADOW) == []
    assert h.client.shadow_calls == 0


def test_an_unfit_challenger_answer_never_holds_routing_back() -> None:
    class Broken(FakeModelClient):
        def score_batch(self, claims, members=None):  # type: ignore[no-untyped-def]
            return super().score_batch(claims, members)[:-1]

    h = Harness(client=FakeModelClient(challenger=Broken(model=CHALLENGER)))
    decided_without_shadow(h, "mismatch")
    assert h.counter("shadow_scores_total") == 0


def test_an_aborted_batch_leaves_no_shadow_records_and_its_redo_writes_them_once() -> None:
    h = Harness(client=FakeModelClient(challenger=challenger()))
    three_claims(h.cluster)
    h.producers.fail("commit_transaction", abortable(KafkaError.ILLEGAL_GENERATION))
    h.next_batch()
    assert h.cluster.aborts == 1
    assert h.cluster.on(SHADOW) == []
    h.run()
    assert sorted(r.claim_id for r in shadows(h)) == ["C-1", "C-2", "C-3"]
    assert h.counter("shadow_scores_total") == 3  # counted once committed, not per attempt


def test_dead_letters_get_no_shadow_record() -> None:
    h = Harness(client=FakeModelClient(reads=2, challenger=challenger()))
    h.cluster.append(0, claim_bytes(claim_id="C-v1"), key=b"C-v1")
    h.cluster.append(0, b"not json", key=b"x")
    h.cluster.append_claim(1, claim_id="C-v2", member_id="M1")
    h.run()
    assert h.cluster.decisions() == {"C-v2": "claims.approved"}
    assert [r.claim_id for r in shadows(h)] == ["C-v2"]


def test_an_unreadable_challenger_answer_is_a_mismatch_and_routing_goes_on() -> None:
    class OldService(FakeModelClient):
        def score_batch_shadow(self, claims, members=None):  # type: ignore[no-untyped-def]
            results = self.score_batch(claims, members)
            return ShadowAnswer(results, None, unreadable="2 errors, first at shadow: ...")

    h = Harness(client=OldService())
    decided_without_shadow(h, "mismatch")
