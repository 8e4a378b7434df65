"""The ``Decision`` contract: what happened to a claim. Published to ``claims.approved`` or
``claims.investigate`` keyed by claim_id; downstream investigators consume it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AwareDatetime, Field

from schemas.any_claim import AnyClaim
from schemas.claim import Claim
from schemas.claim_v2 import ClaimV2
from schemas.common import SCHEMA_VERSION, Contract, SchemaVersion

if TYPE_CHECKING:
    from datetime import datetime

    from schemas.score import ScoreResult

DecisionKind = Literal["approve", "investigate"]


class ModelRef(Contract):
    """Which model made the decision."""

    name: str = Field(min_length=1, examples=["claim-anomaly"])
    version: str = Field(min_length=1, description="Registry version number.", examples=["3"])
    run_id: str | None = Field(default=None, description="MLflow run that trained it.")


class Reason(Contract):
    """A feature that made the claim unusual, with its value against the training reference."""

    feature: str
    value: float
    percentile: float = Field(
        ge=0, le=100, description="Where the value falls among training claims (0-100)."
    )
    direction: Literal["high", "low"]
    message: str = Field(examples=["member filed 9 claims within 7 days of this one "
                                   "(99th percentile: 3)"])
    kind: Literal["model", "rule"] = Field(
        default="model",
        description="model: a feature in a tail of the training data; rule: a deterministic "
        "finding that forces investigate whatever the score (an exact resubmission).",
    )


class StreamSource(Contract):
    """The claim came from Kafka: where exactly."""

    kind: Literal["stream"] = "stream"
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class GatewaySource(Contract):
    """The claim was submitted synchronously through the HTTP gateway."""

    kind: Literal["gateway"] = "gateway"
    request_id: str | None = None


Source = Annotated[StreamSource | GatewaySource, Field(discriminator="kind")]


class Decision(Contract):
    """The outcome for one claim."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    claim: AnyClaim = Field(
        description="The claim as it was decided, in its own contract version (claim.schema_"
        "version: 1 or 2)."
    )
    decision: DecisionKind
    anomaly_score: float = Field(description="Higher is more unusual.")
    threshold: float = Field(description="anomaly_score above threshold means investigate.")
    model: ModelRef
    reasons: list[Reason] = Field(default_factory=list)
    decided_at: AwareDatetime
    source: Source

    @property
    def claim_id(self) -> str:
        return self.claim.claim_id

    @classmethod
    def from_score(
        cls,
        claim: Claim | ClaimV2,
        result: ScoreResult,
        *,
        decided_at: datetime,
        source: StreamSource | GatewaySource,
    ) -> Decision:
        """The decision for ``claim`` from the model's verdict on it."""
        if result.claim_id != claim.claim_id:
            raise ValueError(f"score is for {result.claim_id}, not for {claim.claim_id}")
        return cls(
            claim=claim,
            decision=result.decision,
            anomaly_score=result.anomaly_score,
            threshold=result.threshold,
            model=result.model,
            reasons=result.reasons,
            decided_at=decided_at,
            source=source,
        )

