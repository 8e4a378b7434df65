"""Decode + validate of a Claim, and encode of a Decision (goal: >= 200k Claim decodes/s)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from bench.common import emit, median_rate
from schemas import Claim, Decision, ModelRef, StreamSource

CLAIM_BYTES = (
    b'{"schema_version":1,"claim_id":"C-000001","claim_amount":1234.5,"num_services":3,'
    b'"patient_age":44,"provider_id":7,"days_since_last_claim":30,'
    b'"submitted_at":"2026-11-26T18:00:00Z"}'
)
GOAL_DECODES_PER_S = 200_000


def run(smoke: bool = False) -> dict[str, Any]:
    n = 20_000 if smoke else 200_000
    repeats = 3 if smoke else 5

    def decode() -> int:
        for _ in range(n):
            Claim.from_json(CLAIM_BYTES)
        return n

    claim = Claim.from_json(CLAIM_BYTES)
    decision = Decision(
        claim=claim, decision="approve", anomaly_score=0.4, threshold=0.55,
        model=ModelRef(name="claim-anomaly", version="1"), reasons=[],
        decided_at=datetime.now(UTC), source=StreamSource(topic="claims", partition=0, offset=1),
    )

    def encode() -> int:
        for _ in range(n):
            decision.to_json()
        return n

    decoded = median_rate(decode, repeats)
    return {
        "benchmark": "schema_codec",
        "claim_decode_validate": {**decoded, "goal_per_s": GOAL_DECODES_PER_S,
                                  "goal_met": decoded["median_per_s"] >= GOAL_DECODES_PER_S},
        "decision_encode": median_rate(encode, repeats),
    }


if __name__ == "__main__":
    emit(run(smoke="--smoke" in sys.argv))
