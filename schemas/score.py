"""What the model service answers for a claim (and what it is asked)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

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
