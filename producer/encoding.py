"""Claims frame -> Kafka records: key = claim_id, value = Claim JSON, labels as headers.

The JSON of a whole frame is built column-wise in Arrow (Python-level serialisation of each
claim would dominate the producer's time), then every value is validated by the ``Claim``
contract's own JSON validator: what is sent is exactly what consumers will accept. Rows that
fail become :class:`RowError` with their location; nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from producer.columns import CLAIM_COLUMNS, LABEL_COLUMNS
from producer.errors import RowError
from producer.timestamps import format_times
from schemas import SCHEMA_VERSION, Claim, ContractError

Headers = list[tuple[str, str | bytes | None]]
Progress = Callable[[int], None]

# Strings spliced into JSON without escaping must not contain quotes, backslashes or control
# characters; valid claim ids and timestamps never do. Other rows take the slow, escaping path
# (and then usually fail the contract with a precise message).
SAFE_TEXT: Final = r"^[A-Za-z0-9_.:+ -]*$"
VALIDATE_CHUNK: Final = 50_000
_validate_claim_json = Claim.__pydantic_validator__.validate_json


@dataclass(frozen=True)
class EncodedClaims:
    """Ready-to-send records; ``headers`` is None when the input had no labels."""

    keys: list[bytes]
    values: list[bytes]
    headers: list[Headers] | None

    def __len__(self) -> int:
        return len(self.values)


def text_column(values: pd.Series) -> pa.Array:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return format_times(values)
    return pc.cast(pa.array(values), pa.string())


def claim_json(frame: pd.DataFrame, submitted_at: pa.Array) -> list[bytes]:
    """One Claim JSON document per row (no validation here)."""
    ids = text_column(frame["claim_id"])
    parts: list[str | pa.Array] = [f'{{"schema_version":{SCHEMA_VERSION},"claim_id":"', ids]
    for name in CLAIM_COLUMNS[1:-1]:
        parts += [f'","{name}":' if name == "claim_amount" else f',"{name}":',
                  pc.cast(pa.array(frame[name]), pa.string())]
    parts += [',"submitted_at":"', submitted_at, '"}']
    joined = pc.binary_join_element_wise(*parts, "")
    documents: list[bytes] = pc.cast(joined, pa.binary()).to_pylist()
    unsafe = ~np.asarray(
        pc.and_(pc.match_substring_regex(ids, SAFE_TEXT),
                pc.match_substring_regex(submitted_at, SAFE_TEXT)),
        dtype=bool,
    )
    for index in np.flatnonzero(unsafe):
        documents[index] = escaped_json(frame.iloc[index], str(submitted_at[index]))
    return documents


def escaped_json(row: pd.Series, submitted_at: str) -> bytes:
    document: dict[str, object] = {"schema_version": SCHEMA_VERSION}
    for name in CLAIM_COLUMNS[:-1]:
        value = row[name]
        document[name] = value.item() if isinstance(value, np.generic) else value
    document["claim_id"] = str(document["claim_id"])
    document["submitted_at"] = submitted_at
    return orjson.dumps(document)


def validate(values: list[bytes], progress: Progress | None = None) -> dict[int, str]:
    """Index -> contract error, for every value the Claim contract rejects."""
    failures: dict[int, str] = {}
    for start in range(0, len(values), VALIDATE_CHUNK):
        for index in range(start, min(start + VALIDATE_CHUNK, len(values))):
            try:
                _validate_claim_json(values[index])
            except ValidationError as exc:
                failures[index] = str(ContractError.from_validation_error("Claim", exc))
        if progress:
            progress(min(VALIDATE_CHUNK, len(values) - start))
    return failures


def label_headers(frame: pd.DataFrame) -> list[Headers]:
    """Per row ``[("is_anomaly", b"true"|b"false"), ("pattern", b"<name>")]``; rows with the
    same labels share one list (there are only a handful of distinct ones)."""
    cache: dict[tuple[bool, str], Headers] = {}
    headers = []
    for is_anomaly, pattern in zip(frame["is_anomaly"].tolist(), frame["pattern"].tolist(),
                                   strict=True):
        key = (bool(is_anomaly), str(pattern))
        entry = cache.get(key)
        if entry is None:
            entry = cache[key] = [("is_anomaly", b"true" if key[0] else b"false"),
                                  ("pattern", key[1].encode())]
        headers.append(entry)
    return headers


def encode_claims(
    frame: pd.DataFrame,
    locate: Callable[[int], str],
    *,
    default_submitted_at: str | None = None,
    labels: bool = True,
    progress: Progress | None = None,
) -> tuple[EncodedClaims, list[RowError]]:
    """Encode and validate every row of ``frame``.

    ``locate(i)`` names row ``i`` in error messages (``"line 7"``). ``default_submitted_at``
    (ISO 8601) fills a missing ``submitted_at`` column. Label headers are attached when
    ``labels`` is true and the frame has both label columns.
    """
    if "submitted_at" in frame.columns:
        submitted_at = text_column(frame["submitted_at"])
    elif default_submitted_at is not None:
        submitted_at = pa.array([default_submitted_at] * len(frame), pa.string())
    else:
        raise ValueError("frame has no submitted_at column and no default was given")
    values = claim_json(frame, submitted_at)
    failures = validate(values, progress)
    keys = pc.cast(text_column(frame["claim_id"]), pa.binary()).to_pylist()
    has_labels = labels and all(c in frame.columns for c in LABEL_COLUMNS)
    headers = label_headers(frame) if has_labels else None
    errors = [RowError(locate(i), message, keys[i].decode()) for i, message in failures.items()]
    if failures:
        keep = [i for i in range(len(values)) if i not in failures]
        keys, values = [keys[i] for i in keep], [values[i] for i in keep]
        headers = None if headers is None else [headers[i] for i in keep]
    return EncodedClaims(keys, values, headers), errors
