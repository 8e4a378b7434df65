"""Uploaded CSV files -> claims, one result per data line (pure).

The header names the claim fields; ``claim_id`` and ``submitted_at`` columns are optional
(like in the JSON API). The generator's label columns are evaluation-only and ignored.
Any other column is an error for the whole file: a typo must not silently drop a feature.
Numeric cells must be JSON numbers (ASCII digits, no ``1_0``, no ``nan``): the CSV upload
accepts exactly what the JSON API accepts. They are converted as JSON would read them and
then validated by the strict contract.

Rows are validated as they are read and the row cap is checked first: a 1 MiB body holds
~100k short rows, and validating all of them before refusing the file cost seconds of CPU
and ~100 MB per request.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from gateway.intake import Intake, InvalidSubmissionError, claim_from_object, new_claim_id
from schemas import Claim, ClaimV2
from schemas.common import FieldError, describe_errors

LABEL_COLUMNS: Final = frozenset({"is_anomaly", "pattern"})
NUMBER_FIELDS: Final = frozenset({"claim_amount", "num_services", "patient_age", "provider_id",
                                  "days_since_last_claim", "schema_version"})
# RFC 8259's number grammar, ASCII only: what the JSON API reads as a number.
JSON_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?",
                                re.ASCII)
KNOWN_COLUMNS: Final = frozenset(Claim.model_fields) | LABEL_COLUMNS
# Columns of the version-2 contract only: named in the error, so a v2 upload is told why.
V2_ONLY_COLUMNS: Final = frozenset(ClaimV2.model_fields) - frozenset(Claim.model_fields)
V1_ONLY: Final = ("CSV uploads take version-1 claims only; send version-2 claims as JSON to "
                  "/api/v1/claims or /api/v1/claims/batch")
REQUIRED_COLUMNS: Final = frozenset(Claim.model_fields) - {"claim_id", "submitted_at",
                                                           "schema_version"}


class CsvFileError(ValueError):
    """The file as a whole is unusable (422): no header, unknown columns, too many rows."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__(describe_errors(errors))


@dataclass(frozen=True, slots=True)
class CsvLine:
    """A data line: its number in the file and either a claim or the reason it was rejected."""

    line: int
    intake: Intake | None = None
    claim_id: str | None = None
    error: str | None = None


def decode_text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvFileError([{"loc": [], "type": "unicode_error",
                             "msg": f"file is not UTF-8: {exc.reason} at byte {exc.start}"}]
                           ) from exc


def check_header(header: list[str] | None) -> list[str]:
    if not header:
        raise CsvFileError([{"loc": [], "type": "missing", "msg": "the file has no header line"}])
    names = [name.strip() for name in header]
    errors: list[FieldError] = [
        {"loc": ["header", name], "type": "extra_forbidden", "msg": unknown_column(name)}
        for name in names if name not in KNOWN_COLUMNS
    ]
    errors += [
        {"loc": ["header", name], "type": "missing", "msg": f"missing column {name!r}"}
        for name in sorted(REQUIRED_COLUMNS - set(names))
    ]
    if len(set(names)) != len(names):
        errors.append({"loc": ["header"], "type": "duplicate_column",
                       "msg": "a column appears twice"})
    if errors:
        raise CsvFileError(errors)
    return names


def unknown_column(name: str) -> str:
    if name in V2_ONLY_COLUMNS:
        return f"column {name!r} belongs to claim version 2: {V1_ONLY}"
    return f"unknown column {name!r}"


def convert(name: str, text: str) -> Any:
    """A cell as the JSON value it would be in a JSON body. Python's ``int``/``float`` would
    also take ``1_0``, Arabic-Indic digits and ``nan``; a cell that is not a JSON number
    stays a string, so the contract reports the type error with the field's name."""
    value = text.strip()
    if name in NUMBER_FIELDS and JSON_NUMBER.fullmatch(value):
        return orjson.loads(value)
    return value


def row_object(names: list[str], cells: list[str]) -> dict[str, Any]:
    return {
        name: convert(name, cell)
        for name, cell in zip(names, cells, strict=True)
        if name not in LABEL_COLUMNS and not (name in ("claim_id", "submitted_at") and
                                              not cell.strip())
    }


def parse_csv(
    body: bytes,
    *,
    now: datetime,
    max_rows: int,
    make_id: Callable[[], str] = new_claim_id,
) -> list[CsvLine]:
    reader = csv.reader(io.StringIO(decode_text(body), newline=""))
    try:
        names = check_header(next(reader, None))
        lines = [parse_row(names, cells, line, now, make_id)
                 for line, cells in capped_rows(reader, max_rows)]
    except csv.Error as exc:
        raise CsvFileError([{"loc": ["line", reader.line_num], "type": "csv_error",
                             "msg": str(exc)}]) from exc
    if not lines:
        raise CsvFileError([{"loc": [], "type": "too_short", "msg": "the file has no data lines"}])
    return reject_duplicates(lines)


def capped_rows(reader: Any, max_rows: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of the non-empty rows; the row after the cap ends the file with
    a 422 before it (or anything after it) is parsed further."""
    count = 0
    for cells in reader:
        if not cells:
            continue
        count += 1
        if count > max_rows:
            raise CsvFileError([{"loc": ["line", reader.line_num], "type": "too_long",
                                 "msg": f"at most {max_rows} data lines per upload"}])
        yield reader.line_num, cells


def reject_duplicates(lines: list[CsvLine]) -> list[CsvLine]:
    """A claim_id repeated with different content: the later line is an error."""
    seen: dict[str, tuple[int, str]] = {}
    out = []
    for line in lines:
        if line.intake is not None:
            first = seen.setdefault(line.claim_id or "", (line.line, line.intake.fingerprint))
            if first[1] != line.intake.fingerprint:
                line = CsvLine(line.line, claim_id=line.claim_id,
                               error=f"claim_id {line.claim_id} is on line {first[0]} with "
                               "different content")
        out.append(line)
    return out


def parse_row(
    names: list[str], cells: list[str], line: int, now: datetime, make_id: Callable[[], str]
) -> CsvLine:
    if len(cells) != len(names):
        return CsvLine(line, error=f"expected {len(names)} cells, found {len(cells)}")
    obj = row_object(names, cells)
    claim_id = obj.get("claim_id") if isinstance(obj.get("claim_id"), str) else None
    try:
        intake = claim_from_object(obj, now=now, make_id=make_id, decode=Claim.from_json)
    except InvalidSubmissionError as exc:
        error = describe_errors(exc.errors)
        if any(err["loc"] == ["schema_version"] for err in exc.errors):
            error = f"{error} ({V1_ONLY})"
        return CsvLine(line, claim_id=claim_id, error=error)
    return CsvLine(line, intake=intake, claim_id=intake.claim_id)
