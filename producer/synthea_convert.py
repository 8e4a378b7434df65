"""Synthea's claims as v2 claims (JSON-ready dicts): a pure function of the tables and a seed.

One Synthea claim (claims.csv) becomes one ``ClaimV2``: member = ``PATIENTID``, provider =
``PROVIDERID`` with its ``SPECIALITY``, place of service = the class of the claim's encounter
(``APPOINTMENTID``), age and sex from patients.csv, diagnosis codes ``DIAGNOSIS1``-``8``, and
one line per CHARGE transaction. Rules (docs/producer.md, "Synthea profile"):

- a line's charge is its ``AMOUNT`` to the cent; lines charging nothing (Synthea bills some
  assessments at 0.00) are left out and counted;
- a line's units are ``UNITS`` rounded up to whole units (a partly used unit is billed as one),
  at least 1 (a charged line is one service even when Synthea says 0), at most 1,000;
- claims that still cannot be valid (no charge at all, more than 100 lines, unknown patient,
  age outside 0-120, anything ``ClaimV2`` rejects) are dropped and counted by reason;
- ``submitted_at`` is the service time plus a seeded delay, drawn once per claim in claim-id
  order before any filtering, so a claim's delay does not depend on ``since``.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

import numpy as np
import orjson
import pandas as pd

from producer.synthea_tables import DIAGNOSIS_COLUMNS, SyntheaTables
from schemas.claim_v2 import MAX_DIAGNOSES, MAX_LINES, ClaimV2
from schemas.common import ContractError

logger = logging.getLogger(__name__)

CODE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,19}$")  # schemas.claim_v2.Code
MAX_UNITS: Final = 1000
MAX_CHARGE: Final = 10_000_000.0
MAX_AGE: Final = 120
# Submission delay: at least an hour, then a gamma tail (median ~2.4 days, a few take weeks).
MIN_DELAY_MINUTES: Final = 60
DELAY_SHAPE: Final = 2.0
DELAY_SCALE_MINUTES: Final = 36 * 60
TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.000Z"

Row = Mapping[Hashable, Any]  # one claims.csv record, with the columns dated_claims adds


@dataclass
class Conversion:
    """The valid claims (sorted by submitted_at, then claim_id) and what was changed on the way.

    ``dropped`` counts claims left out, by reason; ``adjusted`` counts lines left out or
    changed (zero charges, rounded units) and diagnosis codes left out.
    """

    claims: list[dict[str, Any]]
    dropped: Counter[str] = field(default_factory=Counter)
    adjusted: Counter[str] = field(default_factory=Counter)


def billing_units(text: str, adjusted: Counter[str]) -> int:
    """Synthea's UNITS as whole billing units in 1..1000 (see the module docstring)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        adjusted["line units missing or not positive: billed as 1"] += 1
        return 1
    units = math.ceil(round(value, 6))  # 2.0000001 stays 2: float noise is not a new unit
    if units != value:
        adjusted["line units fractional: rounded up"] += 1
    if units > MAX_UNITS:
        adjusted["line units above 1000: capped"] += 1
        return MAX_UNITS
    return units


def claim_line(code: str, units: str, amount: str,
               adjusted: Counter[str]) -> dict[str, Any] | None:
    """One CHARGE transaction as a claim line, or None (counted) when it bills nothing usable."""
    try:
        charge = round(float(amount), 2)
    except ValueError:
        charge = math.nan
    if not math.isfinite(charge) or charge <= 0:
        adjusted["line left out: zero charge"] += 1
        return None
    if charge > MAX_CHARGE:
        adjusted["line left out: charge above 10,000,000"] += 1
        return None
    if not CODE.match(code):
        adjusted["line left out: invalid procedure code"] += 1
        return None
    return {"procedure_code": code, "units": billing_units(units, adjusted), "charge": charge}


def lines_by_claim(lines: pd.DataFrame, claim_ids: Iterable[str],
                   adjusted: Counter[str]) -> dict[str, list[dict[str, Any]]]:
    """Usable lines of the given claims, in Synthea's order (the ``LINE`` column)."""
    wanted = lines[lines["CLAIMID"].isin(set(claim_ids))].copy()
    wanted["position"] = wanted["LINE"].astype(int)
    wanted = wanted.sort_values(["CLAIMID", "position"], kind="stable")
    result: dict[str, list[dict[str, Any]]] = {}
    for claim_id, code, units, amount in zip(wanted["CLAIMID"], wanted["PROCEDURECODE"],
                                             wanted["UNITS"], wanted["AMOUNT"], strict=True):
        line = claim_line(code, units, amount, adjusted)
        result.setdefault(claim_id, [])
        if line is not None:
            result[claim_id].append(line)
    return result


def diagnosis_codes(row: Row, adjusted: Counter[str]) -> list[str]:
    """Non-empty DIAGNOSIS1-8 in order, each once; invalid codes left out and counted."""
    codes: list[str] = []
    for column in DIAGNOSIS_COLUMNS:
        code = row[column]
        if not code or code in codes:
            continue
        if CODE.match(code):
            codes.append(code)
        else:
            adjusted["diagnosis code left out: invalid"] += 1
    return codes[:MAX_DIAGNOSES]


def age_at(birth: date, day: date) -> int:
    """Whole years between birth and day (a birthday counts from its own day)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def sex_of(gender: str) -> str:
    return gender if gender in ("F", "M") else "U"


def submission_delays(count: int, rng: np.random.Generator) -> np.ndarray:
    """Minutes between service and submission, one per claim."""
    tail = rng.gamma(DELAY_SHAPE, DELAY_SCALE_MINUTES, size=count)
    return MIN_DELAY_MINUTES + np.floor(tail).astype(np.int64)


def dated_claims(claims: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Claims in claim-id order with ``service_at``, ``service_day`` and ``submitted``."""
    frame = claims.sort_values("Id", kind="stable").reset_index(drop=True)
    frame["service_at"] = pd.to_datetime(frame["SERVICEDATE"], utc=True, format="ISO8601")
    frame["service_day"] = frame["service_at"].dt.date
    delays = pd.to_timedelta(submission_delays(len(frame), rng), unit="min")
    frame["submitted"] = (frame["service_at"] + delays).dt.strftime(TIMESTAMP_FORMAT)
    return frame


@dataclass(frozen=True)
class Lookups:
    """Per-id facts the claims refer to."""

    births: dict[str, date]
    sexes: dict[str, str]
    specialties: dict[str, str]
    encounter_classes: dict[str, str]

    @classmethod
    def of(cls, tables: SyntheaTables) -> Lookups:
        patients = tables.patients
        births = {pid: date.fromisoformat(day)
                  for pid, day in zip(patients["Id"], patients["BIRTHDATE"], strict=True)}
        return cls(
            births=births,
            sexes=dict(zip(patients["Id"], patients["GENDER"].map(sex_of), strict=True)),
            specialties=_non_empty(tables.providers["Id"], tables.providers["SPECIALITY"]),
            encounter_classes=_non_empty(tables.encounters["Id"],
                                         tables.encounters["ENCOUNTERCLASS"]),
        )


def _non_empty(keys: pd.Series, values: pd.Series) -> dict[str, str]:
    return {key: value.strip() for key, value in zip(keys, values, strict=True) if value.strip()}


def build_claim(row: Row, lines: list[dict[str, Any]], lookups: Lookups,
                adjusted: Counter[str]) -> dict[str, Any] | str:
    """One v2 claim dict, or the reason it cannot be one."""
    if not lines:
        return "no charge lines" if row["raw_lines"] == 0 else "only zero charges"
    if len(lines) > MAX_LINES:
        return f"more than {MAX_LINES} lines"
    birth = lookups.births.get(row["PATIENTID"])
    if birth is None:
        return "unknown patient"
    age = age_at(birth, row["service_day"])
    if not 0 <= age <= MAX_AGE:
        return f"age outside 0-{MAX_AGE}"
    return {
        "schema_version": 2,
        "claim_id": row["Id"],
        "member_id": row["PATIENTID"],
        "provider_id": row["PROVIDERID"],
        "provider_specialty": lookups.specialties.get(row["PROVIDERID"]),
        "place_of_service": lookups.encounter_classes.get(row["APPOINTMENTID"]),
        "patient_age": age,
        "patient_sex": lookups.sexes[row["PATIENTID"]],
        "service_date": row["service_day"].isoformat(),
        "submitted_at": row["submitted"],
        "diagnosis_codes": diagnosis_codes(row, adjusted),
        "lines": lines,
        "claim_amount": round(math.fsum(line["charge"] for line in lines), 2),
        "num_services": sum(line["units"] for line in lines),
    }


def contract_problem(claim: dict[str, Any]) -> str | None:
    """None when the claim is a valid ``ClaimV2``, else the failing field paths."""
    try:
        ClaimV2.from_json(orjson.dumps(claim))
    except ContractError as exc:
        return "invalid " + ", ".join(sorted(exc.paths()))
    return None


def convert(tables: SyntheaTables, *, since: date, rng: np.random.Generator) -> Conversion:
    """Valid v2 claims with service date >= ``since``, sorted by submitted_at then claim_id."""
    frame = dated_claims(tables.claims, rng)
    frame = frame[frame["service_day"] >= since]
    result = Conversion(claims=[])
    lines = lines_by_claim(tables.lines, frame["Id"], result.adjusted)
    raw_counts = tables.lines["CLAIMID"].value_counts()
    frame = frame.assign(raw_lines=frame["Id"].map(raw_counts).fillna(0).astype(int))
    lookups = Lookups.of(tables)
    for row in frame.to_dict("records"):
        built = build_claim(row, lines.get(row["Id"], []), lookups, result.adjusted)
        if isinstance(built, str):
            _drop(result, row["Id"], built)
        elif (problem := contract_problem(built)) is not None:
            _drop(result, row["Id"], problem)
        else:
            result.claims.append(built)
    result.claims.sort(key=lambda claim: (claim["submitted_at"], claim["claim_id"]))
    return result


def _drop(result: Conversion, claim_id: str, reason: str) -> None:
    logger.debug("dropped Synthea claim %s: %s", claim_id, reason)
    result.dropped[reason] += 1


def describe(conversion: Conversion) -> str:
    """One line: kept, dropped by reason, adjusted by kind."""
    def counts(counter: Counter[str]) -> str:
        return ", ".join(f"{reason} {count:,}" for reason, count in sorted(counter.items()))
    text = f"{len(conversion.claims):,} claims"
    if conversion.dropped:
        text += f"; dropped {sum(conversion.dropped.values()):,} ({counts(conversion.dropped)})"
    if conversion.adjusted:
        text += f"; adjusted: {counts(conversion.adjusted)}"
    return text
