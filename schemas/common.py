"""Pieces every contract shares."""

from __future__ import annotations

from typing import ClassVar, Final, Literal, Self, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError

SchemaVersion = Literal[1]
# Claim, member and provider ids: Kafka keys and URL path segments, so no spaces or slashes
# (a UUID fits).
IDENTIFIER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
IDENTIFIER_MAX_LENGTH: Final = 64
SCHEMA_VERSION: Final[SchemaVersion] = 1


class FieldError(TypedDict):
    """One contract violation: where (``loc``, a field path), what kind, and a message."""

    loc: list[str | int]
    type: str
    msg: str


class Contract(BaseModel):
    """Base of every message: strict types, no extra fields, immutable, no NaN/inf."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        str_strip_whitespace=False,
    )
    # The name errors give the message ("invalid Claim: ..."): both claim versions are "Claim".
    message_type: ClassVar[str] = ""

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Decode and validate one message; raises :class:`ContractError`."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            name = cls.message_type or cls.__name__
            raise ContractError.from_validation_error(name, exc) from exc

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


class ContractError(ValueError):
    """A message that violates its contract. ``errors`` holds one entry per violation."""

    def __init__(self, message_type: str, errors: list[FieldError]) -> None:
        self.message_type = message_type
        self.errors = errors
        super().__init__(f"invalid {message_type}: {describe_errors(errors)}")

    @classmethod
    def from_validation_error(cls, message_type: str, exc: ValidationError) -> ContractError:
        errors: list[FieldError] = [
            {"loc": _without_union_tags(err["loc"]), "type": err["type"], "msg": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        return cls(message_type, errors)


    def paths(self) -> dict[str, str]:
        """Dotted field path -> error type, e.g. ``{"claim.patient_age": "less_than_equal"}``."""
        return {error_path(err): err["type"] for err in self.errors}


# The tags of the claim-version union (schemas.any_claim): pydantic puts the chosen tag in
# every error path; no contract has a field named like them.
UNION_TAGS: Final = frozenset({"1", "2"})


def _without_union_tags(loc: tuple[str | int, ...]) -> list[str | int]:
    return [part for part in loc if part not in UNION_TAGS]


def error_path(err: FieldError) -> str:
    return ".".join(str(part) for part in err["loc"])


def describe_errors(errors: list[FieldError]) -> str:
    """All violations on one line: ``field.path: message; ...``."""
    return "; ".join(f"{error_path(err) or '<message>'}: {err['msg']}" for err in errors)
