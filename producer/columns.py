"""Column names of generated claim frames and CSV files."""

from __future__ import annotations

from typing import Final

from schemas import CLAIM_FEATURES

# The lab's column order first, then the timestamp the contract needs, then the labels.
CLAIM_COLUMNS: Final = ("claim_id", *CLAIM_FEATURES, "submitted_at")
LABEL_COLUMNS: Final = ("is_anomaly", "pattern")
ALL_COLUMNS: Final = (*CLAIM_COLUMNS, *LABEL_COLUMNS)

NORMAL_PATTERN: Final = ""  # the ``pattern`` label of a normal claim
