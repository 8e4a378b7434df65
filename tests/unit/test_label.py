"""The Label contract: building a label from the decision it answers, and its rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from schemas import ContractError, Decision, Label, ModelRef
from schemas.export import JSON_DIR
from schemas.label import NOTE_MAX_LENGTH
from tests.unit.gateway_fakes import claim_body

DECIDED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LABELLED = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)


def decision(kind: str = "investigate") -> Decision:
    return Decision.model_validate_json(json.dumps({
        "claim": claim_body(), "decision": kind, "anomaly_score": 0.71, "threshold": 0.56,
        "model": {"name": "claim-anomaly", "version": "3", "run_id": "r"},
        "reasons": [], "decided_at": DECIDED.isoformat(),
        "source": {"kind": "gateway", "request_id": "q"},
    }))


def label_json(**changes: Any) -> bytes:
    label = Label.answering(decision(), "fraud", investigator="alice", decided_at=LABELLED,
                            note="billed twice")
    payload = json.loads(label.to_json())
    payload.update(changes)
    return json.dumps(payload).encode()


def test_a_label_names_the_decision_it_answers() -> None:
    label = Label.answering(decision(), "legitimate", investigator="simulated",
                            decided_at=LABELLED)
    assert label.claim_id == "C-000001"
    assert (label.disposition, label.note, label.investigator) == ("legitimate", "", "simulated")
    assert label.answers.model == ModelRef(name="claim-anomaly", version="3", run_id="r")
    assert (label.answers.decision, label.answers.anomaly_score, label.answers.threshold) == (
        "investigate", 0.71, 0.56)
    assert label.answers.decided_at == DECIDED
    assert label.decided_at == LABELLED
    assert Label.from_json(label.to_json()) == label


@pytest.mark.parametrize(("disposition", "closes"),
                         [("fraud", True), ("legitimate", True), ("needs_info", False)])
def test_needs_info_keeps_the_claim_open(disposition: Any, closes: bool) -> None:
    label = Label.answering(decision(), disposition, investigator="a", decided_at=LABELLED)
    assert label.closes is closes


@pytest.mark.parametrize(
    ("changes", "path", "error_type"),
    [
        ({"disposition": "maybe"}, "disposition", "literal_error"),
        ({"investigator": ""}, "investigator", "string_too_short"),
        ({"investigator": "x" * 65}, "investigator", "string_too_long"),
        ({"note": "n" * (NOTE_MAX_LENGTH + 1)}, "note", "string_too_long"),
        ({"claim_id": "a/b"}, "claim_id", "string_pattern_mismatch"),
        ({"decided_at": "2026-12-02T10:30:00"}, "decided_at", "timezone_aware"),
        ({"extra": 1}, "extra", "extra_forbidden"),
        ({"answers": {"decision": "investigate"}}, "answers.model", "missing"),
    ],
)
def test_label_rules(changes: dict[str, Any], path: str, error_type: str) -> None:
    with pytest.raises(ContractError) as info:
        Label.from_json(label_json(**changes))
    assert info.value.paths()[path] == error_type


def test_json_schema_file_accepts_a_label_and_refuses_a_bad_disposition() -> None:
    schema = json.loads((JSON_DIR / "label.schema.json").read_text())
    jsonschema.validate(json.loads(label_json()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(label_json(disposition="closed")), schema)


def test_gateway_source_is_not_part_of_a_label() -> None:
    # What a label answers is the verdict, not where the claim came from.
    assert "source" not in json.loads(label_json())["answers"]
