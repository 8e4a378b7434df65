"""Deterministic ``submitted_at`` values: a fixed base time plus seeded offsets.

A wall-clock base would make every generated file different; a fixed base keeps files
byte-identical for the same arguments while still looking like a stream of submissions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import numpy as np
import pandas as pd

BASE_TIME: Final = datetime(2025, 1, 1, tzinfo=UTC)
SPAN_MS: Final = 90 * 24 * 3600 * 1000  # submissions spread over 90 days


def submission_times(n: int, rng: np.random.Generator) -> pd.Series:
    """``n`` ascending UTC timestamps (millisecond resolution) in ``[BASE_TIME, +90 days)``."""
    offsets = np.sort(rng.integers(0, SPAN_MS, size=n, dtype=np.int64))
    base = np.datetime64(BASE_TIME.replace(tzinfo=None), "ms")
    times: pd.Series = pd.Series(base + offsets.astype("timedelta64[ms]")).dt.tz_localize("UTC")
    return times


def format_times(times: pd.Series) -> np.ndarray:
    """ISO 8601 strings with a ``Z`` zone, e.g. ``2025-01-01T00:00:00.123Z`` (vectorised)."""
    naive = times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ms]")
    return np.char.add(np.datetime_as_string(naive, unit="ms"), "Z")
