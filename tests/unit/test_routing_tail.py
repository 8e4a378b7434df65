"""``claimflow tail``'s pure part: validate an outcome message and format it."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas import Claim, ClaimV2, DeadLetter, Decision, ModelRef, Reason, StreamSource
from scorer.tail import render
from tests.v2_factory import v2_claim

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CLAIM = Claim(
    claim_id="C-77", claim_amount=14200.0, num_services=3, patient_age=40, provider_id=9,
    days_since_last_claim=12, submitted_at=NOW,
)
REASON = Reason(
    feature="claim_amount", value=14200.0, percentile=99.9, direction="high",
    message="claim_amount 14,200 is above the 99.9th percentile",
)


def decision(kind: str = "investigate") -> Decision:
    return Decision(
        claim=CLAIM,
        decision="investigate" if kind == "investigate" else "approve",
        anomaly_score=0.7312,
        threshold=0.6,
        model=ModelRef(name="claim-anomaly", version="4"),
        reasons=[REASON] if kind == "investigate" else [],
        decided_at=NOW,
        source=StreamSource(topic="claims", partition=2, offset=99),
    )


def test_a_decision_line_names_claim_verdict_score_reason_and_model() -> None:
    rendered = render("investigate", decision().to_json(), as_json=False)
    assert rendered.ok
    for part in ("C-77", "investigate", "0.7312", "above the 99.9th percentile",
                 "claim-anomaly v4"):
        assert part in rendered.text


def test_a_v2_decision_line_also_names_member_provider_and_total() -> None:
    claim = ClaimV2.model_validate(v2_claim(claim_id="C2-9"), strict=False)
    rendered = render("investigate", decision().model_copy(update={"claim": claim}).to_json(),
                      as_json=False)
    assert rendered.ok
    assert rendered.text.startswith(
        "C2-9  member M-000042  provider P-0007  184.50 in 2 lines  investigate")


def test_an_approval_without_reasons_still_reads_well() -> None:
    rendered = render("approved", decision("approve").to_json(), as_json=False)
    assert rendered.ok
    assert "approve" in rendered.text
    assert "no unusual feature" in rendered.text


def test_json_mode_prints_the_message_itself() -> None:
    value = decision().to_json()
    rendered = render("investigate", value, as_json=True)
    assert rendered.ok
    assert rendered.text == value.decode()


def test_a_decision_on_the_wrong_topic_is_reported() -> None:
    rendered = render("approved", decision("investigate").to_json(), as_json=False)
    assert not rendered.ok
    assert "C-77" in rendered.text
    assert "approved topic" in rendered.text


def test_invalid_messages_are_reported_not_raised() -> None:
    for value in (b"not json", b"", None, b'{"claim": 1}'):
        rendered = render("investigate", value, as_json=False)
        assert not rendered.ok
        assert "invalid Decision" in rendered.text


def test_a_dead_letter_line_names_position_kind_and_reason() -> None:
    letter = DeadLetter.for_message(
        value=b"\x00junk", key=None, error_kind="not_json", error="not JSON: expected value",
        source=StreamSource(topic="claims", partition=1, offset=5), failed_at=NOW,
    )
    rendered = render("deadletter", letter.to_json(), as_json=False)
    assert rendered.ok
    assert rendered.text.startswith("claims[1]@5  not_json  not JSON: expected value")
    assert "(5 bytes)" in rendered.text


def test_a_decision_is_not_a_valid_dead_letter() -> None:
    rendered = render("deadletter", decision().to_json(), as_json=False)
    assert not rendered.ok
    assert "invalid DeadLetter" in rendered.text
