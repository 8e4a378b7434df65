"""Deterministic ``submitted_at`` values: a fixed base time plus seeded offsets.

A wall-clock base would make every generated file different; a fixed base keeps files
byte-identical for the same arguments while still looking like a stream of submissions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

BASE_TIME: Final = datetime(2025, 1, 1, tzinfo=UTC)
SPAN_MS: Final = 90 * 24 * 3600 * 1000  # submissions spread over 90 days
ISO_WIDTH: Final = len("2025-01-01T00:00:00.000Z")


def submission_times(n: int, rng: np.random.Generator) -> pd.Series:
    """``n`` ascending UTC timestamps (millisecond resolution) in ``[BASE_TIME, +90 days)``."""
    offsets = np.sort(rng.integers(0, SPAN_MS, size=n, dtype=np.int64))
    base = np.datetime64(BASE_TIME.replace(tzinfo=None), "ms")
    times: pd.Series = pd.Series(base + offsets.astype("timedelta64[ms]")).dt.tz_localize("UTC")
    return times


def format_times(times: pd.Series) -> pa.Array:
    """ISO 8601 strings with a ``Z`` zone, e.g. ``2025-01-01T00:00:00.123Z``.

    Built as a byte matrix: ``numpy.datetime_as_string`` needs ~0.5 s per million values.
    """
    ms = times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    return format_ms(ms.astype("datetime64[ms]").astype(np.int64))


def format_ms(ms: np.ndarray) -> pa.Array:
    """:func:`format_times` for milliseconds since the epoch (UTC)."""
    day, time_of_day = np.divmod(ms, 86_400_000)
    days, day_index = np.unique(day, return_inverse=True)
    dates = np.datetime_as_string(days.astype("datetime64[D]"), unit="D")
    if any(len(d) != 10 for d in dates):  # years outside 1000..9999 have another width
        return pa.array(np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms",
                                              timezone="UTC"))
    out = np.empty((len(ms), ISO_WIDTH), dtype=np.uint8)
    out[:, :10] = dates.astype("S10").view(np.uint8).reshape(-1, 10)[day_index]
    hours, rest = np.divmod(time_of_day, 3_600_000)
    minutes, rest = np.divmod(rest, 60_000)
    seconds, millis = np.divmod(rest, 1000)
    for column, value, width in ((11, hours, 2), (14, minutes, 2), (17, seconds, 2),
                                 (20, millis, 3)):
        for k in range(width):
            out[:, column + k] = ord("0") + (value // 10 ** (width - 1 - k)) % 10
    for column, char in ((10, "T"), (13, ":"), (16, ":"), (19, "."), (23, "Z")):
        out[:, column] = ord(char)
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(ISO_WIDTH), len(ms), [None, pa.py_buffer(out)]
    )
    return pc.cast(pc.cast(fixed, pa.binary()), pa.string())
