"""Errors the producer reports: bad rows (kept with their position) and unusable input."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowError:
    """One input row that cannot become a valid ``Claim``.

    ``location`` is ``"line N"`` (physical line of a CSV file, the header is line 1) or
    ``"row N"`` (1-based position in a generated frame).
    """

    location: str
    message: str
    claim_id: str | None = None

    def __str__(self) -> str:
        claim = f" (claim_id {self.claim_id!r})" if self.claim_id else ""
        return f"{self.location}{claim}: {self.message}"


class InputError(ValueError):
    """The input as a whole is unusable (not a claims CSV, missing columns, ...)."""
