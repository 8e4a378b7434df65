"""v2 claims as JSON Lines: column-wise writing, and reading that keeps every bad line's place.

One claim per line, the ``ClaimV2`` fields in contract order, optionally followed by the
evaluation labels ``"is_anomaly"`` and ``"pattern"``. Labels never reach the contract: the
reader strips them and hands them on as Kafka headers.

Writing builds every line in Arrow (a million claims never become Python dicts); reading
is one loop over the lines with one pydantic-core call per claim, the only per-claim work.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
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
PROGRESS_STEP: Final = 50_000
PARALLEL_BYTES: Final = 20_000_000  # ~40k claims: below that a second process costs more
MAX_WORKERS: Final = 4
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
        if progress and (i + 1) % PROGRESS_STEP == 0:
            progress(PROGRESS_STEP)
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


def read_file(path: Path) -> bytes:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


@dataclass
class Part:
    """The validated lines of one stretch of a file (picklable: it comes back from a worker).
    ``labels[i]`` is None for a line without labels."""

    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    labels: list[tuple[bool, str] | None] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def validate_lines(data: bytes, first_line: int, name: str,
                   progress: Progress | None = None) -> Part:
    """Every non-blank line of ``data`` (line ``first_line`` of file ``name`` first)."""
    part = Part()
    count = 0
    for number, line in enumerate(data.split(b"\n"), start=first_line):
        if not line.strip():
            continue
        count += 1
        try:
            value, is_anomaly, pattern = split_labels(line)
            claim = _validate_v2_json(value)
        except (LineError, ValidationError) as exc:
            message = contract_message(exc) if isinstance(exc, ValidationError) else str(exc)
            part.errors.append(RowError(f"{name}:{number}", message, line_claim_id(line)))
            continue
        part.keys.append(claim.member_id.encode())
        part.values.append(value)
        part.labels.append(None if is_anomaly is None else (is_anomaly, pattern or ""))
        if progress and count % PROGRESS_STEP == 0:
            progress(PROGRESS_STEP)
    return part


@dataclass(frozen=True)
class PackedPart:
    """A :class:`Part` as a few big strings: pickling 100k small objects back from a worker
    costs more than splitting them again. Keys and values never contain a newline (a value
    is one line of the file); a label is ``""`` (none), ``"0"`` or ``"1"`` + pattern."""

    keys: bytes
    values: bytes
    labels: str
    errors: list[RowError]

    @classmethod
    def of(cls, part: Part) -> PackedPart:
        labels = ("" if label is None else f"{int(label[0])}{label[1]}" for label in part.labels)
        return cls(b"\n".join(part.keys), b"\n".join(part.values), "\n".join(labels),
                   part.errors)

    def unpack(self) -> Part:
        if not self.values:
            return Part(errors=self.errors)
        labels = [None if not text else (text[0] == "1", text[1:])
                  for text in self.labels.split("\n")]
        return Part(self.keys.split(b"\n"), self.values.split(b"\n"), labels, self.errors)


def validate_file_part(path: Path, start: int, end: int, first_line: int) -> PackedPart:
    """:func:`validate_lines` of bytes ``start:end`` of ``path`` (runs in a worker process)."""
    with path.open("rb") as handle:
        handle.seek(start)
        return PackedPart.of(validate_lines(handle.read(end - start), first_line, str(path)))


def split_points(data: bytes, parts: int) -> list[tuple[int, int, int]]:
    """(start, end, first line number) of ``parts`` stretches that end at line ends."""
    bounds = [0]
    for k in range(1, parts):
        cut = data.find(b"\n", max(bounds[-1], len(data) * k // parts))
        bounds.append(len(data) if cut < 0 else cut + 1)
    bounds.append(len(data))
    firsts = [1]
    for a, b in itertools.pairwise(bounds[:-1]):
        firsts.append(firsts[-1] + data.count(b"\n", a, b))
    return [(a, b, first) for (a, b), first in zip(itertools.pairwise(bounds), firsts,
                                                    strict=True) if b > a]


def worker_count(data: bytes) -> int:
    """Forked validators for big files: validation is CPU-bound and holds the GIL."""
    if len(data) < PARALLEL_BYTES or sys.platform == "win32":
        return 1
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))


def validate_parts(path: Path, data: bytes, progress: Progress | None) -> list[Part]:
    pieces = split_points(data, worker_count(data))
    if not pieces:
        return []
    (start, end, first), rest = pieces[0], pieces[1:]
    if not rest:
        return [validate_lines(data[start:end], first, str(path), progress)]
    # Forked before any Kafka client exists; a worker only reads the file and validates.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(len(rest), mp_context=context) as pool:
        futures = [pool.submit(validate_file_part, path, *piece) for piece in rest]
        parts = [validate_lines(data[start:end], first, str(path), progress)]
        parts += [future.result().unpack() for future in futures]
    return parts


def read_claims_jsonl(path: Path, *, labels: bool = True, progress: Progress | None = None
                      ) -> tuple[EncodedClaims, list[RowError]]:
    """Every line of ``path`` validated as a v2 claim: records keyed by member_id, labels as
    headers (when ``labels`` and the line has them). Bad lines come back as
    :class:`RowError` located ``<path>:<line>`` with the contract's field paths. Big files
    are validated by several processes, each taking a stretch of lines."""
    data = read_file(path)
    parts = validate_parts(path, data, progress)
    errors = [error for part in parts for error in part.errors]
    keys = [key for part in parts for key in part.keys]
    if not keys and not errors:
        raise InputError(f"{path}: no claims (expected one JSON claim per line)")
    values = [value for part in parts for value in part.values]
    header = header_cache()
    found = [label for part in parts for label in part.labels]
    has_labels = labels and any(label is not None for label in found)
    headers = [[] if label is None else header(*label) for label in found] if has_labels else None
    return EncodedClaims(keys, values, headers), errors
