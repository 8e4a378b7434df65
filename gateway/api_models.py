"""Request and response models of the HTTP API (they also feed the OpenAPI document).

Claims themselves are validated by :class:`schemas.Claim` (strict, JSON mode) in
:mod:`gateway.intake`; the models here describe the envelopes around them and the query
and path parameters, which arrive as strings and are therefore validated in lax mode.
"""

from __future__ import annotations

import copy
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import Claim, ClaimV2, Decision, DecisionKind, Label

CURSOR_PATTERN = r"^[0-9]{1,18}$"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClaimPath(_Params):
    claim_id: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        description="The claim's id (the Kafka key of its messages).",
    )


class OutcomeQuery(_Params):
    decision: DecisionKind | None = Field(default=None, description="Only this decision.")
    limit: int = Field(default=50, ge=1, le=500, description="Page size.")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN,
        description="Opaque: `next_cursor` of the previous page (newest first).",
    )
    status: Literal["open", "all"] = Field(
        default="all",
        description="open: only claims that no disposition has closed yet (no label, or "
        "needs_info); all: every claim.",
    )


class StatsQuery(_Params):
    bucket_s: int = Field(default=60, ge=1, le=86_400, description="Width of a time bucket.")
    buckets: int = Field(default=30, ge=1, le=500, description="How many buckets up to now.")


class SubmitResult(BaseModel):
    """Answer to a batch submission: each decided claim's decision, in request order."""

    decisions: list[Decision]
    replayed: list[str] = Field(
        description="claim_ids that were already decided: their first decision is returned "
        "and nothing was produced again."
    )
    pending: list[str] = Field(
        default_factory=list,
        description="claim_ids produced to the stream but not decided within "
        "GATEWAY_DECISION_TIMEOUT_S (the answer is then 202): poll "
        "GET /api/v1/claims/{claim_id}.",
    )


class Pending(BaseModel):
    """A claim handed to the stream and not decided yet: poll ``location``."""

    claim_id: str
    status: Literal["pending"] = "pending"
    location: str = Field(description="Where its decision will be: GET it until 200.")


class OutcomeItem(BaseModel):
    """A decision as stored by the outcome view, with where it was read from."""

    seq: int = Field(description="Arrival order in the view.")
    topic: str
    partition: int
    offset: int
    decision: Decision
    label: Label | None = Field(
        default=None, description="The claim's latest disposition (null: none yet).")


class OutcomePage(BaseModel):
    items: list[OutcomeItem]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


class DecisionCounts(BaseModel):
    approve: int = 0
    investigate: int = 0
    total: int = 0
    investigation_rate: float | None = Field(
        default=None, description="investigate / total (null when there is nothing)."
    )


class TimeBucket(DecisionCounts):
    start: str = Field(description="Bucket start (ISO 8601, UTC).")


class VersionCounts(DecisionCounts):
    model_name: str
    model_version: str


class Stats(BaseModel):
    totals: DecisionCounts
    bucket_s: int
    timeline: list[TimeBucket] = Field(description="Oldest first, ending with the current one.")
    by_model: list[VersionCounts]


class ShadowModel(BaseModel):
    """One model of a shadow pair: its investigate decisions and their precision on claims
    with a closing disposition."""

    name: str
    version: str
    investigate: int = Field(description="Shadowed claims this model decided investigate.")
    labelled: int = Field(description="Of those, claims labelled fraud or legitimate.")
    fraud: int = Field(description="Of those, claims labelled fraud.")
    investigate_unlabelled: int = Field(
        description="investigate decisions without a closing label (open, needs_info, or "
        "never queued: a claim only the challenger flags is routed to approved).")
    precision: float | None = Field(description="fraud / labelled (null without labels).")


class ShadowPair(BaseModel):
    """A champion and the challenger shadowed beside it, over their shadow period."""

    champion: ShadowModel
    challenger: ShadowModel
    claims: int = Field(description="Claims both models scored.")
    agree: int = Field(description="Claims both decided alike.")
    agreement: float | None = Field(description="agree / claims.")
    challenger_unseen: int = Field(
        description="The challenger's investigate decisions on claims the champion approved "
        "and no investigator labelled: nobody saw them.")
    challenger_precision_bound: float | None = Field(
        description="The challenger's precision with its unseen flags counted as legitimate, "
        "at the rate the claims both flagged were labelled: fraud / (labelled + unseen x "
        "that rate). What `claimflow promote` compares with the champion's precision.")
    first_decided_at: str = Field(description="First shadowed decision (ISO 8601, UTC).")
    last_decided_at: str = Field(description="Latest shadowed decision (ISO 8601, UTC).")


class ShadowStats(BaseModel):
    pairs: list[ShadowPair] = Field(description="Most recently shadowed pair first.")


class CsvRow(BaseModel):
    """One data line of an uploaded CSV: its decision or why it was rejected."""

    line: int = Field(description="Line number in the file (the header is line 1).")
    claim_id: str | None = None
    decision: Decision | None = None
    replayed: bool = False
    pending: bool = Field(
        default=False, description="Produced to the stream, not decided within "
        "GATEWAY_DECISION_TIMEOUT_S: poll GET /api/v1/claims/{claim_id}.")
    error: str | None = None


class CsvResult(BaseModel):
    rows: list[CsvRow]
    accepted: int
    rejected: int


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]


SERVER_FILLED: Final = ("claim_id", "submitted_at")


def submission_schemas(ref_template: str) -> dict[str, dict[str, Any]]:
    """The bodies of ``POST /api/v1/claims``, named for the OpenAPI components: a claim of
    either contract version whose claim_id and submitted_at are optional (generated when
    absent). Derived from the contracts so they cannot drift. ``ClaimSubmission`` is one of
    the two; ``schema_version`` (absent: 1) tells them apart."""
    v1 = _optional_server_fields(Claim.model_json_schema(mode="validation"),
                                 "ClaimSubmissionV1", "A version-1 claim (the lab's five numbers).")
    v2 = _optional_server_fields(
        ClaimV2.model_json_schema(mode="validation", ref_template=ref_template),
        "ClaimSubmissionV2",
        "A version-2 claim: member, provider, codes and lines; claim_amount and num_services "
        "must equal the sums of the lines' charges and units.",
    )
    defs = v2.pop("$defs", {})
    return {
        **defs,
        "ClaimSubmissionV1": v1,
        "ClaimSubmissionV2": v2,
        "ClaimSubmission": {
            "title": "ClaimSubmission",
            "description": "A claim to score, in contract version 1 or 2 (schema_version; "
            "absent means 1). claim_id is generated when absent; submitted_at defaults to now.",
            "oneOf": [{"$ref": ref_template.format(model=name)}
                      for name in ("ClaimSubmissionV1", "ClaimSubmissionV2")],
        },
    }


def _optional_server_fields(schema: dict[str, Any], title: str, what: str) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    schema["title"] = title
    schema["required"] = [name for name in schema.get("required", []) if name not in SERVER_FILLED]
    schema["description"] = f"{what} claim_id is generated when absent; submitted_at " \
        "defaults to now."
    return schema


CSV_CANONICAL_HEADER: Final = ("(claim_id,)?claim_amount,num_services,patient_age,provider_id,"
                                "days_since_last_claim(,submitted_at)?")


def csv_body_schema(max_rows: int) -> dict[str, Any]:
    """The CSV upload as JSON Schema can say it: a header, then 1..max_rows data lines, the
    first one not empty. An empty body or a body without a header or data is refused (422),
    so the published schema must not admit it either."""
    data_line = '[^\\r\\n\\x00"]'
    pattern = (f"^\\ufeff?{CSV_CANONICAL_HEADER}\\r?\\n{data_line}+"
               f"(\\r?\\n{data_line}*){{0,{max_rows - 1}}}$")
    return {"type": "string", "minLength": 1, "pattern": pattern}


def batch_schema(max_batch: int) -> dict[str, Any]:
    return {
        "title": "ClaimBatch",
        "type": "object",
        "additionalProperties": False,
        "required": ["claims"],
        "properties": {
            "claims": {
                "type": "array", "minItems": 1, "maxItems": max_batch,
                "items": {"$ref": "#/components/schemas/ClaimSubmission"},
            }
        },
    }
