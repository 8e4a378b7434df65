"""Claims CSV files: fast deterministic writing, and reading that keeps every bad row's line.

Files have a header row and the columns of :data:`producer.columns.ALL_COLUMNS`. Floats are
written in their shortest round-trip form, ``submitted_at`` as ISO 8601 with a ``Z`` zone,
labels as ``true``/``false`` and the pattern name (empty for normal claims).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from producer.columns import ALL_COLUMNS, CLAIM_COLUMNS, LABEL_COLUMNS
from producer.errors import InputError, RowError
from producer.timestamps import format_times

WRITE_CHUNK_ROWS: Final = 100_000
REQUIRED_COLUMNS: Final = tuple(c for c in CLAIM_COLUMNS if c != "submitted_at")
INT_COLUMNS: Final = ("num_services", "patient_age", "provider_id", "days_since_last_claim")
TRUE_WORDS: Final = frozenset({"true", "1", "yes"})
FALSE_WORDS: Final = frozenset({"false", "0", "no"})

Progress = Callable[[int], None]  # called with the number of rows just handled


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The frame as an Arrow table ready for CSV: timestamps become ISO strings."""
    columns = {}
    for name in (c for c in ALL_COLUMNS if c in frame.columns):
        values = frame[name]
        is_time = isinstance(values.dtype, pd.DatetimeTZDtype)
        columns[name] = format_times(values) if is_time else pa.array(values)
    return pa.Table.from_pydict(columns)


def write_claims_csv(frame: pd.DataFrame, path: Path, progress: Progress | None = None) -> None:
    """Write ``frame`` to ``path`` atomically (a crash never leaves half a file behind).

    Arrow's CSV writer is used because ``DataFrame.to_csv`` needs ~6 s per million rows.
    """
    table = to_arrow(frame)
    options = pa_csv.WriteOptions(quoting_style="none", quoting_header="none")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as sink, pa_csv.CSVWriter(
            sink, table.schema, write_options=options
        ) as w:
            for start in range(0, table.num_rows, WRITE_CHUNK_ROWS):
                chunk = table.slice(start, WRITE_CHUNK_ROWS)
                w.write_table(chunk)
                if progress:
                    progress(chunk.num_rows)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@dataclass
class CsvClaims:
    """Rows read from a claims CSV: the good ones as typed columns, the bad ones as errors.

    ``frame`` holds the claim columns present in the file (``submitted_at`` as the original
    strings) and the label columns if the file has them; ``lines[i]`` is the physical line
    of ``frame`` row ``i``.
    """

    frame: pd.DataFrame
    lines: np.ndarray
    errors: list[RowError] = field(default_factory=list)

    @property
    def has_labels(self) -> bool:
        return all(c in self.frame.columns for c in LABEL_COLUMNS)


def check_header(header: list[str], path: Path) -> None:
    if not header:
        raise InputError(f"{path}: empty file (expected a header row)")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in ALL_COLUMNS]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    if duplicated:
        problems.append(f"duplicated column(s) {', '.join(duplicated)}")
    if problems:
        raise InputError(
            f"{path}: not a claims CSV: {'; '.join(problems)} "
            f"(expected columns: {', '.join(ALL_COLUMNS)}; submitted_at and labels optional)"
        )


def read_claims_csv(path: Path) -> CsvClaims:
    """Read a claims CSV; rows that cannot become claims are kept as :class:`RowError`."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    # Without quotes or carriage returns every record is one physical line, so Arrow can
    # parse the file while numpy finds each row's line; otherwise the csv module does both.
    simple = b'"' not in data and b"\r" not in data
    _header, raw, lines, errors = (read_simple if simple else read_general)(path, data)
    return convert_columns(raw, lines, errors)


RawRows = tuple[list[str], pd.DataFrame, np.ndarray, list[RowError]]


def read_general(path: Path, data: bytes) -> RawRows:
    rows = records(path)
    first = next(rows, None)
    header = [] if first is None else first[1]
    check_header(header, path)
    columns: list[list[str]] = [[] for _ in header]
    lines: list[int] = []
    errors: list[RowError] = []
    for line, fields in rows:
        if len(fields) != len(header):
            errors.append(field_count_error(line, len(header), len(fields)))
            continue
        lines.append(line)
        for values, value in zip(columns, fields, strict=True):
            values.append(value)
    raw = pd.DataFrame(dict(zip(header, columns, strict=True)), dtype=str)
    return header, raw, np.asarray(lines, dtype=np.int64), errors


def records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first physical line, fields) per CSV record; blank lines are not records."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            previous_end = 0
            for fields in reader:
                start, previous_end = previous_end + 1, reader.line_num
                if fields:
                    yield start, fields
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV: {exc}") from exc


def read_simple(path: Path, data: bytes) -> RawRows:
    body = data.removeprefix(b"\xef\xbb\xbf")
    buf = np.frombuffer(body, dtype=np.uint8)
    ends = np.append(np.flatnonzero(buf == ord("\n")), len(buf))
    starts = np.concatenate(([0], ends[:-1] + 1))
    numbers = np.flatnonzero(ends > starts) + 1  # physical lines that are not blank
    if len(numbers) == 0:
        raise InputError(f"{path}: empty file (expected a header row)")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    first = int(numbers[0]) - 1
    header = body[starts[first] : ends[first]].decode("utf-8").split(",")
    check_header(header, path)
    comma_line = np.searchsorted(ends, np.flatnonzero(buf == ord(",")))
    fields = np.bincount(comma_line, minlength=len(ends))[numbers[1:] - 1] + 1
    good = fields == len(header)
    errors = [field_count_error(int(line), len(header), int(found))
              for line, found in zip(numbers[1:][~good], fields[~good], strict=True)]
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(body),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=lambda _: "skip"),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: unreadable CSV: {exc}") from exc
    raw = pd.DataFrame({name: pd.Series(pd.array(table.column(i), dtype="str"))
                        for i, name in enumerate(header)})
    return header, raw, numbers[1:][good], errors


def field_count_error(line: int, expected: int, found: int) -> RowError:
    return RowError(f"line {line}", f"expected {expected} fields, found {found}")


def convert_columns(raw: pd.DataFrame, lines: np.ndarray, errors: list[RowError]) -> CsvClaims:
    """Type the string columns; a row with any unconvertible value becomes a RowError."""
    typed: dict[str, pd.Series] = {}
    problems = pd.Series("", index=raw.index, dtype=str)
    for name in raw.columns:
        values, bad, what = convert_column(name, raw[name])
        typed[name] = values
        if bad.any():
            problems[bad] += f"{name}: " + raw.loc[bad, name].map(repr) + f" is not {what}; "
    bad_rows = problems != ""
    claim_ids: list[str] = raw["claim_id"].tolist()
    messages: list[str] = problems.tolist()
    for index in np.flatnonzero(bad_rows.to_numpy()).tolist():
        errors.append(RowError(f"line {lines[index]}", messages[index].rstrip("; "),
                               claim_ids[index] or None))
    errors.sort(key=lambda e: int(e.location.split()[1]))
    keep = ~bad_rows.to_numpy()
    frame = pd.DataFrame({name: values[keep] for name, values in typed.items()})
    return CsvClaims(frame.reset_index(drop=True), lines[keep], errors)


def convert_column(name: str, values: pd.Series) -> tuple[pd.Series, pd.Series, str]:
    """(converted values, mask of unconvertible ones, what was expected)."""
    if name in INT_COLUMNS:
        number = parse_numbers(values, pa.int64())
        bad = number.isna() | ~np.isfinite(number) | (number % 1 != 0) | (number.abs() > 2**53)
        return number.where(~bad, 0).astype(np.int64), bad, "an integer"
    if name == "claim_amount":
        number = parse_numbers(values, pa.float64()).astype(np.float64)
        return number, number.isna() | ~np.isfinite(number), "a finite number"
    if name == "is_anomaly":
        word = values.str.strip().str.lower()
        truth, falsehood = word.isin(TRUE_WORDS), word.isin(FALSE_WORDS)
        return truth, ~(truth | falsehood), "true or false"
    return values, pd.Series(False, index=values.index), ""


def parse_numbers(values: pd.Series, target: pa.DataType) -> pd.Series:
    """Numbers from strings, NaN where a string is not one. Arrow's cast is ~10x faster than
    ``pd.to_numeric`` but all-or-nothing, so pandas only runs when some value is odd."""
    try:
        parsed = pc.cast(pa.array(values), target).to_numpy(zero_copy_only=False)
        return pd.Series(parsed, index=values.index)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pd.to_numeric(values.str.strip(), errors="coerce")


def read_claims_frame(path: Path) -> pd.DataFrame:
    """A claims CSV as a typed frame (``submitted_at`` as UTC datetimes); raises
    :class:`InputError` naming the bad lines if any row is invalid."""
    claims = read_claims_csv(path)
    if claims.errors:
        shown = "; ".join(str(e) for e in claims.errors[:10])
        more = f" (and {len(claims.errors) - 10} more)" if len(claims.errors) > 10 else ""
        raise InputError(f"{path}: {len(claims.errors)} bad row(s): {shown}{more}")
    frame = claims.frame
    if "submitted_at" in frame.columns:
        times = pd.to_datetime(frame["submitted_at"], utc=True, format="ISO8601")
        frame["submitted_at"] = times.astype("datetime64[ms, UTC]")
    return frame
