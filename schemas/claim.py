"""The ``Claim`` contract: one health-insurance claim as submitted for triage."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AwareDatetime, Field

from schemas.common import (
    IDENTIFIER_MAX_LENGTH,
    IDENTIFIER_PATTERN,
    SCHEMA_VERSION,
    Contract,
    SchemaVersion,
)

ClaimId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=IDENTIFIER_MAX_LENGTH,
        pattern=IDENTIFIER_PATTERN,
        description="Unique claim identifier; the Kafka key of every message about the claim.",
        examples=["C-000001"],
    ),
]

# The model's features, in the order the model sees them. Labels never appear here.
CLAIM_FEATURES: Final = (
    "claim_amount",
    "num_services",
    "patient_age",
    "provider_id",
    "days_since_last_claim",
)


class Claim(Contract):
    """A claim in contract version 1: the lab's five numbers (the seed profile). Version 2
    (:class:`schemas.claim_v2.ClaimV2`) carries members, providers, codes, lines and dates.
    Ground-truth labels are not part of it (they travel as a header, if at all)."""

    schema_version: SchemaVersion = Field(
        default=SCHEMA_VERSION, description="Contract version 1 (the default when absent)."
    )
    claim_id: ClaimId
    claim_amount: float = Field(
        gt=0, le=10_000_000, description="Billed amount in currency units, > 0 and <= 10M."
    )
    num_services: int = Field(ge=1, le=1000, description="Services billed on the claim.")
    patient_age: int = Field(ge=0, le=120, description="Patient age in years.")
    provider_id: int = Field(ge=1, le=1_000_000_000, description="Billing provider.")
    days_since_last_claim: int = Field(
        ge=0, le=36_500, description="Days since the patient's previous claim."
    )
    submitted_at: AwareDatetime = Field(description="When the claim was submitted (with zone).")


    def features(self) -> tuple[float, float, float, float, float]:
        """The model's feature vector, in :data:`CLAIM_FEATURES` order."""
        return (
            self.claim_amount,
            float(self.num_services),
            float(self.patient_age),
            float(self.provider_id),
            float(self.days_since_last_claim),
        )
