from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from trainer.data import DataError, load_csv

HEADER = ("claim_id,claim_amount,num_services,patient_age,provider_id,days_since_last_claim,"
          "submitted_at,is_anomaly,pattern")
GOOD_ROWS = [
    "1,1000.5,3,40,7,30,2026-01-01T00:00:00.000Z,False,",
    "2,12000.25,15,61,9,2,2026-01-01T00:00:01.000Z,True,gross_outlier",
    "3,800,1,0,1,0,2026-01-01T00:00:02.000Z,false,",
]


def write(tmp_path: Path, *lines: str, name: str = "claims.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return path


def test_loads_features_labels_patterns_and_digest(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, *GOOD_ROWS)
    data = load_csv(path)
    assert data.features.dtype == np.float64
    assert data.features.tolist() == [
        [1000.5, 3, 40, 7, 30], [12000.25, 15, 61, 9, 2], [800, 1, 0, 1, 0]]
    assert data.labels is not None
    assert data.labels.tolist() == [False, True, False]
    assert data.patterns is not None
    assert data.patterns.tolist() == ["", "gross_outlier", ""]
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (data.rows, data.rows_read, data.rows_dropped) == (3, 3, 0)


def test_labels_are_optional(tmp_path: Path) -> None:
    header = "claim_amount,num_services,patient_age,provider_id,days_since_last_claim"
    data = load_csv(write(tmp_path, header, "10.0,1,2,3,4", "20.0,2,3,4,5"))
    assert data.labels is None
    assert data.patterns is None
    assert data.rows == 2


def test_patterns_alone_label_the_rows(tmp_path: Path) -> None:
    header = "claim_amount,num_services,patient_age,provider_id,days_since_last_claim,pattern"
    data = load_csv(write(tmp_path, header, "10.0,1,2,3,4,", "20.0,2,3,4,5,upcoding"))
    assert data.labels is not None
    assert data.labels.tolist() == [False, True]


def test_column_order_does_not_matter(tmp_path: Path) -> None:
    header = "days_since_last_claim,provider_id,patient_age,num_services,claim_amount"
    data = load_csv(write(tmp_path, header, "4,3,2,1,10.0"))
    assert data.features.tolist() == [[10.0, 1, 2, 3, 4]]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_csv(tmp_path / "nope.csv")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="the file is empty"):
        load_csv(path)


def test_header_only(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no claim rows"):
        load_csv(write(tmp_path, HEADER))


def test_missing_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing column\(s\) patient_age, provider_id$|"
                                        r"missing column\(s\) patient_age, provider_id;"):
        load_csv(write(tmp_path, "claim_amount,num_services,days_since_last_claim", "1,2,3"))


@pytest.mark.parametrize(("bad_row", "message"), [
    ("4,abc,3,40,7,30,2026-01-01T00:00:00Z,False,",
     r"column claim_amount needs finite numbers; line 5 has 'abc'"),
    ("4,100.0,3,,7,30,2026-01-01T00:00:00Z,False,",
     r"column patient_age needs finite numbers; line 5 has ''"),
    ("4,NaN,3,40,7,30,2026-01-01T00:00:00Z,False,",
     r"column claim_amount needs finite numbers; line 5 has 'NaN'"),
    ("4,inf,3,40,7,30,2026-01-01T00:00:00Z,False,",
     r"column claim_amount needs finite numbers; line 5"),
    ("4,100.0,2.5,40,7,30,2026-01-01T00:00:00Z,False,",
     r"column num_services needs whole numbers; line 5 has '2.5'"),
    ("4,100.0,3,40,7,30,2026-01-01T00:00:00Z,maybe,",
     r"column is_anomaly needs true/false; line 5 has 'maybe'"),
])
def test_bad_values_name_column_and_line(tmp_path: Path, bad_row: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_csv(write(tmp_path, HEADER, *GOOD_ROWS, bad_row))


def test_rows_outside_the_contract_are_dropped_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, *GOOD_ROWS,
                 "4,-5.0,3,40,7,30,2026-01-01T00:00:00Z,False,",  # amount <= 0
                 "5,100.0,0,40,7,30,2026-01-01T00:00:00Z,False,",  # zero services
                 "6,100.0,3,121,7,30,2026-01-01T00:00:00Z,False,")  # age > 120
    data = load_csv(path)
    assert (data.rows, data.rows_read, data.rows_dropped) == (3, 6, 3)
    assert data.labels is not None
    assert data.labels.tolist() == [False, True, False]


def test_no_rows_after_filtering(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, "1,-5.0,3,40,7,30,2026-01-01T00:00:00Z,False,",
                 "2,100.0,3,40,0,30,2026-01-01T00:00:00Z,False,")
    with pytest.raises(DataError, match="no rows left after dropping 2 row"):
        load_csv(path)


def test_not_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00garbage\x00\n\x81\x82")
    with pytest.raises(DataError):
        load_csv(path)
