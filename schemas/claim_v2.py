"""The ``Claim`` contract, version 2: a claim as a payer sees it.

Who was treated (``member_id``, age, sex), who billed (``provider_id``, specialty), what was
done (diagnosis codes and procedure lines) and when (``service_date``, ``submitted_at``).
``claim_amount`` and ``num_services`` are required and must equal the sums of the lines'
charges (to the cent) and units: a producer states its totals, the contract checks them.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from schemas.claim import ClaimId
from schemas.common import IDENTIFIER_MAX_LENGTH, IDENTIFIER_PATTERN, Contract

PartyId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=IDENTIFIER_MAX_LENGTH,
        pattern=IDENTIFIER_PATTERN,
        description="Identifier of a member or provider (a UUID fits).",
        examples=["M-000042"],
    ),
]
Code = Annotated[
    str,
    Field(
        min_length=1,
        max_length=20,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$",
        description="A diagnosis or procedure code (SNOMED, RxNorm, CPT, HCPCS, ICD-10).",
        examples=["99213", "E11.9"],
    ),
]
Label = Annotated[str, Field(min_length=1, max_length=100)]

MAX_LINES = 100
MAX_DIAGNOSES = 12
CENT = 0.005  # half a cent: totals are compared to the cent


class ClaimLine(Contract):
    """One billed service line."""

    procedure_code: Code
    units: int = Field(ge=1, le=1000, description="Units of the procedure billed.")
    charge: float = Field(gt=0, le=10_000_000, description="Charge of the line (all units).")


class ClaimV2(Contract):
    """A claim with its member, provider, codes, lines and dates. Ground-truth labels are not
    part of it (they travel as Kafka headers, if at all)."""

    message_type: ClassVar[str] = "Claim"

    schema_version: Literal[2] = Field(description="Contract version 2.")
    claim_id: ClaimId
    member_id: PartyId
    provider_id: PartyId
    provider_specialty: Label | None = Field(
        default=None, description="Billing provider's specialty, if known."
    )
    place_of_service: Label | None = Field(
        default=None, description="Where the service was given (e.g. office, inpatient)."
    )
    patient_age: int = Field(ge=0, le=120, description="Member's age in years at service.")
    patient_sex: Literal["F", "M", "U"] = Field(description="F, M or U (unknown).")
    service_date: date = Field(description="Date of service (ISO 8601, YYYY-MM-DD).")
    submitted_at: AwareDatetime = Field(description="When the claim was submitted (with zone).")
    diagnosis_codes: list[Code] = Field(default_factory=list, max_length=MAX_DIAGNOSES)
    lines: list[ClaimLine] = Field(min_length=1, max_length=MAX_LINES)
    claim_amount: float = Field(
        gt=0,
        le=1_000_000_000,
        description="Billed amount: the sum of the lines' charges, to the cent.",
    )
    num_services: int = Field(ge=1, le=100_000, description="The sum of the lines' units.")

    @field_validator("claim_amount")
    @classmethod
    def _amount_is_the_sum_of_charges(cls, amount: float, info: ValidationInfo) -> float:
        lines: list[ClaimLine] | None = info.data.get("lines")
        if lines:  # invalid lines are reported on their own
            total = math.fsum(line.charge for line in lines)
            if abs(total - amount) >= CENT:
                raise PydanticCustomError(
                    "sum_mismatch",
                    "claim_amount {amount} is not the sum of the line charges ({total})",
                    {"amount": amount, "total": round(total, 2)},
                )
        return amount

    @field_validator("num_services")
    @classmethod
    def _services_are_the_sum_of_units(cls, services: int, info: ValidationInfo) -> int:
        lines: list[ClaimLine] | None = info.data.get("lines")
        if lines:
            total = sum(line.units for line in lines)
            if total != services:
                raise PydanticCustomError(
                    "sum_mismatch",
                    "num_services {services} is not the sum of the line units ({total})",
                    {"services": services, "total": total},
                )
        return services

