"""Claims CSV files: byte-stable writing, exact round trip, bad rows kept with their lines."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from producer.csvio import read_claims_csv, read_claims_frame, write_claims_csv
from producer.errors import InputError
from producer.profiles import generate

HEADER = "claim_id,claim_amount,num_services,patient_age,provider_id,days_since_last_claim"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("profile", "rows"), [("seed", 1050), ("realistic", 20_000)])
def test_round_trip_is_exact(tmp_path: Path, profile: str, rows: int) -> None:
    frame = generate(profile, rows, seed=5)  # type: ignore[arg-type]
    path = tmp_path / "claims.csv"
    write_claims_csv(frame, path)
    back = read_claims_frame(path)
    expected = frame.assign(claim_id=frame["claim_id"].astype(str))
    pd.testing.assert_frame_equal(back, expected, check_exact=True)


def test_writing_is_byte_stable_and_atomic(tmp_path: Path) -> None:
    frame = generate("realistic", 3000, seed=9)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    write_claims_csv(frame, first)
    write_claims_csv(frame, second)
    assert digest(first) == digest(second)
    second.write_text("old content")
    write_claims_csv(frame, second)  # replaces an existing file
    assert digest(first) == digest(second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]  # no temp files


def test_file_format(tmp_path: Path) -> None:
    path = tmp_path / "lab.csv"
    frame = generate("seed", 21, seed=42)
    write_claims_csv(frame, path)
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER + ",submitted_at,is_anomaly,pattern"
    first = frame.iloc[0]
    assert lines[1].split(",") == [
        str(first["claim_id"]), repr(float(first["claim_amount"])), str(first["num_services"]),
        str(first["patient_age"]), str(first["provider_id"]),
        str(first["days_since_last_claim"]),
        first["submitted_at"].strftime("%Y-%m-%dT%H:%M:%S.") +
        f"{first['submitted_at'].microsecond // 1000:03d}Z",
        "true" if first["is_anomaly"] else "false", first["pattern"],
    ]


BAD_ROWS = "\n".join([
    HEADER,                          # line 1
    "1,100.5,3,40,7,10",             # line 2: good
    "",                              # line 3: blank, not a record
    "2,abc,3.0,40,7",                # line 4: 5 fields
    "3,nan,3.5,200,7,1",             # line 5: nan amount, fractional services
    "4,12,2,30,1,5,9",               # line 6: 7 fields
    "5,1e3,4.0,30,1,5",              # line 7: good (4.0 is an integer)
    "6,12,x,30,1,-",                 # line 8: two bad integers
]) + "\n"


@pytest.mark.parametrize("quoted", [False, True], ids=["arrow-path", "csv-module-path"])
def test_bad_rows_are_reported_with_their_line(tmp_path: Path, quoted: bool) -> None:
    text = BAD_ROWS
    if quoted:  # a quoted field sends the file through the csv module instead of Arrow
        text = text.replace("5,1e3,", '"5",1e3,')
    path = tmp_path / "bad.csv"
    path.write_text(text)
    claims = read_claims_csv(path)
    assert claims.frame["claim_id"].tolist() == ["1", "5"]
    assert claims.frame["num_services"].tolist() == [3, 4]
    assert claims.lines.tolist() == [2, 7]
    assert [str(e) for e in claims.errors] == [
        "line 4: expected 6 fields, found 5",
        "line 5 (claim_id '3'): claim_amount: 'nan' is not a finite number; "
        "num_services: '3.5' is not an integer",
        "line 6: expected 6 fields, found 7",
        "line 8 (claim_id '6'): num_services: 'x' is not an integer; "
        "days_since_last_claim: '-' is not an integer",
    ]


def test_multi_line_records_keep_their_first_line(tmp_path: Path) -> None:
    path = tmp_path / "multi.csv"
    path.write_text(HEADER + '\n"a\nb",1,1,1,1,1\n7,x,1,1,1,1\n')
    claims = read_claims_csv(path)
    assert claims.frame["claim_id"].tolist() == ["a\nb"]  # the contract rejects it later
    assert [e.location for e in claims.errors] == ["line 4"]


def test_crlf_and_bom_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "windows.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "\r\n1,2.5,1,1,1,1\r\n").encode())
    claims = read_claims_csv(path)
    assert claims.frame["claim_amount"].tolist() == [2.5]
    assert claims.errors == []


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (b"\n\n", "empty file"),
    (b"claim_id,claim_amount\n1,2\n", "missing column"),
    ((HEADER + ",colour\n").encode(), "unknown column"),
    ((HEADER + ",claim_id\n").encode(), "duplicated column"),
    (HEADER.encode() + b"\n1,\xff\xfe,1,1,1,1\n", "UTF-8"),
])
def test_unusable_files_are_rejected_as_a_whole(tmp_path: Path, content: bytes,
                                                 message: str) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_claims_csv(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_claims_csv(tmp_path / "nope.csv")


def test_read_claims_frame_refuses_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(BAD_ROWS)
    with pytest.raises(InputError, match=r"4 bad row\(s\): line 4: expected 6 fields"):
        read_claims_frame(path)
