"""The claim contract, version 2: every rule with its error path, the JSON Schema accepting
what the model accepts, and round trips through parse_claim."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import orjson
import pytest

from schemas import Claim, ClaimV2, ContractError, Decision, parse_claim
from schemas.export import render_schema
from tests.v2_factory import v2_claim, v2_claims, without_labels

LINE = {"procedure_code": "99213", "units": 1, "charge": 10.0}
V2_SCHEMA = json.loads(render_schema(ClaimV2, "claim_v2.schema.json"))


def paths_of(claim: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ContractError) as caught:
        parse_claim(orjson.dumps(claim))
    return caught.value.paths()


@pytest.mark.parametrize(
    ("overrides", "path", "kind"),
    [
        ({"claim_amount": 999.0}, "claim_amount", "sum_mismatch"),
        ({"num_services": 9}, "num_services", "sum_mismatch"),
        ({"lines": []}, "lines", "too_short"),
        ({"lines": [LINE] * 101}, "lines", "too_long"),
        ({"lines": [LINE, {**LINE, "units": 0}]}, "lines.1.units", "greater_than_equal"),
        ({"lines": [{**LINE, "charge": 0}]}, "lines.0.charge", "greater_than"),
        ({"lines": [{**LINE, "procedure_code": "9 9"}]}, "lines.0.procedure_code",
         "string_pattern_mismatch"),
        ({"lines": [{**LINE, "modifier": "x"}]}, "lines.0.modifier", "extra_forbidden"),
        ({"diagnosis_codes": ["E11.9"] * 13}, "diagnosis_codes", "too_long"),
        ({"diagnosis_codes": [""]}, "diagnosis_codes.0", "string_too_short"),
        ({"member_id": ""}, "member_id", "string_too_short"),
        ({"provider_id": 7}, "provider_id", "string_type"),
        ({"patient_sex": "X"}, "patient_sex", "literal_error"),
        ({"patient_age": 121}, "patient_age", "less_than_equal"),
        ({"service_date": "2026/11/20"}, "service_date", "date_parsing"),
        ({"submitted_at": "2026-11-26T18:00:00"}, "submitted_at", "timezone_aware"),
        ({"provider_specialty": ""}, "provider_specialty", "string_too_short"),
        ({"days_since_last_claim": 3}, "days_since_last_claim", "extra_forbidden"),
        ({"schema_version": 3}, "schema_version", "unsupported_version"),
    ],
)
def test_every_rule_has_its_error_path(overrides: dict[str, Any], path: str, kind: str) -> None:
    claim = {**v2_claim(), **overrides}
    assert paths_of(claim)[path] == kind


def test_totals_are_compared_to_the_cent() -> None:
    lines = [{**LINE, "charge": 0.1}, {**LINE, "charge": 0.2}]
    assert parse_claim(orjson.dumps(v2_claim(lines=lines, claim_amount=0.3))).claim_amount == 0.3
    assert paths_of(v2_claim(lines=lines, claim_amount=0.31)) == {"claim_amount": "sum_mismatch"}


def test_missing_version_is_v1_and_version_2_is_v2() -> None:
    v1 = {"claim_id": "C-1", "claim_amount": 10.0, "num_services": 1, "patient_age": 30,
          "provider_id": 2, "days_since_last_claim": 3, "submitted_at": "2026-11-26T18:00:00Z"}
    assert isinstance(parse_claim(orjson.dumps(v1)), Claim)
    assert isinstance(parse_claim(orjson.dumps(v2_claim())), ClaimV2)


@pytest.mark.parametrize("claim", [without_labels(c) for c in v2_claims(40, seed=9)])
def test_json_schema_accepts_what_the_model_accepts_and_round_trips(
    claim: dict[str, Any],
) -> None:
    parsed = parse_claim(orjson.dumps(claim))
    jsonschema.validate(claim, V2_SCHEMA)
    again = parse_claim(parsed.to_json())
    assert again == parsed
    jsonschema.validate(json.loads(parsed.to_json()), V2_SCHEMA)


def test_json_schema_rejects_what_it_can_express() -> None:
    for bad in ({**v2_claim(), "lines": []}, {**v2_claim(), "patient_sex": "X"},
                {**v2_claim(), "extra": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, V2_SCHEMA)


def test_a_decision_carries_a_v2_claim_through_json() -> None:
    claim = parse_claim(orjson.dumps(v2_claim()))
    decision = {"claim": json.loads(claim.to_json()), "decision": "approve",
                "anomaly_score": 0.4, "threshold": 0.5,
                "model": {"name": "claim-anomaly", "version": "1"},
                "decided_at": "2026-11-26T18:00:01Z",
                "source": {"kind": "gateway", "request_id": "r"}}
    parsed = Decision.from_json(orjson.dumps(decision))
    assert parsed.claim == claim
    assert parsed.claim.schema_version == 2
    assert Decision.from_json(parsed.to_json()) == parsed
