"""What the model service answers for a claim (and what it is asked)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from schemas.any_claim import AnyClaim
from schemas.common import SCHEMA_VERSION, Contract, SchemaVersion
from schemas.decision import DecisionKind, ModelRef, Reason


class MemberContext(Contract):
    """A v2 claim's member-history features, computed by the stream's member stage from
    the member's earlier claims only (``features.member``); sent beside the claim to a model
    whose feature set reads history (``v2-history``, ``v2-peers``)."""

    claims_1d: float = Field(ge=1, description="The member's claims served within a day, "
                             "this one included.")
    claims_7d: float = Field(ge=1)
    claims_30d: float = Field(ge=1)
    providers_30d: float = Field(ge=1, description="Distinct providers within 30 days.")
    providers_7d: float | None = Field(
        default=None, ge=1,
        description="Distinct providers within 7 days. Read by the v2-velocity feature set; "
        "a worker older than this field leaves it out, and such a model refuses the batch.")
    days_since_previous: float = Field(ge=-1, description="-1: no earlier claim.")
    same_provider_same_day: float = Field(ge=0)
    duplicate: float = Field(ge=0, le=1, description="1: the same provider, service date and "
                             "lines were billed before.")
    duplicate_of: str | None = Field(default=None, description="That earlier claim's id.")
    duplicate_days_earlier: float = Field(default=0.0, ge=0)


class ScoreRequest(Contract):
    """A batch of claims for the model service; ``members`` (one per claim, in order) is
    required by a model that reads member history."""

    claims: list[AnyClaim] = Field(min_length=1, max_length=10_000)
    members: list[MemberContext] | None = None


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


class ScoreRefusal(Contract):
    """The served model cannot score this claim: it reads claims of another contract version
    (its feature set belongs to one version). Answered in the claim's place, so a batch
    mixing versions is still answered claim by claim."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    claim_id: str
    error_kind: Literal["unsupported_version"]
    error: str = Field(min_length=1, description="Which versions the model and the claim have.")
    model: ModelRef


def _answer_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "refusal" if "error_kind" in value else "result"
    return "refusal" if isinstance(value, ScoreRefusal) else "result"


ScoreAnswer = Annotated[
    Annotated[ScoreResult, Tag("result")] | Annotated[ScoreRefusal, Tag("refusal")],
    Discriminator(_answer_kind),
]


def only_results(answers: Sequence[ScoreResult | ScoreRefusal]) -> list[ScoreResult]:
    """The answers of a batch known to hold claims the model reads; raises ``ValueError``
    with the model's reason if one was refused."""
    results: list[ScoreResult] = []
    for answer in answers:
        if isinstance(answer, ScoreRefusal):
            raise ValueError(f"claim {answer.claim_id} refused: {answer.error}")
        results.append(answer)
    return results
