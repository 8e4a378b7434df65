"""Synthea's CSV export reduced to the five tables the converter reads, in a stable form.

Synthea simulates patients on a thread pool and appends each patient's rows as the patient
finishes, so the row order of its CSV files changes from run to run; claims_transactions.csv
also numbers charges (``CHARGEID``, and the transaction ``ID`` derived from it) with a counter
shared by all threads. The values are otherwise the same for the same arguments. The
normalised tables keep only the columns we read, sort the rows by their keys, and replace the
global charge counter by the line's position within its claim (the counter's order within one
claim is stable), so the same arguments give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd

DIAGNOSIS_COLUMNS: Final = tuple(f"DIAGNOSIS{i}" for i in range(1, 9))

# Synthea file -> (columns read, sort keys). Column names as Synthea 3.3.0 writes them.
RAW_COLUMNS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "patients.csv": (("Id", "BIRTHDATE", "DEATHDATE", "GENDER"), ("Id",)),
    "providers.csv": (("Id", "SPECIALITY"), ("Id",)),
    "encounters.csv": (("Id", "ENCOUNTERCLASS"), ("Id",)),
    "claims.csv": (("Id", "PATIENTID", "PROVIDERID", "APPOINTMENTID", "SERVICEDATE",
                    *DIAGNOSIS_COLUMNS), ("Id",)),
}
TRANSACTIONS: Final = "claims_transactions.csv"
TRANSACTION_COLUMNS: Final = ("CLAIMID", "CHARGEID", "TYPE", "PROCEDURECODE", "UNITS", "AMOUNT")
LINES: Final = "claim_lines.csv"
LINE_COLUMNS: Final = ("CLAIMID", "LINE", "PROCEDURECODE", "UNITS", "AMOUNT")
SYNTHEA_FILES: Final = (*RAW_COLUMNS, TRANSACTIONS)


@dataclass(frozen=True)
class SyntheaTables:
    """The normalised tables; every cell is the string Synthea wrote ("" when empty)."""

    patients: pd.DataFrame
    providers: pd.DataFrame
    encounters: pd.DataFrame
    claims: pd.DataFrame
    lines: pd.DataFrame


def read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Selected columns as strings; a missing column is a clear error, not a KeyError later."""
    header = pd.read_csv(path, nrows=0).columns
    missing = [column for column in columns if column not in header]
    if missing:
        raise ValueError(f"{path.name} has no column(s) {', '.join(missing)}; "
                         f"is it Synthea 3.3.0's CSV export?")
    frame = pd.read_csv(path, usecols=list(columns), dtype=str, keep_default_na=False)
    return frame[list(columns)]


def charge_lines(transactions: pd.DataFrame) -> pd.DataFrame:
    """CHARGE transactions only, numbered 0.. within their claim in Synthea's charge order."""
    charges = transactions[transactions["TYPE"] == "CHARGE"].copy()
    charges["order"] = pd.to_numeric(charges["CHARGEID"], errors="raise")
    charges = charges.sort_values(["CLAIMID", "order"], kind="stable")
    charges["LINE"] = charges.groupby("CLAIMID").cumcount().astype(str)
    return charges[list(LINE_COLUMNS)]


def normalise(raw_dir: Path, out_dir: Path) -> None:
    """Write the stable tables of Synthea's CSV folder ``raw_dir`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (columns, keys) in RAW_COLUMNS.items():
        frame = read_csv(raw_dir / name, columns).sort_values(list(keys), kind="stable")
        _write(frame, out_dir / name)
    lines = charge_lines(read_csv(raw_dir / TRANSACTIONS, TRANSACTION_COLUMNS))
    _write(lines, out_dir / LINES)


def _write(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, lineterminator="\n")


def read_tables(folder: Path) -> SyntheaTables:
    """The normalised tables written by :func:`normalise`."""
    frames = {name: read_csv(folder / name, columns)
              for name, (columns, _) in RAW_COLUMNS.items()}
    return SyntheaTables(
        patients=frames["patients.csv"],
        providers=frames["providers.csv"],
        encounters=frames["encounters.csv"],
        claims=frames["claims.csv"],
        lines=read_csv(folder / LINES, LINE_COLUMNS),
    )
