"""Claims of every contract version on one topic: ``AnyClaim`` and :func:`parse_claim`.

A message's ``schema_version`` field picks its contract; a message without it is version 1
(the lab's contract, which had the field optional). Field paths in errors are those of the
chosen version, e.g. ``lines.0.units``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from schemas.claim import Claim
from schemas.claim_v2 import ClaimV2
from schemas.common import ContractError

CLAIM_VERSIONS: Final = (1, 2)


def _version_of(value: Any) -> str | None:
    if isinstance(value, dict):
        version = value.get("schema_version", 1)
    else:  # a model instance, or not an object at all (v1 then reports the type error)
        version = getattr(value, "schema_version", 1)
    if isinstance(version, bool) or version not in CLAIM_VERSIONS:
        return None
    return str(version)


AnyClaim = Annotated[
    Annotated[Claim, Tag("1")] | Annotated[ClaimV2, Tag("2")],
    Discriminator(
        _version_of,
        custom_error_type="unsupported_version",
        custom_error_message="schema_version must be one of 1, 2",
    ),
]
_ADAPTER: Final[TypeAdapter[Claim | ClaimV2]] = TypeAdapter(AnyClaim)


def parse_claim(data: bytes | str) -> Claim | ClaimV2:
    """Decode and validate one claim of any version; raises :class:`ContractError`."""
    try:
        return _ADAPTER.validate_json(data)
    except ValidationError as exc:
        raise _contract_error(exc) from exc


def _contract_error(exc: ValidationError) -> ContractError:
    error = ContractError.from_validation_error("Claim", exc)
    for err in error.errors:
        if err["type"] == "unsupported_version":
            err["loc"] = ["schema_version"]
    return error
