"""Load and validate a training file of JSON Lines claims (one claim per line, any version).

Each line is a claim in its contract (``schemas.parse_claim``: ``schema_version`` picks it,
absent means 1), plus two optional label keys that are removed before the contract sees the
line: ``is_anomaly`` (a JSON bool) and ``pattern`` (a string, empty = normal). A file holds
one claim version: its feature set (``features.sets``) follows from that version. Every
problem is a :class:`trainer.data.DataError` naming the line and the field path; nothing is
dropped silently (unlike the CSV path, a JSON line outside the contract is an error, since
the contract is what the producer promised).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from features.sets import (
    FeatureSet,
    FeatureSetError,
    feature_set,
    for_claim_version,
    mismatch_message,
)
from schemas import Claim, ClaimV2, ContractError, parse_claim
from trainer.data import LABEL_COLUMN, PATTERN_COLUMN, DataError, Dataset, file_digest

log = logging.getLogger(__name__)

JSONL_SUFFIXES: Final = frozenset({".jsonl", ".ndjson"})


@dataclass
class _Rows:
    """What the lines held so far (labels None until a line carries one)."""

    claims: list[Claim | ClaimV2] = field(default_factory=list)
    labels: list[bool | None] = field(default_factory=list)
    patterns: list[str | None] = field(default_factory=list)
    first_version: tuple[int, int] | None = None  # (schema_version, line)


def is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in JSONL_SUFFIXES


def load_jsonl(path: Path, feature_set_name: str | None = None) -> Dataset:
    """Read and validate ``path``; raises :class:`DataError` on any problem. The feature set
    defaults to the claims' version's (``features.sets.DEFAULT_FOR_VERSION``)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    dataset = validate_lines(path.read_bytes().splitlines(), str(path), file_digest(path),
                             feature_set_name)
    log.info("loaded %s: %d claims (feature set %s), sha256 %s", path, dataset.rows,
             dataset.feature_set, dataset.sha256[:12])
    return dataset


def validate_lines(lines: list[bytes], source: str, sha256: str,
                   feature_set_name: str | None = None) -> Dataset:
    """The pure core of :func:`load_jsonl`."""
    rows = _Rows()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            _add_line(rows, line, number, source)
    if not rows.claims:
        raise DataError(f"{source}: no claim lines (the file is empty)")
    assert rows.first_version is not None
    features = _chosen_set(rows.first_version[0], feature_set_name, source)
    return Dataset(
        # A stateful set's columns need the code references of the training split first.
        features=(np.empty((len(rows.claims), 0)) if features.stateful
                  else features.matrix(rows.claims)),
        claims=rows.claims,
        labels=_labels(rows, source),
        patterns=_patterns(rows),
        sha256=sha256,
        rows_read=len(rows.claims),
        rows_dropped=0,
        feature_set=features.name,
    )


def _chosen_set(version: int, name: str | None, source: str) -> FeatureSet:
    try:
        chosen = for_claim_version(version) if name is None else feature_set(name)
    except FeatureSetError as exc:
        raise DataError(f"{source}: {exc}") from exc
    if chosen.claim_version != version:
        raise DataError(f"{source}: {mismatch_message(chosen, version)}")
    return chosen


def _add_line(rows: _Rows, line: bytes, number: int, source: str) -> None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{source}: line {number} is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{source}: line {number} is not a JSON object")
    label, pattern = _pop_labels(obj, number, source)
    try:
        claim = parse_claim(orjson.dumps(obj))
    except ContractError as exc:
        raise DataError(f"{source}: line {number}: {exc}") from exc
    if rows.first_version is None:
        rows.first_version = (claim.schema_version, number)
    elif claim.schema_version != rows.first_version[0]:
        version, first = rows.first_version
        raise DataError(
            f"{source}: line {number} is a schema_version {claim.schema_version} claim, line "
            f"{first} is schema_version {version}; a training file holds one claim version"
        )
    rows.claims.append(claim)
    rows.labels.append(label)
    rows.patterns.append(pattern)


def _pop_labels(obj: dict[str, Any], number: int, source: str) -> tuple[bool | None, str | None]:
    """Remove the label keys (evaluation only, never features) and check their types."""
    label = obj.pop(LABEL_COLUMN, None)
    pattern = obj.pop(PATTERN_COLUMN, None)
    if label is not None and not isinstance(label, bool):
        raise DataError(f"{source}: line {number}: {LABEL_COLUMN} must be true or false, "
                        f"not {label!r}")
    if pattern is not None and not isinstance(pattern, str):
        raise DataError(f"{source}: line {number}: {PATTERN_COLUMN} must be a string, "
                        f"not {pattern!r}")
    if label is None and pattern is not None:
        label = pattern.strip() != ""  # a pattern names the kind of fraud: labelled too
    return label, pattern


def _labels(rows: _Rows, source: str) -> np.ndarray | None:
    known = [label is not None for label in rows.labels]
    if not any(known):
        return None
    if not all(known):
        line = known.index(False) + 1
        raise DataError(f"{source}: some claims carry {LABEL_COLUMN}/{PATTERN_COLUMN} and "
                        f"claim {line} does not; label every claim or none")
    return np.asarray(rows.labels, dtype=bool)


def _patterns(rows: _Rows) -> np.ndarray | None:
    if all(pattern is None for pattern in rows.patterns):
        return None
    return np.asarray([(p or "").strip() for p in rows.patterns], dtype=object)
