"""The fraud typology injector on a small hand-made population (not the realistic generator)."""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pytest

from producer.typology import DEFAULT_PATTERN_SHARES, inject_fraud
from schemas.claim_v2 import ClaimV2

# code -> (charge per unit, sexes, min age, max age)
CODES = {
    "OFFICE": (100.0, "FMU", 0, 120),
    "LAB": (20.0, "FMU", 0, 120),
    "XRAY": (80.0, "FMU", 0, 120),
    "MAMMO": (250.0, "F", 40, 120),
    "PSA": (45.0, "M", 45, 120),
    "WELLCHILD": (150.0, "FMU", 0, 11),
    "SURGERY": (4000.0, "FMU", 18, 120),
}
UUID_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def hand_made_claims(n: int, seed: int, numbered: bool = False) -> list[dict[str, Any]]:
    """Claims written the plain way, one dict at a time: UUID claim ids (or numbered ones),
    200 members, 25 providers, dates in February 2025."""
    rng = np.random.default_rng(seed)
    members = [(f"mem{k}", int(rng.integers(0, 90)), "FM"[k % 2]) for k in range(200)]
    start = datetime(2025, 2, 1, tzinfo=UTC)
    claims = []
    for i in range(n):
        member_id, age, sex = members[int(rng.integers(0, len(members)))]
        fits = [c for c, (_, sexes, low, high) in CODES.items()
                if sex in sexes and low <= age <= high]
        lines: list[dict[str, Any]] = []
        for _ in range(int(rng.integers(1, 5))):
            code = fits[int(rng.integers(0, len(fits)))]
            units = int(rng.integers(1, 3))
            charge = round(CODES[code][0] * units * float(rng.uniform(0.8, 1.2)), 2)
            lines.append({"procedure_code": code, "units": units, "charge": charge})
        service = start + timedelta(days=int(rng.integers(0, 28)))
        submitted = service + timedelta(hours=float(rng.uniform(1, 200)))
        claims.append({
            "schema_version": 2,
            "claim_id": f"CL{i:06d}" if numbered else str(uuid.UUID(int=int(rng.integers(2**62)),
                                                                       version=4)),
            "member_id": member_id,
            "provider_id": f"prov-{int(rng.integers(0, 25))}",
            "provider_specialty": "general",
            "place_of_service": None,
            "patient_age": age,
            "patient_sex": sex,
            "service_date": service.date().isoformat(),
            "submitted_at": submitted.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "diagnosis_codes": ["Z00.00"],
            "lines": lines,
            "claim_amount": round(sum(line["charge"] for line in lines), 2),
            "num_services": sum(line["units"] for line in lines),
        })
    return sorted(claims, key=lambda c: c["submitted_at"])


@pytest.fixture(scope="module")
def population() -> list[dict[str, Any]]:
    return hand_made_claims(4000, seed=1)


@pytest.fixture(scope="module")
def injected(population: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return inject_fraud(population, np.random.default_rng(7))


def without_labels(claim: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in claim.items() if k not in ("is_anomaly", "pattern")}


def test_every_pattern_appears_with_its_label(injected: list[dict[str, Any]]) -> None:
    counts = Counter(c["pattern"] for c in injected)
    assert set(counts) == {"", *DEFAULT_PATTERN_SHARES}
    assert all(c["is_anomaly"] == (c["pattern"] != "") for c in injected)
    for name, share in DEFAULT_PATTERN_SHARES.items():
        assert 0.5 * share < counts[name] / len(injected) < 1.5 * share, (name, counts[name])


def test_every_pattern_is_spread_over_the_whole_file(injected: list[dict[str, Any]]) -> None:
    """A time split tests the file's last part: every pattern must be there too (demographic
    mismatches were once taken from the first candidates, all in the earliest third)."""
    last_fifth = injected[len(injected) * 4 // 5:]
    counts = Counter(c["pattern"] for c in last_fifth)
    # Patterns drawn claim by claim; bursts (velocity, phantom billing) come in a few
    # clusters in a file this small.
    for name in ("duplicate", "upcoding", "demographic_mismatch", "gross_outlier"):
        assert counts[name] > 0, name


def test_every_output_claim_satisfies_the_contract(injected: list[dict[str, Any]]) -> None:
    for claim in injected:
        ClaimV2.from_json(orjson.dumps(without_labels(claim)))


def test_output_is_sorted_and_keeps_every_input_claim(
    population: list[dict[str, Any]], injected: list[dict[str, Any]]
) -> None:
    times = [ClaimV2.from_json(orjson.dumps(without_labels(c))).submitted_at for c in injected]
    assert times == sorted(times)
    ids = [c["claim_id"] for c in injected]
    assert len(set(ids)) == len(ids)
    assert {c["claim_id"] for c in population} <= set(ids)
    new = set(ids) - {c["claim_id"] for c in population}
    assert new
    assert all(UUID_ID.match(i) for i in new)


def test_unchanged_claims_are_the_input_records(
    population: list[dict[str, Any]], injected: list[dict[str, Any]]
) -> None:
    by_id = {c["claim_id"]: c for c in population}
    normal = [c for c in injected if not c["is_anomaly"]]
    assert len(normal) >= 0.9 * len(population)
    assert all(without_labels(c) == by_id[c["claim_id"]] for c in normal)


def test_deterministic_for_a_given_rng(population: list[dict[str, Any]],
                                       injected: list[dict[str, Any]]) -> None:
    assert inject_fraud(population, np.random.default_rng(7)) == injected
    assert inject_fraud(population, np.random.default_rng(8)) != injected


def test_numbered_ids_continue_the_numbering() -> None:
    claims = hand_made_claims(1500, seed=2, numbered=True)
    out = inject_fraud(claims, np.random.default_rng(1))
    new = {c["claim_id"] for c in out} - {c["claim_id"] for c in claims}
    assert new
    assert all(re.fullmatch(r"CL\d{6}", i) and int(i[2:]) >= 1500 for i in new)


def test_anomaly_rate_scales_the_shares(population: list[dict[str, Any]]) -> None:
    none = inject_fraud(population, np.random.default_rng(3), anomaly_rate=0.0)
    assert [without_labels(c) for c in none] == population
    assert not any(c["is_anomaly"] for c in none)
    more = inject_fraud(population, np.random.default_rng(3), anomaly_rate=0.12)
    assert 0.09 < sum(c["is_anomaly"] for c in more) / len(more) < 0.15
    with pytest.raises(ValueError, match="anomaly rate"):
        inject_fraud(population, np.random.default_rng(3), anomaly_rate=1.5)


def test_empty_input() -> None:
    assert inject_fraud([], np.random.default_rng(0)) == []


def of(injected: list[dict[str, Any]], pattern: str) -> list[dict[str, Any]]:
    return [c for c in injected if c["pattern"] == pattern]


def encounter(claim: dict[str, Any]) -> tuple[str, str, str]:
    return claim["member_id"], claim["provider_id"], claim["service_date"]


def test_duplicates_resubmit_an_input_claim_days_later(
    population: list[dict[str, Any]], injected: list[dict[str, Any]]
) -> None:
    originals = defaultdict(list)
    for claim in population:
        originals[(*encounter(claim), orjson.dumps(claim["lines"]))].append(claim)
    for dup in of(injected, "duplicate"):
        twins = originals[(*encounter(dup), orjson.dumps(dup["lines"]))]
        assert twins, dup
        assert any(dup["submitted_at"] >= twin["submitted_at"] for twin in twins)
        assert dup["claim_id"] not in {t["claim_id"] for t in twins}
    # The claim resubmitted is in the output as it was (not also altered by another pattern).
    kept = {(*encounter(c), orjson.dumps(c["lines"])) for c in of(injected, "")}
    assert all((*encounter(d), orjson.dumps(d["lines"])) in kept for d in of(injected, "duplicate"))


def test_unbundled_encounters_come_in_same_day_pieces(injected: list[dict[str, Any]]) -> None:
    pieces = Counter(encounter(c) for c in of(injected, "unbundling"))
    assert all(count >= 2 for count in pieces.values())


def test_member_velocity_is_a_burst_across_providers(injected: list[dict[str, Any]]) -> None:
    by_member = defaultdict(list)
    for claim in of(injected, "member_velocity"):
        by_member[claim["member_id"]].append(claim)
    for claims in by_member.values():
        days = [date.fromisoformat(c["service_date"]) for c in claims]
        assert len(claims) >= 5
        assert (max(days) - min(days)).days <= 3
        assert len({c["provider_id"] for c in claims}) >= 3


def test_phantom_billing_members_never_saw_the_provider(
    population: list[dict[str, Any]], injected: list[dict[str, Any]]
) -> None:
    seen = {(c["member_id"], c["provider_id"]) for c in population}
    phantom = of(injected, "phantom_billing")
    assert all((c["member_id"], c["provider_id"]) not in seen for c in phantom)
    assert len({c["provider_id"] for c in phantom}) <= 3  # a few compromised providers


def test_demographic_mismatch_bills_an_atypical_procedure(injected: list[dict[str, Any]]) -> None:
    for claim in of(injected, "demographic_mismatch"):
        age, sex = claim["patient_age"], claim["patient_sex"]
        assert any(sex not in CODES[line["procedure_code"]][1]
                   or not CODES[line["procedure_code"]][2] - 3 <= age
                   <= CODES[line["procedure_code"]][3] + 3
                   for line in claim["lines"]), claim


def test_upcoding_and_outliers_raise_charges_from_a_few_providers(
    injected: list[dict[str, Any]],
) -> None:
    normal = np.median([c["claim_amount"] for c in of(injected, "")])
    upcoded = of(injected, "upcoding")
    assert len({c["provider_id"] for c in upcoded}) <= 8
    assert np.median([c["claim_amount"] for c in upcoded]) > normal
    outliers = [c["claim_amount"] for c in of(injected, "gross_outlier")]
    assert np.median(outliers) > 5 * normal
