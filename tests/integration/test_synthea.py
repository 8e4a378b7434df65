"""Synthea really runs (small population): valid v2 claims, the cache, byte-identical output.

Needs Java and Synthea's jars (``make setup-synthea``; fetched here on first use otherwise).
Two real runs of 20 patients, about 20-30 s each on two cores.
"""

from __future__ import annotations

import json
import math
import time
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from producer.synthea import synthea_conversion, write_jsonl
from producer.synthea_cli import synthea_group
from producer.synthea_convert import Conversion
from producer.synthea_run import SyntheaRun
from producer.synthea_settings import SyntheaSettings
from producer.synthea_tables import LINES, RAW_COLUMNS
from schemas.claim_v2 import ClaimV2

pytestmark = pytest.mark.integration

RUN = SyntheaRun(seed=11, patients=20, state="Massachusetts", reference_date=date(2025, 7, 1),
                 years=2)
SINCE = date(2024, 1, 1)
TABLES = (*RAW_COLUMNS, LINES)


class Console:
    """Collects Synthea's console lines (none on a cache hit)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


def convert_once(runs_dir: Path, out: Path) -> tuple[Conversion, Console, float]:
    console = Console()
    started = time.monotonic()
    conversion = synthea_conversion(RUN, since=SINCE, settings=SyntheaSettings(runs_dir=runs_dir),
                                    on_line=console)
    write_jsonl(conversion.claims, out)
    return conversion, console, time.monotonic() - started


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Conversion, Path, float]:
    root = tmp_path_factory.mktemp("synthea")
    conversion, console, seconds = convert_once(root / "runs", root / "first.jsonl")
    assert any(" -- " in line for line in console.lines), "Synthea did not run"
    return root, conversion, root / "first.jsonl", seconds


def test_every_claim_is_valid_consistent_recent_and_sorted(
        first: tuple[Path, Conversion, Path, float]) -> None:
    _, conversion, jsonl, _ = first
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) >= 100, conversion.dropped
    for row in rows:
        assert row.pop("is_anomaly") is False
        assert row.pop("pattern") == ""
        claim = ClaimV2.from_json(json.dumps(row))
        assert claim.service_date >= SINCE
        assert claim.claim_amount == round(math.fsum(line.charge for line in claim.lines), 2)
        assert claim.num_services == sum(line.units for line in claim.lines)
        assert claim.submitted_at.date() >= claim.service_date
    stamps = [(row["submitted_at"], row["claim_id"]) for row in rows]
    assert stamps == sorted(stamps)
    assert len({row["claim_id"] for row in rows}) == len(rows)
    assert {row["patient_sex"] for row in rows} <= {"F", "M", "U"}
    assert any(row["place_of_service"] for row in rows)


def test_same_arguments_hit_the_cache_and_give_the_same_bytes(
        first: tuple[Path, Conversion, Path, float]) -> None:
    root, _, jsonl, _ = first
    _, console, seconds = convert_once(root / "runs", root / "again.jsonl")
    assert console.lines == [], "a second run with the same arguments ran Java again"
    assert seconds < 10
    assert (root / "again.jsonl").read_bytes() == jsonl.read_bytes()


def test_a_run_without_cache_gives_the_same_tables_and_bytes(
        first: tuple[Path, Conversion, Path, float]) -> None:
    root, _, jsonl, _ = first
    _, console, _ = convert_once(root / "fresh-runs", root / "fresh.jsonl")
    assert console.lines, "expected a real second Synthea run"
    assert (root / "fresh.jsonl").read_bytes() == jsonl.read_bytes()
    cached, fresh = root / "runs" / RUN.key(), root / "fresh-runs" / RUN.key()
    for name in TABLES:
        assert (cached / name).read_bytes() == (fresh / name).read_bytes(), name


def test_the_command_writes_the_same_jsonl_from_the_cache(
        first: tuple[Path, Conversion, Path, float], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _, jsonl, _ = first
    monkeypatch.setenv("SYNTHEA_RUNS_DIR", str(root / "runs"))
    out = root / "cli.jsonl"
    result = CliRunner().invoke(synthea_group, [
        "generate", "--seed", str(RUN.seed), "--patients", str(RUN.patients),
        "--years", str(RUN.years), "--since", SINCE.isoformat(),
        "--reference-date", RUN.reference_date.isoformat(), "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == jsonl.read_bytes()
    assert f"wrote {len(jsonl.read_bytes().splitlines()):,} Synthea claims" in result.output
