"""The ``Label`` contract: an investigator's disposition of a claim the model sent to
investigation. Published to the compacted ``claims.labels`` topic keyed by claim_id, so the
latest label of a claim wins (a later one replaces an earlier one, compaction keeps only it).

A label names the decision it answers (model, score, threshold, when it was decided), so a
training run can tell which model's verdict a label confirms or refutes, and can drop labels
that answer a model it does not care about.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

from pydantic import AwareDatetime, Field

from schemas.claim import ClaimId
from schemas.common import SCHEMA_VERSION, Contract, SchemaVersion
from schemas.decision import DecisionKind, ModelRef

if TYPE_CHECKING:
    from datetime import datetime

    from schemas.decision import Decision

Disposition = Literal["fraud", "legitimate", "needs_info"]
DISPOSITIONS: Final[tuple[Disposition, ...]] = ("fraud", "legitimate", "needs_info")
# A claim stays in the open queue until a label closes it; needs_info keeps it open.
CLOSING_DISPOSITIONS: Final = frozenset({"fraud", "legitimate"})
NOTE_MAX_LENGTH: Final = 2000
INVESTIGATOR_MAX_LENGTH: Final = 64


class AnsweredDecision(Contract):
    """The decision a label answers, copied from the ``Decision`` message."""

    decision: DecisionKind = Field(
        description="What the model decided (the gateway labels only 'investigate' decisions).")
    model: ModelRef
    anomaly_score: float = Field(description="The model's score for the claim.")
    threshold: float = Field(description="The model's threshold at the time.")
    decided_at: AwareDatetime = Field(description="When the decision was made.")


class Label(Contract):
    """One disposition of one claim. Keyed by claim_id; the latest per claim counts."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    claim_id: ClaimId
    disposition: Disposition = Field(
        description="fraud or legitimate close the claim; needs_info keeps it open.")
    note: str = Field(default="", max_length=NOTE_MAX_LENGTH,
                      description="The investigator's note (may be empty).")
    investigator: str = Field(
        min_length=1, max_length=INVESTIGATOR_MAX_LENGTH,
        description="Who decided: a name as given, or 'simulated' for `claimflow investigate`.",
        examples=["alice", "simulated"])
    decided_at: AwareDatetime = Field(description="When the investigator decided.")
    answers: AnsweredDecision

    @classmethod
    def answering(
        cls, decision: Decision, disposition: Disposition, *, investigator: str,
        decided_at: datetime, note: str = "",
    ) -> Label:
        """The label for ``decision``'s claim."""
        return cls(
            claim_id=decision.claim_id,
            disposition=disposition,
            note=note,
            investigator=investigator,
            decided_at=decided_at,
            answers=AnsweredDecision(
                decision=decision.decision, model=decision.model,
                anomaly_score=decision.anomaly_score, threshold=decision.threshold,
                decided_at=decision.decided_at,
            ),
        )

    @property
    def closes(self) -> bool:
        """True when the claim leaves the open queue with this label."""
        return self.disposition in CLOSING_DISPOSITIONS
