"""Message contracts shared by every part of claimflow (a public API).

One pydantic model per message. JSON Schema files generated from these models live in
``schemas/json/`` and are what downstream teams read.
"""

from schemas.any_claim import AnyClaim, parse_claim
from schemas.claim import CLAIM_FEATURES, Claim
from schemas.claim_v2 import ClaimLine, ClaimV2
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
from schemas.label import DISPOSITIONS, AnsweredDecision, Disposition, Label
from schemas.score import MemberContext, ScoreAnswer, ScoreRefusal, ScoreRequest, ScoreResult
from schemas.shadow import ShadowScore, ShadowVerdict

__all__ = [
    "CLAIM_FEATURES",
    "DISPOSITIONS",
    "SCHEMA_VERSION",
    "AnsweredDecision",
    "AnyClaim",
    "Claim",
    "ClaimLine",
    "ClaimV2",
    "ContractError",
    "DeadLetter",
    "Decision",
    "DecisionKind",
    "Disposition",
    "GatewaySource",
    "Label",
    "MemberContext",
    "ModelRef",
    "Reason",
    "ScoreAnswer",
    "ScoreRefusal",
    "ScoreRequest",
    "ScoreResult",
    "ShadowScore",
    "ShadowVerdict",
    "StreamSource",
    "parse_claim",
]
