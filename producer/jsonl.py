"""v2 claims as JSON Lines: column-wise writing, and reading that keeps every bad line's place.

One claim per line, the ``ClaimV2`` fields in contract order, optionally followed by the
evaluation labels ``"is_anomaly"`` and ``"pattern"``. Labels never reach the contract: the
reader strips them and hands them on as Kafka headers.

Writing builds every line in Arrow (a million claims never become Python dicts); reading
is one loop over the lines with one pydantic-core call per claim, the only per-claim work.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from producer.encoding import EncodedClaims, Headers
from producer.errors import InputError, RowError
from producer.table import SEXES, ClaimTable, Vocab
from producer.timestamps import format_ms
from producer.typology import PATTERNS
from schemas.claim_v2 import ClaimV2
from schemas.common import ContractError

Progress = Callable[[int], None]
WRITE_CHUNK: Final = 200_000
# Labels as the writer puts them: last, in this order. Other label layouts take the slow path.
LABEL_KEY: Final = b',"is_anomaly":'
LABEL_TAIL: Final = re.compile(rb',"is_anomaly":(true|false),"pattern":"([A-Za-z0-9_]*)"}\s*')
PLAIN_TEXT: Final = r'^[^"\\\x00-\x1f]*$'
_validate_v2_json = ClaimV2.__pydantic_validator__.validate_json


def quoted(values: np.ndarray | pa.Array) -> pa.Array:
    """JSON string literals (``null`` for None). Strings without quotes, backslashes or
    control characters are wrapped column-wise; the others are escaped by orjson."""
    texts = values if isinstance(values, pa.Array) else pa.array(values.tolist(), pa.string())
    plain = pc.binary_join_element_wise('"', texts, '"', "")
    safe = pc.fill_null(pc.match_substring_regex(texts, PLAIN_TEXT), True)
    if not pc.all(safe).as_py():
        escaped = pa.array([orjson.dumps(v).decode() for v in texts.to_pylist()], pa.string())
        plain = pc.if_else(safe, plain, escaped)
    return pc.fill_null(plain, "null")


def money(cents: np.ndarray) -> pa.Array:
    """Cents as ``123.45``: exact, whereas a float's shortest form can end in ...99999."""
    units = pc.cast(pa.array(cents // 100), pa.string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(cents % 100), pa.string()), 2, "0")
    return pc.binary_join_element_wise(units, fraction, ".")


def as_text(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def joined_lists(offsets: np.ndarray, items: pa.Array) -> pa.Array:
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int64()), items)
    return pc.binary_join(lists, ",")


def line_items(table: ClaimTable, procedures: pa.Array) -> pa.Array:
    codes = procedures.take(pa.array(table.line_code))
    return pc.binary_join_element_wise(
        '{"procedure_code":', codes, ',"units":', as_text(table.units), ',"charge":',
        money(table.cents), "}", "")


def claim_ids(table: ClaimTable) -> pa.Array:
    return quoted(table.claim_id)


def quoted_vocab(vocab: Vocab) -> dict[str, pa.Array]:
    return {f.name: quoted(getattr(vocab, f.name)) for f in fields(vocab)}


def claim_documents(table: ClaimTable, *, labels: bool,
                    vocab: dict[str, pa.Array] | None = None) -> pa.Array:
    """One JSON document per claim (string), labels appended when ``labels``. ``vocab`` is
    :func:`quoted_vocab` of the table's vocabulary, when already at hand."""
    v = vocab or quoted_vocab(table.vocab)
    dx = v["diagnoses"].take(pa.array(table.dx_code))
    days = pa.array(table.service_day.astype(np.int32), pa.int32()).cast(pa.date32())
    parts: list[Any] = [
        '{"schema_version":2,"claim_id":', claim_ids(table),
        ',"member_id":', v["members"].take(pa.array(table.member)),
        ',"provider_id":', v["providers"].take(pa.array(table.provider)),
        ',"provider_specialty":', v["specialties"].take(pa.array(table.specialty)),
        ',"place_of_service":', v["places"].take(pa.array(table.place)),
        ',"patient_age":', as_text(table.age),
        ',"patient_sex":"', pa.array(np.array(SEXES)[table.sex]),
        '","service_date":"', pc.cast(days, pa.string()),
        '","submitted_at":"', format_ms(table.submitted_ms),
        '","diagnosis_codes":[', joined_lists(table.dx.offsets, dx),
        '],"lines":[', joined_lists(table.lines.offsets, line_items(table, v["procedures"])),
        '],"claim_amount":', money(table.amount_cents()),
        ',"num_services":', as_text(table.services()),
    ]
    if labels:
        is_anomaly = np.where(table.pattern > 0, "true", "false")
        parts += [',"is_anomaly":', pa.array(is_anomaly),
                  ',"pattern":"', pa.array(np.array(PATTERNS)[table.pattern]), '"']
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")


def write_claims_jsonl(table: ClaimTable, path: Path, progress: Progress | None = None) -> None:
    """Write ``table`` with labels to ``path`` atomically, one claim per line."""
    vocab = quoted_vocab(table.vocab)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # One chunk is written (GIL released) while Arrow builds the next one.
        with os.fdopen(fd, "wb") as sink, ThreadPoolExecutor(1) as writer:
            pending: Future[int] | None = None
            for start in range(0, len(table), WRITE_CHUNK):
                chunk = table.slice(start, min(start + WRITE_CHUNK, len(table)))
                documents = claim_documents(chunk, labels=True, vocab=vocab)
                lines = pc.binary_join_element_wise(documents, "\n", "")
                if pending:
                    pending.result()
                pending = writer.submit(sink.write, lines_buffer(lines))
                if progress:
                    progress(len(chunk))
            if pending:
                pending.result()
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def lines_buffer(lines: pa.Array) -> pa.Buffer:
    """The concatenated bytes of a string array: a slice of its data buffer, not a copy."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:]
    start, end = int(offsets[0]), int(offsets[len(lines)])
    return lines.buffers()[2].slice(start, end - start)


def header_cache() -> Callable[[bool, str], Headers]:
    """Rows with the same labels share one header list (there are only a handful)."""
    cache: dict[tuple[bool, str], Headers] = {}

    def headers(is_anomaly: bool, pattern: str) -> Headers:
        key = (is_anomaly, pattern)
        entry = cache.get(key)
        if entry is None:
            entry = cache[key] = [("is_anomaly", b"true" if is_anomaly else b"false"),
                                  ("pattern", pattern.encode())]
        return entry

    return headers


def encode_table(table: ClaimTable, *, labels: bool = True,
                 progress: Progress | None = None) -> tuple[EncodedClaims, list[RowError]]:
    """Generated claims as records: key = member_id, value = validated ClaimV2 JSON."""
    documents = pc.cast(claim_documents(table, labels=False), pa.binary()).to_pylist()
    keys: list[bytes] = []
    values: list[bytes] = []
    headers: list[Headers] = []
    errors: list[RowError] = []
    label = header_cache()
    for i, document in enumerate(documents):
        try:
            claim = _validate_v2_json(document)
        except ValidationError as exc:
            errors.append(RowError(f"row {i + 1}", contract_message(exc)))
            continue
        keys.append(claim.member_id.encode())
        values.append(document)
        pattern = PATTERNS[table.pattern[i]]
        headers.append(label(bool(pattern), pattern))
        if progress and (i + 1) % 50_000 == 0:
            progress(50_000)
    return EncodedClaims(keys, values, headers if labels else None), errors


def contract_message(exc: ValidationError) -> str:
    return str(ContractError.from_validation_error("Claim", exc))


class LineError(ValueError):
    """A line that is not a claim object with well-formed labels."""


def split_labels(line: bytes) -> tuple[bytes, bool | None, str | None]:
    """(the claim JSON without labels, is_anomaly, pattern); labels None when absent."""
    start = line.rfind(LABEL_KEY)
    match = LABEL_TAIL.fullmatch(line, start) if start > 0 else None
    if match and b'"is_anomaly"' not in line[:start]:
        return line[:start] + b"}", match.group(1) == b"true", match.group(2).decode()
    if b'"is_anomaly"' not in line and b'"pattern"' not in line:
        return line, None, None
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise LineError("not a JSON object")
    is_anomaly, pattern = document.pop("is_anomaly", None), document.pop("pattern", None)
    if is_anomaly is not None and not isinstance(is_anomaly, bool):
        raise LineError("is_anomaly: must be true or false")
    if pattern is not None and not isinstance(pattern, str):
        raise LineError("pattern: must be a string")
    if (is_anomaly is None) != (pattern is None):
        raise LineError("labels: is_anomaly and pattern go together")
    return orjson.dumps(document), is_anomaly, pattern


def line_claim_id(line: bytes) -> str | None:
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    claim_id = document.get("claim_id") if isinstance(document, dict) else None
    return claim_id if isinstance(claim_id, str) else None


def read_lines(path: Path) -> list[tuple[int, bytes]]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    rows = [(number, line) for number, line in enumerate(data.split(b"\n"), start=1)
            if line.strip()]
    if not rows:
        raise InputError(f"{path}: no claims (expected one JSON claim per line)")
    return rows


def read_claims_jsonl(path: Path, *, labels: bool = True, progress: Progress | None = None
                      ) -> tuple[EncodedClaims, list[RowError]]:
    """Every line of ``path`` validated as a v2 claim: records keyed by member_id, labels as
    headers (when ``labels`` and the line has them). Bad lines come back as
    :class:`RowError` located ``<path>:<line>`` with the contract's field paths."""
    keys: list[bytes] = []
    values: list[bytes] = []
    headers: list[Headers] = []
    errors: list[RowError] = []
    label = header_cache()
    any_labels = False
    for count, (number, line) in enumerate(read_lines(path), start=1):
        try:
            value, is_anomaly, pattern = split_labels(line)
            claim = _validate_v2_json(value)
        except (LineError, ValidationError) as exc:
            message = contract_message(exc) if isinstance(exc, ValidationError) else str(exc)
            errors.append(RowError(f"{path}:{number}", message, line_claim_id(line)))
            continue
        keys.append(claim.member_id.encode())
        values.append(value)
        any_labels |= is_anomaly is not None
        headers.append(label(bool(is_anomaly), pattern or "") if is_anomaly is not None else [])
        if progress and count % 50_000 == 0:
            progress(50_000)
    return EncodedClaims(keys, values, headers if labels and any_labels else None), errors
