"""In-process stand-ins for the model service and the broker, for unit tests of the gateway's
HTTP logic only (integration tests use a real ``bentoml serve`` and a real broker).

The fake scorer follows a simple visible rule (investigate above 10,000) so tests can reason
about outcomes; switches make it or the publisher unavailable to drive 503 answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.dispositions import LabelUnavailable
from gateway.publisher import Outgoing, PublishUnavailable
from gateway.settings import GatewaySettings
from schemas import Claim, ClaimV2, Label, ModelRef, Reason, ScoreAnswer, ScoreRefusal, ScoreResult
from scorer.client import ModelServiceError, ModelUnavailable

FAKE_MODEL = ModelRef(name="claim-anomaly", version="7", run_id="fake-run")
INVESTIGATE_ABOVE = 10_000.0


def fake_refusal(claim: Claim | ClaimV2, reads: int) -> ScoreRefusal:
    return ScoreRefusal(claim_id=claim.claim_id, error_kind="unsupported_version",
                        error=f"the served model scores claims of schema_version {reads}; "
                        f"this claim is schema_version {claim.schema_version}",
                        model=FAKE_MODEL)


def fake_result(claim: Claim | ClaimV2) -> ScoreResult:
    score = claim.claim_amount / (claim.claim_amount + INVESTIGATE_ABOVE)
    investigate = claim.claim_amount > INVESTIGATE_ABOVE
    reasons = [
        Reason(feature="claim_amount", value=claim.claim_amount, percentile=99.9,
               direction="high",
               message=f"claim_amount {claim.claim_amount:,.0f} is above the 99.9th percentile")
    ] if investigate else []
    return ScoreResult(claim_id=claim.claim_id, anomaly_score=score, threshold=0.5,
                       decision="investigate" if investigate else "approve", model=FAKE_MODEL,
                       reasons=reasons)


@dataclass
class FakeScorer:
    available: bool = True
    broken: bool = False
    calls: int = 0
    reads_version: int | None = None  # like a real model: refuse claims of other versions

    def _check(self) -> None:
        self.calls += 1
        if not self.available:
            raise ModelUnavailable("fake model service is down")
        if self.broken:
            raise ModelServiceError("fake model service answered nonsense")

    def _answer(self, claim: Claim | ClaimV2) -> ScoreAnswer:
        if self.reads_version not in (None, claim.schema_version):
            return fake_refusal(claim, self.reads_version)
        return fake_result(claim)

    def score(self, claim: Claim | ClaimV2) -> ScoreAnswer:
        self._check()
        return self._answer(claim)

    def score_batch(self, claims: Sequence[Claim | ClaimV2]) -> list[ScoreAnswer]:
        self._check()
        return [self._answer(claim) for claim in claims]

    def ready(self) -> bool:
        return self.available

    def close(self) -> None:
        pass


@dataclass
class FakePublisher:
    available: bool = True
    published: list[Outgoing] = field(default_factory=list)

    def publish(self, items: Sequence[Outgoing], timeout_s: float) -> None:
        if not self.available:
            raise PublishUnavailable("fake broker is down")
        self.published.extend(items)

    def ready(self, timeout_s: float) -> bool:
        return self.available

    def close(self) -> None:
        pass

    def claim_ids(self) -> list[str]:
        return [item.decision.claim_id for item in self.published]


@dataclass
class FakeLabelPublisher:
    available: bool = True
    published: list[Label] = field(default_factory=list)

    def publish(self, label: Label, timeout_s: float) -> None:
        if not self.available:
            raise LabelUnavailable("fake broker is down")
        self.published.append(label)

    def close(self) -> None:
        pass


def fake_settings(home: Path, **overrides: Any) -> GatewaySettings:
    return GatewaySettings(claimflow_home=home, view_enabled=False,
                           **overrides)


def claim_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "claim_id": "C-000001", "claim_amount": 1234.5, "num_services": 3, "patient_age": 44,
        "provider_id": 7, "days_since_last_claim": 30, "submitted_at": "2026-01-02T03:04:05Z",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}
