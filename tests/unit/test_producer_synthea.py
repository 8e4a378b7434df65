"""The Synthea converter on tiny hand-written CSV exports (no Java): tables, rules, output."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from producer.synthea import DELAY_STREAM, random_stream, write_jsonl
from producer.synthea_cli import PatientProgress
from producer.synthea_convert import Conversion, billing_units, convert
from producer.synthea_run import SyntheaRun
from producer.synthea_settings import SyntheaSettings
from producer.synthea_tables import LINES, normalise, read_tables
from schemas.claim_v2 import ClaimV2

P1, P2, P3 = "pat-1", "pat-2", "pat-old"
DR, LAB = "prov-gp", "prov-lab"

PATIENTS = f"""Id,BIRTHDATE,DEATHDATE,SSN,GENDER,CITY
{P2},1990-06-15,,999-1,M,Boston
{P1},1980-03-01,2024-12-31,999-2,F,Salem
{P3},1890-01-01,,999-3,X,Lowell
"""
PROVIDERS = f"""Id,ORGANIZATION,SPECIALITY
{LAB},org-2,
{DR},org-1,GENERAL PRACTICE
"""
ENCOUNTERS = """Id,START,ENCOUNTERCLASS,CODE
enc-1,2023-03-01T10:00:00Z,ambulatory,185347001
enc-2,2023-06-15T08:30:00Z,wellness,410620009
"""
_DX = ",".join(f"DIAGNOSIS{i}" for i in range(1, 9))
CLAIMS_HEADER = f"Id,PATIENTID,PROVIDERID,{_DX},APPOINTMENTID,SERVICEDATE,STATUS1\n"
LONG_CODE = "123456789012345678"  # SNOMED/RxNorm codes reach 18 digits
GOOD_DX = f"44054006,{LONG_CODE},44054006,,,,,"  # a repeated code is kept once
CLAIMS = CLAIMS_HEADER + f"""c-good,{P1},{DR},{GOOD_DX},enc-1,2023-03-01T10:00:00Z,CLOSED
c-birthday,{P2},{LAB},,,,,,,,,enc-2,2023-06-15T08:30:00Z,CLOSED
c-zero,{P1},{DR},,,,,,,,,enc-1,2023-03-02T10:00:00Z,CLOSED
c-none,{P1},{DR},,,,,,,,,enc-1,2023-03-03T10:00:00Z,CLOSED
c-old,{P3},{DR},{"9" * 21},,,,,,,,,2023-04-01T00:00:00Z,CLOSED
c-2022,{P1},{DR},,,,,,,,,enc-1,2022-12-31T23:59:59Z,CLOSED
c-ghost,nobody,{DR},,,,,,,,,enc-1,2023-05-01T00:00:00Z,CLOSED
"""
TX_HEADER = "ID,CLAIMID,CHARGEID,TYPE,AMOUNT,PROCEDURECODE,UNITS,NOTES\n"
# Charges are listed out of order and with a counter shared by all claims, as Synthea does.
TRANSACTIONS = TX_HEADER + """t9,c-good,17,CHARGE,0.00,710824005,1,assessment billed at zero
t1,c-good,12,CHARGE,85.55,185347001,1,encounter
t2,c-good,13,PAYMENT,68.44,185347001,1,payment
t3,c-good,15,CHARGE,100.10,430193006,2.5,fractional units
t4,c-birthday,3,CHARGE,129.16,410620009,0,zero units
t5,c-birthday,4,CHARGE,0.20,999999,1500,capped units
t6,c-zero,20,CHARGE,0.00,710824005,1,only zero
t7,c-old,30,CHARGE,10.00,185347001,1,too old
t8,c-2022,40,CHARGE,10.00,185347001,1,before since
t10,c-ghost,50,CHARGE,10.00,185347001,1,unknown patient
"""
SINCE = date(2023, 1, 1)


def write_export(folder: Path, transactions: str = TRANSACTIONS, claims: str = CLAIMS) -> Path:
    folder.mkdir(parents=True)
    for name, text in {"patients.csv": PATIENTS, "providers.csv": PROVIDERS,
                       "encounters.csv": ENCOUNTERS, "claims.csv": claims,
                       "claims_transactions.csv": transactions}.items():
        (folder / name).write_text(text)
    return folder


def converted(tmp_path: Path, since: date = SINCE, seed: int = 7) -> Conversion:
    tables = tmp_path / "tables"
    if not tables.exists():
        normalise(write_export(tmp_path / "raw"), tables)
    return convert(read_tables(tables), since=since, rng=random_stream(seed, DELAY_STREAM))


def by_id(conversion: Conversion) -> dict[str, dict[str, Any]]:
    return {claim["claim_id"]: claim for claim in conversion.claims}


def test_a_claim_takes_member_provider_place_codes_and_charge_lines(tmp_path: Path) -> None:
    claim = by_id(converted(tmp_path))["c-good"]
    submitted = claim.pop("submitted_at")
    assert claim == {
        "schema_version": 2, "claim_id": "c-good", "member_id": P1, "provider_id": DR,
        "provider_specialty": "GENERAL PRACTICE", "place_of_service": "ambulatory",
        "patient_age": 43, "patient_sex": "F", "service_date": "2023-03-01",
        "diagnosis_codes": ["44054006", LONG_CODE],
        "lines": [{"procedure_code": "185347001", "units": 1, "charge": 85.55},
                  {"procedure_code": "430193006", "units": 3, "charge": 100.1}],
        "claim_amount": 185.65, "num_services": 4,
    }
    assert submitted.endswith(".000Z")
    assert submitted >= "2023-03-01T11:00:00.000Z"  # at least an hour after the service


def test_every_claim_is_a_valid_v2_claim_and_they_are_sorted(tmp_path: Path) -> None:
    claims = converted(tmp_path).claims
    for claim in claims:
        ClaimV2.from_json(json.dumps(claim))
    keys = [(c["submitted_at"], c["claim_id"]) for c in claims]
    assert keys == sorted(keys)


def test_unusable_claims_are_dropped_and_counted_by_reason(tmp_path: Path) -> None:
    conversion = converted(tmp_path)
    assert set(by_id(conversion)) == {"c-good", "c-birthday"}
    assert conversion.dropped == {"only zero charges": 1, "no charge lines": 1,
                                  "age outside 0-120": 1, "unknown patient": 1}
    assert conversion.adjusted["line left out: zero charge"] == 2
    assert conversion.adjusted["diagnosis code left out: invalid"] == 0  # c-old was dropped


def test_units_are_whole_billing_units_and_age_counts_from_the_birthday(tmp_path: Path) -> None:
    claim = by_id(converted(tmp_path))["c-birthday"]
    assert claim["patient_age"] == 33  # born 1990-06-15, served 2023-06-15
    assert claim["patient_sex"] == "M"
    assert claim["provider_specialty"] is None  # empty SPECIALITY
    assert claim["place_of_service"] == "wellness"
    assert [line["units"] for line in claim["lines"]] == [1, 1000]
    assert claim["num_services"] == 1001
    assert claim["diagnosis_codes"] == []


@pytest.mark.parametrize(("text", "units"), [
    ("1", 1), ("2.5", 3), ("2.0000001", 2), ("0", 1), ("", 1), ("-3", 1), ("nan", 1),
    ("1000", 1000), ("1000.5", 1000), ("7", 7),
])
def test_billing_units_rule(text: str, units: int) -> None:
    assert billing_units(text, Counter()) == units


def test_invalid_diagnosis_codes_are_left_out_and_unknown_sex_is_u(tmp_path: Path) -> None:
    claims = CLAIMS.replace(f"c-old,{P3},", f"c-old,{P2},")  # a patient of a valid age
    normalise(write_export(tmp_path / "raw", claims=claims), tmp_path / "tables")
    conversion = convert(read_tables(tmp_path / "tables"), since=SINCE,
                         rng=random_stream(7, DELAY_STREAM))
    assert by_id(conversion)["c-old"]["diagnosis_codes"] == []
    assert by_id(conversion)["c-old"]["place_of_service"] is None  # no encounter
    assert conversion.adjusted["diagnosis code left out: invalid"] == 1
    assert by_id(converted(tmp_path / "x"))["c-good"]["patient_sex"] == "F"


def test_since_filters_by_service_date_and_does_not_move_submission_times(
        tmp_path: Path) -> None:
    late = by_id(converted(tmp_path, since=SINCE))
    early = by_id(converted(tmp_path, since=date(2022, 1, 1)))
    assert "c-2022" in early
    assert "c-2022" not in late
    assert early["c-good"]["submitted_at"] == late["c-good"]["submitted_at"]
    other_seed = by_id(converted(tmp_path, seed=8))
    assert other_seed["c-good"]["submitted_at"] != late["c-good"]["submitted_at"]


def test_normalised_tables_do_not_depend_on_row_order_or_the_charge_counter(
        tmp_path: Path) -> None:
    header, *rows = TRANSACTIONS.splitlines(keepends=True)
    shifted = [row.replace(",17,", ",117,").replace(",12,", ",112,")
               .replace(",13,", ",113,").replace(",15,", ",115,") for row in rows]
    normalise(write_export(tmp_path / "a"), tmp_path / "ta")
    normalise(write_export(tmp_path / "b", transactions=header + "".join(reversed(shifted))),
              tmp_path / "tb")
    for name in ("patients.csv", "providers.csv", "encounters.csv", "claims.csv", LINES):
        assert (tmp_path / "ta" / name).read_bytes() == (tmp_path / "tb" / name).read_bytes()
    good = [row for row in (tmp_path / "ta" / LINES).read_text().splitlines()
            if row.startswith("c-good,")]
    assert good == ["c-good,0,185347001,1,85.55", "c-good,1,430193006,2.5,100.10",
                    "c-good,2,710824005,1,0.00"]  # CHARGE rows only, in CHARGEID order


def test_a_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    export = write_export(tmp_path / "raw")
    (export / "providers.csv").write_text("Id,SPECIALTY\nx,GP\n")
    with pytest.raises(ValueError, match=r"providers.csv has no column\(s\) SPECIALITY"):
        normalise(export, tmp_path / "tables")


def test_jsonl_lines_carry_normal_labels_and_are_byte_stable(tmp_path: Path) -> None:
    claims = converted(tmp_path).claims
    out = tmp_path / "out" / "claims.jsonl"
    assert write_jsonl(claims, out) == len(claims)
    first = out.read_bytes()
    assert write_jsonl(converted(tmp_path).claims, out) == len(claims)
    assert out.read_bytes() == first
    rows = [json.loads(line) for line in first.splitlines()]
    assert all(row["is_anomaly"] is False and row["pattern"] == "" for row in rows)
    assert [row["claim_id"] for row in rows] == [c["claim_id"] for c in claims]
    assert not list(out.parent.glob(".*.tmp"))


def test_synthea_arguments_pin_both_dates_and_every_argument_changes_the_key() -> None:
    run = SyntheaRun(seed=3, patients=20, state="Utah", reference_date=date(2024, 2, 29),
                     years=2)
    arguments = run.arguments(Path("/out"))
    assert arguments[:10] == ["-s", "3", "-cs", "3", "-r", "20240229", "-e", "20240229",
                              "-p", "20"]
    assert "--exporter.years_of_history=2" in arguments
    assert "--exporter.baseDirectory=/out" in arguments
    assert arguments[-1] == "Utah"
    variants = {SyntheaRun(seed=4, patients=20, state="Utah", years=2,
                           reference_date=date(2024, 2, 29)),
                SyntheaRun(seed=3, patients=21, state="Utah", years=2,
                           reference_date=date(2024, 2, 29)),
                SyntheaRun(seed=3, patients=20, state="Ohio", years=2,
                           reference_date=date(2024, 2, 29)),
                SyntheaRun(seed=3, patients=20, state="Utah", years=3,
                           reference_date=date(2024, 2, 29)),
                SyntheaRun(seed=3, patients=20, state="Utah", years=2,
                           reference_date=date(2024, 3, 1))}
    keys = {variant.key() for variant in variants}
    assert len(keys) == 5
    assert run.key() not in keys
    assert run.key() == SyntheaRun(seed=3, patients=20, state="Utah", years=2,
                                   reference_date=date(2024, 2, 29)).key()


def test_progress_counts_living_patients_only() -> None:
    with PatientProgress(patients=2, quiet=True) as progress:
        for line in ["Loading module modules/asthma.json",
                     "1 -- Ann1 Lee2 (30 y/o F) Salem, Massachusetts  (123)",
                     "2 -- Bob3 Ray4 (80 y/o M) Lowell, Massachusetts DECEASED (456)",
                     "2 -- Cy5 Roe6 (5 y/o M) Lowell, Massachusetts  (789)"]:
            progress(line)
        assert progress.alive == 2


def test_settings_read_the_synthea_prefix(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("SYNTHEA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SYNTHEA_RUNS_DIR", str(tmp_path / "runs"))
    settings = SyntheaSettings()
    assert settings.libs_dir == tmp_path / "cache" / "synthea-3.3.0" / "libs"
    assert settings.runs_root == tmp_path / "runs"
    monkeypatch.delenv("SYNTHEA_RUNS_DIR")
    assert SyntheaSettings().runs_root == tmp_path / "cache" / "synthea-3.3.0" / "runs"


def test_random_streams_are_distinct_and_repeatable() -> None:
    a, b = random_stream(5, 0).random(3), random_stream(5, 1).random(3)
    assert not np.array_equal(a, b)
    assert np.array_equal(a, random_stream(5, 0).random(3))
