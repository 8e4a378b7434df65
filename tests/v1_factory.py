"""v1 claims as the stream worker reads them (JSON bytes), and the outcome topics, size cap
and clock the worker's pure-core tests share."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np

from schemas import Claim
from scorer.routing import OutcomeTopics

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TOPICS = OutcomeTopics(approved="out.ok", investigate="out.look", deadletter="out.dead")
MAX_BYTES = 4096


def claim_dict(**overrides: Any) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "schema_version": 1,
        "claim_id": "C-1",
        "claim_amount": 1234.5,
        "num_services": 3,
        "patient_age": 44,
        "provider_id": 7,
        "days_since_last_claim": 30,
        "submitted_at": "2026-01-01T00:00:00Z",
    }
    claim.update(overrides)
    return claim


def claim_bytes(**overrides: Any) -> bytes:
    return json.dumps(claim_dict(**overrides)).encode()


def claim(i: int, **fields: float) -> Claim:
    values: dict[str, object] = {
        "claim_id": f"C-{i:06d}",
        "claim_amount": 1_100.0,
        "num_services": 3,
        "patient_age": 45,
        "provider_id": 500,
        "days_since_last_claim": 180,
        "submitted_at": datetime(2026, 11, 26, 18, 0, tzinfo=UTC),
        **fields,
    }
    return Claim.model_validate(values)


def claims_for(rows: np.ndarray) -> list[Claim]:
    return [
        claim(i, claim_amount=float(a), num_services=int(s), patient_age=int(p),
              provider_id=int(v), days_since_last_claim=int(d))
        for i, (a, s, p, v, d) in enumerate(rows.tolist())
    ]
