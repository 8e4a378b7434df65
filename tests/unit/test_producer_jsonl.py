"""v2 JSON Lines: written column-wise, read back into records keyed by member_id with the labels
only as headers; bad lines reported with file:line and the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from producer import jsonl
from producer.errors import InputError
from producer.jsonl import encode_table, read_claims_jsonl, write_claims_jsonl
from producer.realistic_v2 import generate_realistic_claims
from producer.table import from_records
from schemas.claim_v2 import ClaimV2


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jsonl") / "claims.jsonl"
    write_claims_jsonl(generate_realistic_claims(3000, seed=4), path)
    return path


def claim(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema_version": 2, "claim_id": "C-1", "member_id": "M-1", "provider_id": "P-1",
        "provider_specialty": "cardiology", "place_of_service": "office", "patient_age": 61,
        "patient_sex": "F", "service_date": "2025-02-03",
        "submitted_at": "2025-02-04T09:00:00.000Z", "diagnosis_codes": ["I10"],
        "lines": [{"procedure_code": "93000", "units": 1, "charge": 45.5},
                  {"procedure_code": "99213", "units": 2, "charge": 220.0}],
        "claim_amount": 265.5, "num_services": 3,
    }
    return base | changes


def write_lines(path: Path, *lines: bytes | dict[str, Any]) -> Path:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else orjson.dumps(x) for x in lines))
    return path


def test_round_trip_keys_values_and_label_headers(written: Path) -> None:
    records, errors = read_claims_jsonl(written)
    assert errors == []
    lines = [orjson.loads(line) for line in written.read_bytes().splitlines()]
    assert len(records) == len(lines) == 3000
    assert records.headers is not None
    for i, line in enumerate(lines):
        value = orjson.loads(records.values[i])
        assert "is_anomaly" not in value
        assert "pattern" not in value
        assert value == {k: v for k, v in line.items() if k not in ("is_anomaly", "pattern")}
        assert records.keys[i] == line["member_id"].encode()
        assert records.headers[i] == [("is_anomaly", b"true" if line["is_anomaly"] else b"false"),
                                      ("pattern", line["pattern"].encode())]
        ClaimV2.from_json(records.values[i])


def test_generated_records_equal_the_file_records(written: Path) -> None:
    from_file, _ = read_claims_jsonl(written)
    generated, errors = encode_table(generate_realistic_claims(3000, seed=4))
    assert errors == []
    assert (generated.keys, generated.values, generated.headers) == (
        from_file.keys, from_file.values, from_file.headers)


def test_no_labels(tmp_path: Path, written: Path) -> None:
    records, _ = read_claims_jsonl(written, labels=False)
    assert records.headers is None
    plain = write_lines(tmp_path / "plain.jsonl", claim(), claim(claim_id="C-2"))
    records, errors = read_claims_jsonl(plain)
    assert (errors, records.headers, records.keys) == ([], None, [b"M-1", b"M-1"])


def test_labels_anywhere_in_the_object_are_stripped(tmp_path: Path) -> None:
    first = {"pattern": "duplicate", "is_anomaly": True, **claim()}
    path = write_lines(tmp_path / "c.jsonl", first)
    records, errors = read_claims_jsonl(path)
    assert errors == []
    assert orjson.loads(records.values[0]) == claim()
    assert records.headers == [[("is_anomaly", b"true"), ("pattern", b"duplicate")]]


def test_bad_lines_name_the_file_line_and_field(tmp_path: Path) -> None:
    bad_units = claim(claim_id="C-3", lines=[{"procedure_code": "93000", "units": 0,
                                              "charge": 265.5}], num_services=0)
    path = write_lines(
        tmp_path / "bad.jsonl", claim(), b"", bad_units, claim(claim_id="C-4", claim_amount=1.0),
        b"{not json", {**claim(claim_id="C-6"), "is_anomaly": "yes", "pattern": ""},
        claim(claim_id="C-7", lines=[]), b"   ", b"[1, 2]", claim(claim_id="C-10"))
    records, errors = read_claims_jsonl(path)
    assert records.keys == [b"M-1", b"M-1"]
    described = [str(e) for e in errors]
    assert described[0].startswith(f"{path}:3 (claim_id 'C-3'): invalid Claim: lines.0.units:")
    assert described[1].startswith(f"{path}:4 (claim_id 'C-4'): invalid Claim: claim_amount: "
                                   "claim_amount 1.0 is not the sum of the line charges")
    assert described[2].startswith(f"{path}:5: invalid Claim: <message>: Invalid JSON")
    assert described[3] == f"{path}:6 (claim_id 'C-6'): is_anomaly: must be true or false"
    assert described[4].startswith(f"{path}:7 (claim_id 'C-7'): invalid Claim: lines:")
    assert described[5].startswith(f"{path}:9: invalid Claim:")
    assert len(errors) == 6


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_a_file_without_claims_is_unusable(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match="no claims"):
        read_claims_jsonl(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_claims_jsonl(tmp_path / "absent.jsonl")


def test_odd_strings_are_escaped(tmp_path: Path) -> None:
    odd = claim(provider_specialty='Ob"Gyn\\ \u00e9\n', place_of_service=None)
    table = from_records([odd])
    path = tmp_path / "odd.jsonl"
    write_claims_jsonl(table, path)
    records, errors = read_claims_jsonl(path)
    assert errors == []
    assert orjson.loads(records.values[0]) == odd


def test_writing_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("old")
    write_claims_jsonl(generate_realistic_claims(100, seed=1), path)
    assert len(path.read_bytes().splitlines()) == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    assert np.all([line.endswith(b"}") for line in path.read_bytes().splitlines()])


def test_worker_processes_give_the_same_records_and_line_numbers(
    tmp_path: Path, written: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = written.read_bytes().splitlines()
    lines[5] = b"{oops"
    lines[2500] = lines[2500].replace(b'"patient_age":', b'"patient_age":-', 1)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([*lines[:1000], b"", *lines[1000:]]) + b"\n")
    serial = read_claims_jsonl(path)
    monkeypatch.setattr(jsonl, "PARALLEL_BYTES", 1)
    monkeypatch.setattr(jsonl, "worker_count", lambda data: 3)
    parallel = read_claims_jsonl(path)
    assert parallel == serial
    assert [e.location for e in parallel[1]] == [f"{path}:6", f"{path}:2502"]
    assert len(parallel[0]) == 2998


def test_split_points_end_at_line_ends() -> None:
    data = b"a\nbb\n\nccc\nd"
    pieces = jsonl.split_points(data, 3)
    assert b"".join(data[a:b] for a, b, _ in pieces) == data
    assert all(data[b - 1:b] == b"\n" for _, b, _ in pieces[:-1])
    assert [first for *_, first in pieces] == [
        data[:a].count(b"\n") + 1 for a, _, _ in pieces]
