"""The outcome view's shadow summary: claims.shadow records stored once per claim, agreement
per (champion, challenger) pair, precision of each model's investigate decisions on labelled
claims, ``GET /api/v1/shadow`` and the view consumer's split of the shadow topic."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.label_view import StoredLabel
from gateway.outcome_consumer import OutcomeConsumer
from gateway.shadow_view import (
    Labelled,
    Overlap,
    PairCounts,
    labelled_counts,
    overlap_counts,
    pair_summary,
    precision,
)
from schemas import Decision, Label, ModelRef, ShadowScore, ShadowVerdict, StreamSource
from schemas.label import Disposition
from tests.fake_message import FakeMessage
from tests.unit.gateway_fakes import (
    NOW,
    Gateway,
    OffsetsOnly,
    make_gateway,
)

CHAMPION = ModelRef(name="claim-anomaly", version="3", run_id="r3")
CHALLENGER = ModelRef(name="claim-anomaly", version="4", run_id="r4")


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path)
    yield gateway
    gateway.rt.close()


def verdict(model: ModelRef, flagged: bool) -> ShadowVerdict:
    return ShadowVerdict(model=model, anomaly_score=0.7 if flagged else 0.3, threshold=0.5,
                         decision="investigate" if flagged else "approve")


def shadow(claim_id: str, champion: bool, challenger: bool, minutes: int = 0,
           challenger_model: ModelRef = CHALLENGER) -> ShadowScore:
    return ShadowScore(claim_id=claim_id, champion=verdict(CHAMPION, champion),
                       challenger=verdict(challenger_model, challenger),
                       agree=champion == challenger, decided_at=NOW + timedelta(minutes=minutes),
                       source=StreamSource(topic="claims", partition=0, offset=minutes))


def label(claim_id: str, disposition: Disposition, offset: int) -> StoredLabel:
    decision = Decision.model_validate({
        "claim": {"claim_id": claim_id, "claim_amount": 1.0, "num_services": 1,
                  "patient_age": 40, "provider_id": 1, "days_since_last_claim": 1,
                  "submitted_at": NOW},
        "decision": "investigate", "anomaly_score": 0.7, "threshold": 0.5, "model": CHAMPION,
        "decided_at": NOW, "source": {"kind": "stream", "topic": "claims", "partition": 0,
                                      "offset": 0}})
    stored = Label.answering(decision, disposition, investigator="alice", decided_at=NOW)
    return StoredLabel(stored, 0, offset, stored.to_json())


def summary(gw: Gateway) -> dict[str, Any]:
    response = gw.client.get("/api/v1/shadow")
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


# -- arithmetic (pure)


def test_precision_is_fraud_over_labelled_and_null_without_labels() -> None:
    assert precision(Labelled(4, 3)) == 0.75
    assert precision(Labelled()) is None
    pair = ("m", "1", "m", "2")
    rows = [(*pair, "investigate", "investigate", "fraud", 3),
            (*pair, "investigate", "investigate", "legitimate", 1),
            (*pair, "investigate", "approve", "fraud", 2),
            (*pair, "investigate", "approve", "legitimate", 4),
            (*pair, "approve", "investigate", "legitimate", 1)]
    assert labelled_counts(rows) == {pair: (Labelled(10, 5), Labelled(5, 3))}
    out = pair_summary(pair, PairCounts(20, 15, 12, 9, 0, 60_000), *labelled_counts(rows)[pair])
    assert out["agreement"] == 0.75
    assert out["champion"]["precision"] == 0.5
    assert out["challenger"]["precision"] == 0.6
    assert out["challenger"]["investigate_unlabelled"] == 4
    assert out["last_decided_at"] == "1970-01-01T00:01:00+00:00"
    # The gate's bound: of the challenger's 9 flags, 6 the champion flagged too (4 of them
    # labelled), 1 only it flagged but labelled anyway, 2 nobody saw.
    overlap = overlap_counts(rows, [(*pair, 6)])[pair]
    assert overlap == Overlap(both_flagged=6, both_labelled=4, only_labelled=1)
    out = pair_summary(pair, PairCounts(20, 15, 12, 9, 0, 60_000),
                       *labelled_counts(rows)[pair], overlap)
    assert out["challenger_unseen"] == 2
    assert out["challenger_precision_bound"] == pytest.approx(3 / (5 + 2 * 4 / 6))


# -- the store and the API


def test_agreement_and_precision_over_the_shadow_period(gw: Gateway) -> None:
    records = [shadow("C-1", True, True), shadow("C-2", True, False, 1),
               shadow("C-3", False, False, 2), shadow("C-4", False, True, 3),
               shadow("C-5", True, True, 4)]
    gw.rt.outcomes.add([], {("claims.shadow", 0): 5}, shadows=records)
    # Labels: C-1 fraud, C-2 legitimate, C-5 needs_info (open: not counted).
    gw.rt.outcomes.add([], {("claims.labels", 0): 3},
                       [label("C-1", "fraud", 0), label("C-2", "legitimate", 1),
                        label("C-5", "needs_info", 2)])
    [pair] = summary(gw)["pairs"]
    assert (pair["claims"], pair["agree"], pair["agreement"]) == (5, 3, 0.6)
    assert pair["champion"] == {"name": "claim-anomaly", "version": "3", "investigate": 3,
                                "labelled": 2, "fraud": 1, "investigate_unlabelled": 1,
                                "precision": 0.5}
    assert pair["challenger"] == {"name": "claim-anomaly", "version": "4", "investigate": 3,
                                  "labelled": 1, "fraud": 1, "investigate_unlabelled": 2,
                                  "precision": 1.0}
    # C-4, flagged by the challenger only, was never labelled; half the claims both flagged
    # (C-1 of C-1 and C-5) were: the bound counts C-4 as half a legitimate claim.
    assert pair["challenger_unseen"] == 1
    assert pair["challenger_precision_bound"] == pytest.approx(1 / (1 + 1 * 0.5))
    assert pair["first_decided_at"] == NOW.isoformat()
    assert pair["last_decided_at"] == (NOW + timedelta(minutes=4)).isoformat()


def test_a_reread_record_counts_once_and_pairs_are_kept_apart(gw: Gateway) -> None:
    first = shadow("C-1", True, False)
    gw.rt.outcomes.add([], {("claims.shadow", 0): 1}, shadows=[first])
    gw.rt.outcomes.add([], {("claims.shadow", 0): 1}, shadows=[first])
    newer = ModelRef(name="claim-anomaly", version="5", run_id="r5")
    gw.rt.outcomes.add([], {("claims.shadow", 0): 2},
                       shadows=[shadow("C-2", True, True, 9, challenger_model=newer)])
    pairs = summary(gw)["pairs"]
    assert [(p["challenger"]["version"], p["claims"], p["agree"]) for p in pairs] == [
        ("5", 1, 1), ("4", 1, 0)]


def test_no_shadow_records_answer_no_pairs(gw: Gateway) -> None:
    assert summary(gw) == {"pairs": []}


def test_the_shadow_endpoint_needs_the_read_key(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, read_api_key="secret-read-key")
    try:
        assert gateway.client.get("/api/v1/shadow").status_code == 401
        ok = gateway.client.get("/api/v1/shadow", headers={"X-API-Key": "secret-read-key"})
        assert ok.status_code == 200
    finally:
        gateway.rt.close()


def test_the_view_consumer_reads_the_shadow_topic_beside_decisions(gw: Gateway) -> None:
    decision = gw.submit("C-mix")
    view = OutcomeConsumer(gw.rt.outcomes, "unused:9092", ["claims.investigate"], "g",
                           labels_topic="claims.labels", shadow_topic="claims.shadow")
    batch = [FakeMessage(decision.to_json(), 7, _topic="claims.investigate"),
             FakeMessage(shadow("C-mix", True, False).to_json(), 3, _topic="claims.shadow"),
             FakeMessage(b'{"claim_id": "C-mix"}', 4, _topic="claims.shadow")]  # invalid: skipped
    view._handle(OffsetsOnly(), batch)  # type: ignore[arg-type]
    [pair] = summary(gw)["pairs"]
    assert (pair["claims"], pair["agree"]) == (1, 0)
    assert gw.rt.outcomes.positions() == {("claims.investigate", 0): 8, ("claims.shadow", 0): 5}
