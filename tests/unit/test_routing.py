"""The stream worker's pure core: raw messages -> claims or dead letters -> decisions."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Claim, DeadLetter, Decision, ModelRef, Reason, ScoreResult, StreamSource
from scorer.routing import (
    ENCODED_DECISION_FIELDS,
    DecisionEncoder,
    Position,
    RoutingError,
    build_decision,
    check_value,
    position_of,
    route_decisions,
    split_batch,
)
from tests.fake_message import FakeMessage
from tests.v1_factory import MAX_BYTES, NOW, TOPICS, claim_bytes, claim_dict


def without(field: str) -> bytes:
    claim = claim_dict()
    del claim[field]
    return json.dumps(claim).encode()


def split(*messages: FakeMessage) -> Any:
    return split_batch(list(messages), max_bytes=MAX_BYTES, now=NOW)


def test_a_valid_claim_is_kept_with_its_position() -> None:
    batch = split(FakeMessage(claim_bytes(), _offset=41, _partition=2))
    assert [claim.claim_id for claim in batch.claims] == ["C-1"]
    assert batch.positions == [Position("claims", 2, 41)]
    assert batch.positions[0].source() == StreamSource(topic="claims", partition=2, offset=41)
    assert batch.rejected == []
    assert batch.consumed == 1
    assert batch.next_offsets == {("claims", 2): 42}
    assert batch.first_offsets == {("claims", 2): 41}


BAD_INPUT = [
    # (value, kind, words the reason must contain)
    pytest.param(None, "empty", "empty", id="no-value"),
    pytest.param(b"", "empty", "empty", id="empty-value"),
    pytest.param(b"x" * (MAX_BYTES + 1), "too_large", f"{MAX_BYTES + 1} bytes exceeds",
                 id="too-large"),
    pytest.param(b"hello claims", "not_json", "not JSON", id="plain-text"),
    pytest.param(b"\x00\x9f\xff\x10binary", "not_json", "not JSON", id="binary-junk"),
    pytest.param(b'{"claim_id": "C-1", "claim_amount":', "not_json", "EOF", id="truncated"),
    pytest.param(b'{"claim_id": "\xff\xfe"}', "not_json", "not JSON", id="invalid-utf8"),
    pytest.param(b"[1, 2, 3]", "contract_violation", "object", id="json-array"),
    pytest.param(b'"C-1"', "contract_violation", "object", id="json-string"),
    pytest.param(b"null", "contract_violation", "object", id="json-null"),
    pytest.param(without("claim_amount"), "contract_violation", "claim_amount: Field required",
                 id="missing-field"),
    pytest.param(claim_bytes(is_anomaly=True), "contract_violation", "is_anomaly",
                 id="extra-field"),
    pytest.param(claim_bytes(claim_amount="1234.5"), "contract_violation", "claim_amount",
                 id="amount-as-string"),
    pytest.param(claim_bytes(num_services=2.5), "contract_violation", "num_services",
                 id="fractional-services"),
    pytest.param(claim_bytes().replace(b"1234.5", b"NaN"), "contract_violation",
                 "finite number", id="nan-amount"),
    pytest.param(claim_bytes().replace(b"1234.5", b"1e999"), "contract_violation",
                 "finite number", id="infinite-amount"),
    pytest.param(claim_bytes(claim_amount=-5), "contract_violation", "greater than 0",
                 id="negative-amount"),
    pytest.param(claim_bytes(patient_age=150), "contract_violation", "patient_age",
                 id="age-out-of-range"),
    pytest.param(claim_bytes(num_services=0), "contract_violation", "num_services",
                 id="zero-services"),
    pytest.param(claim_bytes(schema_version=3), "contract_violation", "schema_version",
                 id="unknown-schema-version"),
    # A v1 body labelled version 2 is read as a v2 claim: its missing fields are the reason.
    pytest.param(claim_bytes(schema_version=2), "contract_violation", "member_id",
                 id="v1-body-as-version-2"),
    pytest.param(claim_bytes(claim_id="no spaces allowed"), "contract_violation", "claim_id",
                 id="bad-claim-id"),
    pytest.param(claim_bytes(submitted_at="2026-01-01T00:00:00"), "contract_violation",
                 "submitted_at", id="naive-timestamp"),
    pytest.param(claim_bytes(submitted_at="yesterday"), "contract_violation", "submitted_at",
                 id="not-a-timestamp"),
]


@pytest.mark.parametrize(("value", "kind", "reason"), BAD_INPUT)
def test_bad_input_becomes_a_dead_letter_with_its_reason(
    value: bytes | None, kind: str, reason: str
) -> None:
    batch = split(FakeMessage(value, _offset=7, _partition=1, _key=b"K-9"))
    assert batch.claims == []
    [rejected] = batch.rejected
    letter = rejected.letter
    assert letter.error_kind == kind
    assert reason in letter.error
    assert letter.original_value == (value or b"")[:MAX_BYTES]
    assert letter.original_key_b64 == base64.b64encode(b"K-9").decode()
    assert letter.source == StreamSource(topic="claims", partition=1, offset=7)
    assert letter.failed_at == NOW
    # A dead letter still moves the offset on: it is handled, not skipped.
    assert batch.next_offsets == {("claims", 1): 8}


def test_dead_letter_message_is_a_valid_contract_keyed_like_the_input() -> None:
    batch = split(FakeMessage(b"junk", _offset=3, _key=None))
    out = batch.rejected[0].outgoing(TOPICS.deadletter)
    assert out.topic == "out.dead"
    assert out.key is None
    letter = DeadLetter.from_json(out.value)
    assert letter.original_key_b64 is None
    assert letter.original_value == b"junk"


def test_mixed_batch_keeps_order_and_tracks_offsets_per_partition() -> None:
    messages = [
        FakeMessage(claim_bytes(claim_id="A"), _offset=10, _partition=0),
        FakeMessage(b"bad", _offset=11, _partition=0),
        FakeMessage(claim_bytes(claim_id="B"), _offset=5, _partition=3),
        FakeMessage(claim_bytes(claim_id="C"), _offset=12, _partition=0),
        FakeMessage(None, _offset=6, _partition=3),
    ]
    batch = split(*messages)
    assert [claim.claim_id for claim in batch.claims] == ["A", "B", "C"]
    assert [position_of(position) for position in batch.positions] == [
        "claims[0]@10", "claims[3]@5", "claims[0]@12",
    ]
    assert [r.letter.error_kind for r in batch.rejected] == ["not_json", "empty"]
    assert batch.consumed == 5
    assert batch.next_offsets == {("claims", 0): 13, ("claims", 3): 7}
    assert batch.first_offsets == {("claims", 0): 10, ("claims", 3): 5}


def test_check_value_accepts_a_message_at_the_size_limit() -> None:
    assert check_value(b"x" * MAX_BYTES, MAX_BYTES) is None


MODEL = ModelRef(name="claim-anomaly", version="3", run_id="r1")
REASON = Reason(
    feature="claim_amount", value=14200.0, percentile=99.9, direction="high",
    message="claim_amount 14,200 is above the 99.9th percentile",
)


def result_for(claim_id: str, decision: str) -> ScoreResult:
    flagged = decision == "investigate"
    return ScoreResult(
        claim_id=claim_id,
        anomaly_score=0.71 if flagged else 0.42,
        threshold=0.6,
        decision="investigate" if flagged else "approve",
        model=MODEL,
        reasons=[REASON] if flagged else [],
    )


def test_decisions_go_to_the_topic_their_verdict_names() -> None:
    batch = split(
        FakeMessage(claim_bytes(claim_id="A"), _offset=1),
        FakeMessage(claim_bytes(claim_id="B", claim_amount=14200.0), _offset=2, _partition=4),
    )
    results = [result_for("A", "approve"), result_for("B", "investigate")]
    out = route_decisions(
        batch.claims, batch.positions, results, decided_at=NOW, topics=TOPICS
    )
    assert [(o.topic, o.key) for o in out] == [("out.ok", b"A"), ("out.look", b"B")]
    approved, flagged = (Decision.from_json(o.value) for o in out)
    assert approved.decision == "approve"
    assert approved.claim == batch.claims[0]
    assert approved.reasons == []
    assert flagged.decision == "investigate"
    assert flagged.claim_id == "B"
    assert flagged.anomaly_score == pytest.approx(0.71)
    assert flagged.threshold == pytest.approx(0.6)
    assert flagged.model == MODEL
    assert flagged.reasons == [REASON]
    assert flagged.decided_at == NOW
    assert flagged.source == StreamSource(topic="claims", partition=4, offset=2)


def test_no_claims_no_decisions() -> None:
    assert route_decisions([], [], [], decided_at=NOW, topics=TOPICS) == []


def test_a_missing_result_is_an_error_not_a_silent_drop() -> None:
    batch = split(FakeMessage(claim_bytes(claim_id="A")), FakeMessage(claim_bytes(claim_id="B")))
    with pytest.raises(RoutingError, match="1 results for 2 claims"):
        route_decisions(
            batch.claims, batch.positions, [result_for("A", "approve")], decided_at=NOW,
            topics=TOPICS,
        )


def test_results_out_of_order_are_an_error() -> None:
    batch = split(FakeMessage(claim_bytes(claim_id="A")), FakeMessage(claim_bytes(claim_id="B")))
    with pytest.raises(RoutingError, match="claim_id=B"):
        route_decisions(
            batch.claims, batch.positions,
            [result_for("B", "approve"), result_for("A", "approve")],
            decided_at=NOW, topics=TOPICS,
        )


def test_claims_decode_exactly_as_the_contract_does() -> None:
    value = claim_bytes(claim_id="Z-9")
    [claim] = split(FakeMessage(value)).claims
    assert claim == Claim.from_json(value)


def test_the_fast_encoder_knows_every_decision_field_in_order() -> None:
    assert tuple(Decision.model_fields) == ENCODED_DECISION_FIELDS


claim_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
aware_datetimes = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                               timezone(timedelta(hours=-8))]),
)
claims = st.builds(
    Claim,
    claim_id=claim_ids,
    claim_amount=st.floats(min_value=0.01, max_value=10_000_000),
    num_services=st.integers(1, 1000),
    patient_age=st.integers(0, 120),
    provider_id=st.integers(1, 1_000_000_000),
    days_since_last_claim=st.integers(0, 36_500),
    submitted_at=aware_datetimes,
)
reasons = st.builds(
    Reason,
    feature=st.sampled_from(["claim_amount", "num_services", "patient_age"]),
    value=st.floats(allow_nan=False, allow_infinity=False),
    percentile=st.floats(0, 100),
    direction=st.sampled_from(["high", "low"]),
    message=st.text(max_size=60),  # quotes, backslashes, unicode: all escaped by pydantic
)
models = st.builds(
    ModelRef,
    name=st.just("claim-anomaly"),
    version=st.from_regex(r"[1-9][0-9]{0,3}", fullmatch=True),
    run_id=st.none() | st.text(alphabet="0123456789abcdef", min_size=1, max_size=32),
)
finite = st.floats(allow_nan=False, allow_infinity=False)


@given(
    claim=claims,
    score=finite,
    threshold=finite,
    flagged=st.booleans(),
    model=models,
    why=st.lists(reasons, max_size=3),
    position=st.builds(Position, st.from_regex(r"[a-z][a-z0-9._-]{0,30}", fullmatch=True),
                       st.integers(0, 1000), st.integers(0, 2**62)),
    decided_at=aware_datetimes,
)
@settings(max_examples=150, deadline=None)
def test_the_fast_encoder_writes_exactly_what_the_contract_writes(
    claim: Claim, score: float, threshold: float, flagged: bool, model: ModelRef,
    why: list[Reason], position: Position, decided_at: datetime,
) -> None:
    result = ScoreResult(
        claim_id=claim.claim_id, anomaly_score=score, threshold=threshold,
        decision="investigate" if flagged else "approve", model=model, reasons=why,
    )
    expected = build_decision(claim, result, position, decided_at)
    encoder = DecisionEncoder(decided_at)
    encoded = encoder.encode(claim, result, position)
    assert encoded == expected.to_json()
    assert encoder.encode(claim, result, position) == encoded  # from the caches, the same
    assert Decision.from_json(encoded) == expected


def test_a_huge_message_is_dead_lettered_with_its_first_bytes_only() -> None:
    value = b"{" + b"x" * (10 * MAX_BYTES)
    [rejected] = split(FakeMessage(value)).rejected
    assert rejected.letter.original_value == value[:MAX_BYTES]
    assert f"keeps the first {MAX_BYTES} bytes" in rejected.letter.error
    assert len(rejected.outgoing("dead").value) < 2 * MAX_BYTES
