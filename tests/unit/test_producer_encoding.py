"""Frames -> Kafka records: exact Claim JSON, labels only as headers, bad rows reported."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from producer.columns import CLAIM_COLUMNS
from producer.encoding import encode_claims
from producer.profiles import generate
from schemas import CLAIM_FEATURES, Claim


def locate(i: int) -> str:
    return f"row {i + 1}"


@pytest.mark.parametrize(("profile", "rows"), [("seed", 1050), ("realistic", 5000)])
def test_values_are_the_claims_of_the_frame(profile: str, rows: int) -> None:
    frame = generate(profile, rows, seed=2)  # type: ignore[arg-type]
    claims, errors = encode_claims(frame, locate)
    assert errors == []
    assert len(claims) == rows
    decoded = [Claim.from_json(v) for v in claims.values]
    assert [c.claim_id for c in decoded] == frame["claim_id"].astype(str).tolist()
    assert claims.keys == [c.claim_id.encode() for c in decoded]
    for name in CLAIM_FEATURES:
        assert [getattr(c, name) for c in decoded] == frame[name].tolist(), name
    times = [c.submitted_at for c in decoded]
    assert times == [t.to_pydatetime() for t in frame["submitted_at"]]


def test_labels_travel_only_as_headers() -> None:
    frame = generate("realistic", 2000, seed=3)
    claims, _ = encode_claims(frame, locate)
    assert claims.headers is not None
    for value, headers, (_, row) in zip(claims.values, claims.headers, frame.iterrows(),
                                        strict=True):
        document = orjson.loads(value)
        assert "is_anomaly" not in document
        assert "pattern" not in document
        assert set(document) == {"schema_version", *CLAIM_COLUMNS}
        assert dict(headers) == {
            "is_anomaly": b"true" if row["is_anomaly"] else b"false",
            "pattern": row["pattern"].encode(),
        }


def test_no_headers_without_labels_or_when_switched_off() -> None:
    frame = generate("seed", 30, seed=3)
    assert encode_claims(frame, locate, labels=False)[0].headers is None
    unlabelled = frame.drop(columns=["is_anomaly", "pattern"])
    assert encode_claims(unlabelled, locate)[0].headers is None


def test_missing_submitted_at_uses_the_default() -> None:
    frame = generate("seed", 5, seed=3).drop(columns=["submitted_at"])
    claims, _ = encode_claims(frame, locate, default_submitted_at="2026-01-02T03:04:05.678Z")
    expected = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    assert {Claim.from_json(v).submitted_at for v in claims.values} == {expected}
    with pytest.raises(ValueError, match="no submitted_at"):
        encode_claims(frame, locate)


def test_contract_violations_become_row_errors_and_are_not_sent() -> None:
    frame = generate("seed", 6, seed=3)
    frame["claim_id"] = frame["claim_id"].astype(str)
    frame.loc[1, "patient_age"] = 130
    frame.loc[2, "claim_amount"] = -5.0
    frame.loc[3, "claim_id"] = 'x", "claim_amount": 1, "y": "'  # JSON injection attempt
    frame["submitted_at"] = frame["submitted_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.loc[4, "submitted_at"] = "2025-01-01T00:00:00"  # no zone
    claims, errors = encode_claims(frame, locate)
    by_row = {e.location: e.message for e in errors}
    assert set(by_row) == {"row 2", "row 3", "row 4", "row 5"}
    assert "submitted_at: Input should have timezone info" in by_row["row 5"]
    assert "patient_age" in by_row["row 2"]
    assert "claim_amount: Input should be greater than 0" in by_row["row 3"]
    assert "claim_id: String should match pattern" in by_row["row 4"]
    assert len(claims) == 2
    assert [k.decode() for k in claims.keys] == frame["claim_id"].iloc[[0, 5]].tolist()


def test_text_that_needs_escaping_never_breaks_the_json() -> None:
    frame = generate("seed", 2, seed=3).drop(columns=["submitted_at"])
    frame["claim_id"] = ['a"b\\c', "\u00e9t\u00e9"]
    claims, errors = encode_claims(frame, locate, default_submitted_at="2025-01-01T00:00:00Z")
    assert len(claims) == 0
    assert [e.claim_id for e in errors] == ['a"b\\c', "\u00e9t\u00e9"]
    assert all("claim_id: String should match pattern" in e.message for e in errors)
