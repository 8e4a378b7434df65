"""Parse at the edge: request bodies -> validated claims of any contract version (pure).

``schema_version`` picks the contract (absent: 1, the lab's five numbers; 2: members,
providers, codes and lines), as on the ``claims`` topic (:func:`schemas.parse_claim`).

A submission may leave out ``claim_id`` (generated) and ``submitted_at`` (now). Everything
else goes through the strict contract in JSON mode, so ``"12"`` is not an int and an
ISO-8601 string is a datetime. Errors carry field paths relative to the request body.

One deliberate leniency: an integral float such as ``8.0`` where the contract has an
integer is read as ``8``. The published request schemas are JSON Schema, whose ``integer``
admits ``8.0``, so a client generated from them may send it; refusing it would surprise that
client. ``8.5`` or ``true`` stay errors, and the claim is stored and published with ``8``.

The *fingerprint* of a claim is what idempotency compares: a digest of the fields the client
sent (server-filled defaults excluded), in canonical form, so that resubmitting the same
claim without ``submitted_at`` is recognised as the same claim.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson
import pydantic_core

from schemas import Claim, ClaimV2, ContractError
from schemas import parse_claim as decode_any_claim
from schemas.claim_v2 import ClaimLine
from schemas.common import FieldError

BATCH_KEY: Final = "claims"
# Integer fields of every claim version, lines included (the JSON Schema's ``integer``s).
INTEGER_FIELDS: Final = frozenset(
    name for model in (Claim, ClaimV2, ClaimLine)
    for name, field in model.model_fields.items() if field.annotation is int
) | {"schema_version"}
LINES_KEY: Final = "lines"


class MalformedJsonError(ValueError):
    """The body is not JSON at all (400)."""


class InvalidSubmissionError(ValueError):
    """The body is JSON but violates the contract (422); ``errors`` have body-relative paths."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__(ContractError("submission", errors).args[0])


@dataclass(frozen=True, slots=True)
class Intake:
    """A validated claim and the digest that idempotency compares."""

    claim: Claim | ClaimV2
    fingerprint: str
    server_filled: tuple[str, ...] = ()  # fields the server filled in (not fingerprinted)

    @property
    def claim_id(self) -> str:
        return self.claim.claim_id

    def same_claim(self, other: Claim | ClaimV2) -> bool:
        """``other`` (e.g. a claim the stream decided under this claim_id) is this claim, by
        the fields the client sent."""
        return fingerprint(other, self.server_filled) == self.fingerprint


def new_claim_id() -> str:
    return f"gw-{uuid.uuid4().hex}"


def parse_json(body: bytes) -> Any:
    """Decode JSON (big integers included, so they fail validation rather than decoding)."""
    if not body.strip():
        raise MalformedJsonError("empty body")
    try:
        return pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise MalformedJsonError(f"body is not valid JSON: {exc}") from exc


Decoder = Callable[[bytes], Claim | ClaimV2]


def fingerprint(claim: Claim | ClaimV2, server_filled: Sequence[str]) -> str:
    data = claim.model_dump(mode="json", exclude=set(server_filled))
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def claim_from_object(
    obj: Any,
    *,
    now: datetime,
    make_id: Callable[[], str] = new_claim_id,
    loc: Sequence[str | int] = (),
    decode: Decoder = decode_any_claim,
) -> Intake:
    """One claim object from a decoded body; raises :class:`InvalidSubmissionError`.
    ``decode`` is the contract (any version by default; the CSV upload takes v1 only)."""
    if not isinstance(obj, dict):
        raise InvalidSubmissionError(
            [{"loc": list(loc), "type": "model_type", "msg": "Input should be an object"}]
        )
    data = integral_floats_as_ints(obj)
    filled = []
    if "claim_id" not in data:
        data["claim_id"] = make_id()
        filled.append("claim_id")
    if "submitted_at" not in data:
        data["submitted_at"] = now.isoformat()
        filled.append("submitted_at")
    try:
        # Round trip through JSON so that strict JSON-mode rules apply (datetimes as strings).
        claim = decode(pydantic_core.to_json(data, inf_nan_mode="constants"))
    except ContractError as exc:
        raise InvalidSubmissionError(
            [{**err, "loc": [*loc, *err["loc"]]} for err in exc.errors]
        ) from exc
    return Intake(claim, fingerprint(claim, filled), tuple(filled))


def integral_floats_as_ints(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of a claim object with ``8.0`` as ``8`` in integer fields (its lines too)."""
    data = {key: _as_int(value) if key in INTEGER_FIELDS else value for key, value in obj.items()}
    lines = data.get(LINES_KEY)
    if isinstance(lines, list):
        data[LINES_KEY] = [integral_floats_as_ints(line) if isinstance(line, dict) else line
                           for line in lines]
    return data


def _as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_claim(body: bytes, *, now: datetime, make_id: Callable[[], str] = new_claim_id) -> Intake:
    """``POST /api/v1/claims``: one claim object."""
    return claim_from_object(parse_json(body), now=now, make_id=make_id)


def parse_batch(
    body: bytes,
    *,
    now: datetime,
    max_batch: int,
    make_id: Callable[[], str] = new_claim_id,
) -> list[Intake]:
    """``POST /api/v1/claims/batch``: ``{"claims": [...]}``; all claims valid or 422."""
    obj = parse_json(body)
    claims = batch_items(obj, max_batch)
    intakes: list[Intake] = []
    errors: list[FieldError] = []
    for index, item in enumerate(claims):
        try:
            intakes.append(claim_from_object(item, now=now, make_id=make_id,
                                             loc=(BATCH_KEY, index)))
        except InvalidSubmissionError as exc:
            errors.extend(exc.errors)
    errors.extend(duplicate_errors(intakes, [BATCH_KEY]))
    if errors:
        raise InvalidSubmissionError(errors)
    return intakes


def batch_items(obj: Any, max_batch: int) -> list[Any]:
    """The envelope check of a batch body: an object with exactly a non-empty ``claims`` list."""
    if not isinstance(obj, dict):
        raise InvalidSubmissionError([{"loc": [], "type": "model_type",
                                  "msg": "Input should be an object"}])
    errors: list[FieldError] = [
        {"loc": [key], "type": "extra_forbidden", "msg": "Extra inputs are not permitted"}
        for key in obj if key != BATCH_KEY
    ]
    claims = obj.get(BATCH_KEY)
    if BATCH_KEY not in obj:
        errors.append({"loc": [BATCH_KEY], "type": "missing", "msg": "Field required"})
    elif not isinstance(claims, list):
        errors.append({"loc": [BATCH_KEY], "type": "list_type", "msg": "Input should be a list"})
    elif not claims:
        errors.append({"loc": [BATCH_KEY], "type": "too_short",
                       "msg": "List should have at least 1 item"})
    elif len(claims) > max_batch:
        errors.append({"loc": [BATCH_KEY], "type": "too_long",
                       "msg": f"List should have at most {max_batch} items, not {len(claims)}"})
    if errors:
        raise InvalidSubmissionError(errors)
    assert isinstance(claims, list)
    return claims


def duplicate_errors(
    intakes: Sequence[Intake], prefix: Sequence[str | int], positions: Sequence[int] | None = None
) -> list[FieldError]:
    """The same claim_id twice in one request with different content is a contract error."""
    seen: dict[str, str] = {}
    errors: list[FieldError] = []
    for index, intake in enumerate(intakes):
        first = seen.setdefault(intake.claim_id, intake.fingerprint)
        if first != intake.fingerprint:
            where = positions[index] if positions is not None else index
            errors.append({
                "loc": [*prefix, where, "claim_id"], "type": "duplicate_claim_id",
                "msg": f"claim_id {intake.claim_id} appears earlier with different content",
            })
    return errors
