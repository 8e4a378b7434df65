"""Every validation rule of the three contracts, with the error it produces."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from schemas import Claim, ContractError, DeadLetter, Decision, ModelRef, Reason, StreamSource
from schemas.export import JSON_DIR, rendered_schemas

GOOD_CLAIM: dict[str, Any] = {
    "schema_version": 1,
    "claim_id": "C-000001",
    "claim_amount": 1234.5,
    "num_services": 3,
    "patient_age": 44,
    "provider_id": 7,
    "days_since_last_claim": 30,
    "submitted_at": "2026-11-26T18:00:00Z",
}


def claim_json(**changes: Any) -> bytes:
    payload = {**GOOD_CLAIM, **changes}
    for key in [k for k, v in changes.items() if v is _DROP]:
        del payload[key]
    return json.dumps(payload, allow_nan=True).encode()


_DROP = object()


def errors_of(data: bytes) -> dict[str, str]:
    with pytest.raises(ContractError) as info:
        Claim.from_json(data)
    return info.value.paths()


def test_good_claim_round_trips() -> None:
    claim = Claim.from_json(claim_json())
    assert Claim.from_json(claim.to_json()) == claim
    assert claim.features() == (1234.5, 3.0, 44.0, 7.0, 30.0)


def test_schema_version_defaults_to_1() -> None:
    assert Claim.from_json(claim_json(schema_version=_DROP)).schema_version == 1


@pytest.mark.parametrize(
    ("changes", "field", "error_type"),
    [
        ({"schema_version": 2}, "schema_version", "literal_error"),
        ({"claim_id": ""}, "claim_id", "string_too_short"),
        ({"claim_id": "x" * 65}, "claim_id", "string_too_long"),
        ({"claim_id": "<script>"}, "claim_id", "string_pattern_mismatch"),
        ({"claim_id": 17}, "claim_id", "string_type"),
        ({"claim_amount": 0}, "claim_amount", "greater_than"),
        ({"claim_amount": -5.0}, "claim_amount", "greater_than"),
        ({"claim_amount": 1e9}, "claim_amount", "less_than_equal"),
        ({"claim_amount": float("nan")}, "claim_amount", "finite_number"),
        ({"claim_amount": float("inf")}, "claim_amount", "finite_number"),
        ({"claim_amount": "100"}, "claim_amount", "float_type"),
        ({"num_services": 0}, "num_services", "greater_than_equal"),
        ({"num_services": 1001}, "num_services", "less_than_equal"),
        ({"num_services": 2.5}, "num_services", "int_type"),
        ({"num_services": True}, "num_services", "int_type"),
        ({"patient_age": -1}, "patient_age", "greater_than_equal"),
        ({"patient_age": 121}, "patient_age", "less_than_equal"),
        ({"patient_age": "44"}, "patient_age", "int_type"),
        ({"provider_id": 0}, "provider_id", "greater_than_equal"),
        ({"days_since_last_claim": -1}, "days_since_last_claim", "greater_than_equal"),
        ({"days_since_last_claim": 40_000}, "days_since_last_claim", "less_than_equal"),
        ({"submitted_at": "2026-11-26T18:00:00"}, "submitted_at", "timezone_aware"),
        ({"submitted_at": "yesterday"}, "submitted_at", "datetime_parsing"),
        ({"is_anomaly": True}, "is_anomaly", "extra_forbidden"),
        ({"claim_amount": _DROP}, "claim_amount", "missing"),
        ({"claim_id": _DROP}, "claim_id", "missing"),
    ],
)
def test_claim_rule(changes: dict[str, Any], field: str, error_type: str) -> None:
    assert errors_of(claim_json(**changes)) == {field: error_type}


def test_not_json_is_a_contract_error() -> None:
    assert errors_of(b"not json") == {"": "json_invalid"}


def test_error_message_names_the_field() -> None:
    with pytest.raises(ContractError, match=r"invalid Claim: patient_age: .*less than or equal"):
        Claim.from_json(claim_json(patient_age=300))


def test_claim_is_immutable() -> None:
    claim = Claim.from_json(claim_json())
    with pytest.raises(ValueError, match="frozen"):
        claim.claim_amount = 1.0  # type: ignore[misc]


def make_decision(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "claim": GOOD_CLAIM,
        "decision": "investigate",
        "anomaly_score": 0.61,
        "threshold": 0.55,
        "model": {"name": "claim-anomaly", "version": "3", "run_id": "abc"},
        "reasons": [
            {
                "feature": "claim_amount",
                "value": 14200.0,
                "percentile": 99.9,
                "direction": "high",
                "message": "claim_amount 14,200 is above the 99.9th percentile",
            }
        ],
        "decided_at": "2026-11-26T18:00:01Z",
        "source": {"kind": "stream", "topic": "claims", "partition": 2, "offset": 41},
    }
    payload.update(changes)
    return payload


def test_decision_round_trips_with_both_sources() -> None:
    stream = Decision.from_json(json.dumps(make_decision()))
    assert isinstance(stream.source, StreamSource)
    assert stream.claim_id == "C-000001"
    gateway = Decision.from_json(
        json.dumps(make_decision(source={"kind": "gateway", "request_id": "r1"}))
    )
    assert gateway.source.kind == "gateway"
    assert Decision.from_json(gateway.to_json()) == gateway


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"decision": "maybe"}, "decision"),
        ({"anomaly_score": float("nan")}, "anomaly_score"),
        ({"model": {"name": "", "version": "1"}}, "model.name"),
        ({"source": {"kind": "stream", "topic": "claims", "partition": -1, "offset": 0}},
         "source.stream.partition"),
        ({"source": {"kind": "carrier-pigeon"}}, "source"),
        ({"decided_at": "2026-11-26T18:00:01"}, "decided_at"),
        ({"claim": {**GOOD_CLAIM, "patient_age": 200}}, "claim.patient_age"),
        ({"extra": 1}, "extra"),
    ],
)
def test_decision_rule(changes: dict[str, Any], path: str) -> None:
    with pytest.raises(ContractError) as info:
        Decision.from_json(json.dumps(make_decision(**changes), allow_nan=True))
    assert path in info.value.paths()


def test_reason_percentile_is_bounded() -> None:
    with pytest.raises(ValueError, match="less than or equal to 100"):
        Reason(feature="x", value=1.0, percentile=101, direction="high", message="m")


def test_model_ref_version_required() -> None:
    with pytest.raises(ValueError, match="version"):
        ModelRef.model_validate({"name": "claim-anomaly"})


def test_dead_letter_keeps_original_bytes() -> None:
    original = b"\x00\xffnot json"
    letter = DeadLetter.for_message(
        value=original,
        key=b"C-1",
        error_kind="not_json",
        error="Invalid JSON: expected value at line 1 column 1",
        source=StreamSource(topic="claims", partition=0, offset=5),
        failed_at=datetime(2026, 11, 26, tzinfo=UTC),
    )
    decoded = DeadLetter.from_json(letter.to_json())
    assert decoded.original_value == original
    assert decoded.original_key_b64 == base64.b64encode(b"C-1").decode()


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"error": ""}, "error"),
        ({"error_kind": "oops"}, "error_kind"),
        ({"source": {"kind": "gateway"}}, "source.kind"),
        ({"failed_at": "2026-11-26T18:00:01"}, "failed_at"),
    ],
)
def test_dead_letter_rule(changes: dict[str, Any], path: str) -> None:
    payload = {
        "original_value_b64": "AA==",
        "error_kind": "not_json",
        "error": "bad",
        "source": {"kind": "stream", "topic": "claims", "partition": 0, "offset": 0},
        "failed_at": "2026-11-26T18:00:01Z",
        **changes,
    }
    with pytest.raises(ContractError) as info:
        DeadLetter.from_json(json.dumps(payload))
    assert path in info.value.paths()


def test_committed_json_schemas_match_the_models() -> None:
    """Fails when a model changes without `claimflow schemas export` being run."""
    for name, text in rendered_schemas().items():
        committed = (JSON_DIR / name).read_text(encoding="utf-8")
        assert committed == text, f"{name} drifted: run `claimflow schemas export`"


def test_json_schema_accepts_what_the_model_accepts() -> None:
    schema = json.loads((JSON_DIR / "claim.schema.json").read_text())
    jsonschema.validate(json.loads(claim_json()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD_CLAIM, "patient_age": 300}, schema)


def test_decision_from_score_copies_the_verdict_and_refuses_another_claims_score() -> None:
    from schemas import GatewaySource, ScoreResult

    claim = Claim.from_json(claim_json())
    verdict = ScoreResult.model_validate_json(
        json.dumps({**{k: v for k, v in make_decision().items() if k in {
            "decision", "anomaly_score", "threshold", "model", "reasons"}},
            "claim_id": claim.claim_id})
    )
    decided_at = datetime(2026, 11, 26, tzinfo=UTC)
    decision = Decision.from_score(
        claim, verdict, decided_at=decided_at, source=GatewaySource(request_id="r1")
    )
    assert (decision.decision, decision.anomaly_score, decision.reasons) == (
        verdict.decision, verdict.anomaly_score, verdict.reasons)
    other = verdict.model_copy(update={"claim_id": "C-2"})
    with pytest.raises(ValueError, match="score is for C-2"):
        Decision.from_score(claim, other, decided_at=decided_at, source=GatewaySource())
