"""Message contracts shared by every part of claimflow (a public API).

One pydantic model per message. JSON Schema files generated from these models live in
``schemas/json/`` and are what downstream teams read.
"""

from schemas.claim import CLAIM_FEATURES, Claim
from schemas.common import SCHEMA_VERSION, ContractError
from schemas.dead_letter import DeadLetter
from schemas.decision import (
    Decision,
    DecisionKind,
    GatewaySource,
    ModelRef,
    Reason,
    StreamSource,
)
from schemas.score import ScoreRequest, ScoreResult

__all__ = [
    "CLAIM_FEATURES",
    "SCHEMA_VERSION",
    "Claim",
    "ContractError",
    "DeadLetter",
    "Decision",
    "DecisionKind",
    "GatewaySource",
    "ModelRef",
    "Reason",
    "ScoreRequest",
    "ScoreResult",
    "StreamSource",
]
