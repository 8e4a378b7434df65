"""The realistic v2 profile: valid claims, exact pattern shares, determinism, believable shapes,
fraud that no single feature gives away."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.metrics import roc_auc_score

from producer import catalogue
from producer.jsonl import write_claims_jsonl
from producer.realistic_v2 import generate_realistic_claims
from producer.typology import DEFAULT_PATTERN_SHARES, largest_remainder
from schemas.claim_v2 import ClaimV2

ROWS = 30_000


@pytest.fixture(scope="module")
def claims(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    path = tmp_path_factory.mktemp("realistic") / "claims.jsonl"
    write_claims_jsonl(generate_realistic_claims(ROWS, seed=11), path)
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_every_claim_satisfies_the_contract(claims: list[dict[str, Any]]) -> None:
    assert len(claims) == ROWS
    for claim in claims:
        labels = {k: claim.pop(k) for k in ("is_anomaly", "pattern")}
        ClaimV2.from_json(orjson.dumps(claim))
        claim.update(labels)


def test_pattern_shares_are_exact(claims: list[dict[str, Any]]) -> None:
    counts = Counter(c["pattern"] for c in claims if c["is_anomaly"])
    assert counts == largest_remainder(ROWS, DEFAULT_PATTERN_SHARES)
    assert not any(c["pattern"] for c in claims if not c["is_anomaly"])


def test_ids_follow_submission_order(claims: list[dict[str, Any]]) -> None:
    assert [c["claim_id"] for c in claims] == [f"C-11-{n:08d}" for n in range(1, ROWS + 1)]
    times = [c["submitted_at"] for c in claims]
    assert times == sorted(times)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    paths = [tmp_path / f"{name}.jsonl" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (5, 5, 6), strict=True):
        write_claims_jsonl(generate_realistic_claims(5000, seed), path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_normal_traffic_has_legitimate_exact_repeats(claims: list[dict[str, Any]]) -> None:
    def content(c: dict[str, Any]) -> bytes:
        return orjson.dumps([c["member_id"], c["provider_id"], c["service_date"], c["lines"]])

    normal = Counter(content(c) for c in claims if not c["is_anomaly"])
    assert sum(n - 1 for n in normal.values()) >= 0.002 * ROWS


def test_procedures_fit_specialty_age_and_sex(claims: list[dict[str, Any]]) -> None:
    procedures = {p.code: p for p in catalogue.PROCEDURES}
    for claim in (c for c in claims if not c["is_anomaly"]):
        for line in claim["lines"]:
            proc = procedures[line["procedure_code"]]
            assert claim["provider_specialty"] in proc.specialties
            assert claim["patient_sex"] in proc.sex or claim["patient_sex"] == "U"
            assert proc.min_age <= claim["patient_age"] <= proc.max_age


def test_a_world_of_members_and_providers(claims: list[dict[str, Any]]) -> None:
    members = Counter(c["member_id"] for c in claims)
    providers = Counter(c["provider_id"] for c in claims)
    assert len(members) > ROWS / 20
    assert max(members.values()) < 100
    assert len(providers) >= 50
    assert len({c["provider_specialty"] for c in claims}) == len(catalogue.SPECIALTIES)
    lines = [len(c["lines"]) for c in claims]
    assert 1.3 < np.mean(lines) < 3
    assert max(lines) <= 8 + 4


def delay_days(c: dict[str, Any]) -> float:
    return float((np.datetime64(c["submitted_at"][:10]) - np.datetime64(c["service_date"])
                  ) / np.timedelta64(1, "D"))


FEATURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "claim_amount": lambda c: c["claim_amount"],
    "num_services": lambda c: c["num_services"],
    "patient_age": lambda c: c["patient_age"],
    "lines": lambda c: len(c["lines"]),
    "max_line_charge": lambda c: max(line["charge"] for line in c["lines"]),
    "delay_days": delay_days,
}


@pytest.mark.parametrize("pattern", [p for p in DEFAULT_PATTERN_SHARES if p != "gross_outlier"])
def test_fraud_is_not_trivially_separable(claims: list[dict[str, Any]], pattern: str) -> None:
    subset = [c for c in claims if c["pattern"] in ("", pattern)]
    truth = [c["pattern"] == pattern for c in subset]
    for name, feature in FEATURES.items():
        auc = float(roc_auc_score(truth, [feature(c) for c in subset]))
        assert max(auc, 1 - auc) < 0.98, (pattern, name, auc)
