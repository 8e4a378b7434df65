"""The ``ShadowScore`` contract: what the champion and the challenger each made of one claim
while the challenger runs in shadow. Published by the stream worker to ``claims.shadow``
keyed by claim_id, in the transaction of the claim's decision (exactly one per decided
claim while a challenger is served). Only the champion's verdict routes the claim; the
challenger's is evidence for promotion (agreement, and precision on labelled claims)."""

from __future__ import annotations

from pydantic import AwareDatetime, Field

from schemas.claim import ClaimId
from schemas.common import SCHEMA_VERSION, Contract, SchemaVersion
from schemas.decision import DecisionKind, ModelRef, StreamSource


class ShadowVerdict(Contract):
    """One model's verdict on the claim (score, threshold, decision)."""

    model: ModelRef
    anomaly_score: float = Field(description="The model's score (higher is more unusual).")
    threshold: float = Field(description="Its threshold: above it the model says investigate.")
    decision: DecisionKind


class ShadowScore(Contract):
    """Champion and challenger side by side on one claim, scored from the same features."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    claim_id: ClaimId
    champion: ShadowVerdict = Field(description="The verdict that routed the claim.")
    challenger: ShadowVerdict = Field(description="The shadow model's verdict (not acted on).")
    agree: bool = Field(description="Both models decided alike.")
    decided_at: AwareDatetime = Field(description="decided_at of the claim's Decision.")
    source: StreamSource = Field(description="Where the claim was read.")


# How a shadow period's records are read, in one place for the promotion gate (trainer) and
# the dashboard (gateway), which may both import the contracts and not each other.
def precision_bound(fraud: int, labelled: int, unseen: int, both_flagged: int,
                    both_labelled: int) -> float | None:
    """A challenger's shadow precision if its ``unseen`` flags (claims the champion approved,
    so no investigator saw them), had they been labelled at the rate investigators closed
    the claims both models flagged, had all been legitimate: fraud / (labelled + unseen x
    that rate). None without labelled flags."""
    if not labelled:
        return None
    return fraud / (labelled + unseen * labelling_rate(both_flagged, both_labelled))


def labelling_rate(both_flagged: int, both_labelled: int) -> float:
    """The share of claims both models flagged that investigators closed (1.0 when none was
    flagged by both: nothing to scale by)."""
    return both_labelled / both_flagged if both_flagged else 1.0
