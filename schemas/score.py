"""What the model service answers for a claim (and what it is asked)."""

from __future__ import annotations

from pydantic import Field

from schemas.any_claim import AnyClaim
from schemas.common import SCHEMA_VERSION, Contract, SchemaVersion
from schemas.decision import DecisionKind, ModelRef, Reason


class ScoreRequest(Contract):
    """A batch of claims for the model service."""

    claims: list[AnyClaim] = Field(min_length=1, max_length=10_000)


class ScoreResult(Contract):
    """The model's verdict on one claim."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    claim_id: str
    anomaly_score: float = Field(
        description="Higher is more unusual: the negated scikit-learn score_samples, in (0, 1]."
    )
    threshold: float = Field(description="Claims scoring above this are investigated.")
    decision: DecisionKind
    model: ModelRef
    reasons: list[Reason] = Field(default_factory=list)
