"""A small deterministic factory of version-2 claims for tests (not the realistic generator).

Normal claims: 1-4 office-visit-like lines of modest charges, 0-3 diagnosis codes, adult
ages. Anomalies (``pattern="gross_outlier"``): many lines of very high charges. Totals
always match the lines, so every claim passes the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from schemas import ClaimV2

PROCEDURES = ("99213", "99214", "80053", "85025", "71046", "93000")
DIAGNOSES = ("E11.9", "I10", "J06.9", "M54.5", "Z00.00")
SUBMITTED = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)


def v2_claim(**overrides: Any) -> dict[str, Any]:
    """One valid v2 claim as a JSON-ready dict; ``lines`` overrides recompute the totals
    unless ``claim_amount`` / ``num_services`` are overridden too."""
    claim: dict[str, Any] = {
        "schema_version": 2,
        "claim_id": "C2-000001",
        "member_id": "M-000042",
        "provider_id": "P-0007",
        "provider_specialty": "family medicine",
        "place_of_service": "office",
        "patient_age": 44,
        "patient_sex": "F",
        "service_date": "2026-11-20",
        "submitted_at": "2026-11-26T18:00:00Z",
        "diagnosis_codes": ["E11.9"],
        "lines": [
            {"procedure_code": "99213", "units": 1, "charge": 120.0},
            {"procedure_code": "80053", "units": 2, "charge": 64.5},
        ],
    }
    claim.update(overrides)
    claim.setdefault("claim_amount", round(sum(line["charge"] for line in claim["lines"]), 2))
    claim.setdefault("num_services", sum(line["units"] for line in claim["lines"]))
    return claim


def _lines(rng: np.random.Generator, anomalous: bool) -> list[dict[str, Any]]:
    count = int(rng.integers(15, 40)) if anomalous else int(rng.integers(1, 5))
    lines = []
    for _ in range(count):
        units = int(rng.integers(1, 4))
        per_unit = rng.lognormal(7.5, 0.5) if anomalous else rng.lognormal(4.5, 0.4)
        lines.append({
            "procedure_code": PROCEDURES[int(rng.integers(len(PROCEDURES)))],
            "units": units,
            "charge": round(float(per_unit) * units, 2),
        })
    return lines


def v2_claims(n: int, *, seed: int = 7, anomaly_share: float = 0.05,
              prefix: str = "C2") -> list[dict[str, Any]]:
    """``n`` claims with labels (``is_anomaly``, ``pattern``); same seed, same claims."""
    rng = np.random.default_rng(seed)
    claims = []
    for i in range(n):
        anomalous = bool(rng.random() < anomaly_share)
        lines = _lines(rng, anomalous)
        service = date(2026, 11, 1) + timedelta(days=int(rng.integers(0, 25)))
        claim = v2_claim(
            claim_id=f"{prefix}-{seed}-{i:06d}",
            member_id=f"M-{int(rng.integers(1, 500)):06d}",
            provider_id=f"P-{int(rng.integers(1, 60)):04d}",
            patient_age=int(rng.integers(18, 90)),
            patient_sex=("F", "M", "U")[int(rng.integers(3))],
            service_date=service.isoformat(),
            submitted_at=(SUBMITTED + timedelta(seconds=i)).isoformat(),
            diagnosis_codes=list(rng.choice(DIAGNOSES, size=int(rng.integers(0, 4)),
                                            replace=False)),
            lines=lines,
        )
        claim["is_anomaly"] = anomalous
        claim["pattern"] = "gross_outlier" if anomalous else ""
        claims.append(claim)
    return claims


def without_labels(claim: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in claim.items() if k not in ("is_anomaly", "pattern")}


def as_contract(claims: Sequence[dict[str, Any]]) -> list[ClaimV2]:
    return [ClaimV2.from_json(orjson.dumps(without_labels(c))) for c in claims]


def write_jsonl(path: Path, claims: Sequence[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in claims))
    return path


MEMBER_DAY = date(2026, 3, 2)


def member_claim(claim_id: str, member: str = "M1", provider: str = "P1", day: int = 0,
          submitted_days: float = 0.0, charge: float = 120.0) -> ClaimV2:
    """One 99213 claim of ``member`` at ``provider``, ``day`` days after MEMBER_DAY, sent
    ``submitted_days`` later (what the member-history tests vary)."""
    served = MEMBER_DAY + timedelta(days=day)
    submitted = f"{(served + timedelta(days=int(submitted_days))).isoformat()}T10:00:00Z"
    return as_contract([v2_claim(
        claim_id=claim_id, member_id=member, provider_id=provider,
        service_date=served.isoformat(), submitted_at=submitted,
        lines=[{"procedure_code": "99213", "units": 1, "charge": charge}],
        claim_amount=charge, num_services=1)])[0]
