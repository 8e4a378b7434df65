"""The ``DeadLetter`` contract: input that could not be processed, kept whole with the reason."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.common import SCHEMA_VERSION, Contract, SchemaVersion
from schemas.decision import StreamSource

# unsupported_version: a valid claim whose contract version the served model does not score
# (a v1 claim while a v2-trained model is champion, or the other way round).
# duplicate_claim_id: the same claim again under a claim_id the worker already read (its
# first outcome stands); claim_id_conflict: another claim under a used claim_id.
ErrorKind = Literal[
    "not_json",
    "contract_violation",
    "too_large",
    "empty",
    "processing_error",
    "unsupported_version",
    "duplicate_claim_id",
    "claim_id_conflict",
]


class DeadLetter(Contract):
    """A message that was set aside, with its original bytes and why."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    original_value_b64: str = Field(description="The original message value, base64-encoded.")
    original_key_b64: str | None = Field(
        default=None, description="The original message key, base64-encoded (if any)."
    )
    error_kind: ErrorKind
    error: str = Field(min_length=1, description="Human-readable reason, with field paths.")
    source: StreamSource
    failed_at: AwareDatetime

    @classmethod
    def for_message(
        cls,
        *,
        value: bytes | None,
        key: bytes | None,
        error_kind: ErrorKind,
        error: str,
        source: StreamSource,
        failed_at: AwareDatetime,
    ) -> DeadLetter:
        return cls(
            original_value_b64=base64.b64encode(value or b"").decode("ascii"),
            original_key_b64=None if key is None else base64.b64encode(key).decode("ascii"),
            error_kind=error_kind,
            error=error,
            source=source,
            failed_at=failed_at,
        )

    @property
    def original_value(self) -> bytes:
        return base64.b64decode(self.original_value_b64)

