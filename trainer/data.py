"""Load and validate a training CSV, completely, before anything is trained or logged.

Required columns: the five model features (:data:`schemas.CLAIM_FEATURES`). Optional:
``claim_id``, ``submitted_at`` and the labels ``is_anomaly`` / ``pattern`` (evaluation only;
labels never become features). Every problem is a :class:`DataError` naming the column and,
where there is one, the CSV line.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from schemas import CLAIM_FEATURES

log = logging.getLogger(__name__)

LABEL_COLUMN: Final = "is_anomaly"
PATTERN_COLUMN: Final = "pattern"
# Whole-number features of the Claim contract, with its ranges (inclusive); claim_amount is
# a float with 0 < amount <= 10M. Rows outside these ranges could never arrive as a Claim, so
# training on them would teach the model about impossible data.
INTEGER_FEATURES: Final = {
    "num_services": (1, 1000),
    "patient_age": (0, 120),
    "provider_id": (1, 1_000_000_000),
    "days_since_last_claim": (0, 36_500),
}
AMOUNT_RANGE: Final = (0.0, 10_000_000.0)  # exclusive lower bound, inclusive upper
_TRUE: Final = frozenset({"true", "1", "yes", "t", "y"})
_FALSE: Final = frozenset({"false", "0", "no", "f", "n"})
_HEADER_LINES: Final = 1


class DataError(ValueError):
    """The training data cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Dataset:
    """Validated training data: features in the order of its feature set, optional labels."""

    features: np.ndarray  # (rows, features of the set) float64
    labels: np.ndarray | None  # (rows,) bool, when the file has ``is_anomaly``
    patterns: np.ndarray | None  # (rows,) str ("" for normal claims), when it has ``pattern``
    sha256: str  # digest of the file's bytes
    rows_read: int
    rows_dropped: int  # rows outside the Claim contract's ranges
    # features.sets: which columns ``features`` holds. CSV files are always v1.
    feature_set: str = "v1"
    # The validated claims in file (stream) order: a stateful feature set computes its
    # columns from them at training time (``features`` is empty until then).
    claims: list[Any] | None = None

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_csv(path: Path) -> Dataset:
    """Read and validate ``path``; raises :class:`DataError` on any problem."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        # keep_default_na=False: an empty pattern means "normal", and an empty or "NaN"
        # feature cell is reported as what it is rather than silently becoming NaN.
        frame = pd.read_csv(path, dtype={PATTERN_COLUMN: str}, keep_default_na=False,
                            low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty (expected a header and claim rows)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from exc
    dataset = validate_frame(frame, source=str(path), sha256=file_digest(path))
    log.info("loaded %s: %d rows (%d dropped), sha256 %s", path, dataset.rows,
             dataset.rows_dropped, dataset.sha256[:12])
    return dataset


def validate_frame(frame: pd.DataFrame, source: str, sha256: str) -> Dataset:
    """The pure core of :func:`load_csv`: check columns, types and values; filter ranges."""
    missing = [c for c in CLAIM_FEATURES if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}; "
                        f"need {', '.join(CLAIM_FEATURES)}")
    if frame.empty:
        raise DataError(f"{source}: no claim rows (only a header)")
    features = np.column_stack([numeric_column(frame, name, source) for name in CLAIM_FEATURES])
    patterns = pattern_column(frame) if PATTERN_COLUMN in frame.columns else None
    labels: np.ndarray | None
    if LABEL_COLUMN in frame.columns:
        labels = label_column(frame, source)
    else:
        # A pattern names the kind of fraud, so a file with patterns alone is labelled too.
        labels = None if patterns is None else np.asarray(patterns != "", dtype=bool)
    keep = within_contract(features)
    dropped = int((~keep).sum())
    if dropped:
        first = int(np.flatnonzero(~keep)[0])
        log.warning("%s: dropping %d row(s) outside the Claim contract's ranges "
                    "(first at line %d)", source, dropped, csv_line(first))
    if not keep.any():
        raise DataError(f"{source}: no rows left after dropping {dropped} row(s) outside the "
                        "Claim contract's ranges")
    return Dataset(
        features=features[keep],
        labels=None if labels is None else labels[keep],
        patterns=None if patterns is None else patterns[keep],
        sha256=sha256,
        rows_read=len(frame),
        rows_dropped=dropped,
    )


def csv_line(row: int) -> int:
    """1-based line number in the file of data row ``row`` (0-based)."""
    return row + _HEADER_LINES + 1


def numeric_column(frame: pd.DataFrame, name: str, source: str) -> np.ndarray:
    """Column ``name`` as finite float64; whole numbers where the contract wants ints."""
    raw = frame[name]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: column {name} needs finite numbers; line {csv_line(row)} "
                        f"has {str(raw.iloc[row])!r} ({int(bad.sum())} bad value(s) in total)")
    if name in INTEGER_FEATURES:
        fractional = values != np.floor(values)
        if fractional.any():
            row = int(np.flatnonzero(fractional)[0])
            raise DataError(f"{source}: column {name} needs whole numbers; line "
                            f"{csv_line(row)} has {str(raw.iloc[row])!r}")
    return values


def label_column(frame: pd.DataFrame, source: str) -> np.ndarray:
    """``is_anomaly`` as bool; accepts true/false, 1/0, yes/no in any case."""
    text = frame[LABEL_COLUMN].astype(str).str.strip().str.lower()
    truthy = text.isin(_TRUE).to_numpy()
    falsy = text.isin(_FALSE).to_numpy()
    bad = ~(truthy | falsy)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: column {LABEL_COLUMN} needs true/false; line "
                        f"{csv_line(row)} has {str(frame[LABEL_COLUMN].iloc[row])!r}")
    return truthy


def pattern_column(frame: pd.DataFrame) -> np.ndarray:
    """``pattern`` as str; a missing value means a normal claim."""
    return frame[PATTERN_COLUMN].fillna("").astype(str).str.strip().to_numpy(dtype=object)


def within_contract(features: np.ndarray) -> np.ndarray:
    """Rows whose values a ``Claim`` could carry (its ranges, see the module constants)."""
    amount = features[:, CLAIM_FEATURES.index("claim_amount")]
    keep = (amount > AMOUNT_RANGE[0]) & (amount <= AMOUNT_RANGE[1])
    for name, (low, high) in INTEGER_FEATURES.items():
        column = features[:, CLAIM_FEATURES.index(name)]
        keep &= (column >= low) & (column <= high)
    return keep
