"""Synthea really runs (small population): valid v2 claims, the cache, byte-identical output.

Needs Java and Synthea's jars (``make setup-synthea``; fetched here on first use otherwise).
Two real runs of 20 patients, about 20-30 s each on two cores.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from claimflow.cli import cli
from producer.synthea import synthea_conversion, write_jsonl
from producer.synthea_convert import Conversion
from producer.synthea_run import SyntheaRun
from producer.synthea_settings import SyntheaSettings
from producer.synthea_tables import LINES, RAW_COLUMNS
from producer.typology import DEFAULT_PATTERN_SHARES
from schemas.claim_v2 import ClaimV2
from tests.integration.kafka_helpers import consume_until

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


def test_generate_profile_synthea_adds_labelled_fraud_to_the_cached_claims(
        first: tuple[Path, Conversion, Path, float], monkeypatch: pytest.MonkeyPatch) -> None:
    root, conversion, _, _ = first
    monkeypatch.setenv("SYNTHEA_RUNS_DIR", str(root / "runs"))
    out = root / "cli.jsonl"
    result = CliRunner().invoke(cli, [
        "generate", "--profile", "synthea", "--seed", str(RUN.seed),
        "--patients", str(RUN.patients), "--years", str(RUN.years), "--since", SINCE.isoformat(),
        "--reference-date", RUN.reference_date.isoformat(), "--anomaly-rate", "0.2", "--quiet",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert f"wrote {len(lines):,} synthea claims" in result.output
    for line in lines:
        ClaimV2.model_validate({k: v for k, v in line.items()
                                if k not in ("is_anomaly", "pattern")}, strict=False)
    patterns = Counter(line["pattern"] for line in lines if line["is_anomaly"])
    assert all(line["pattern"] == "" for line in lines if not line["is_anomaly"])
    assert len(patterns) >= 5, patterns  # a small population cannot host every pattern
    assert set(patterns) <= set(DEFAULT_PATTERN_SHARES)
    # The normal claims are Synthea's own, unchanged.
    normal = {line["claim_id"]: line for line in lines if not line["is_anomaly"]}
    for claim in conversion.claims:
        if claim["claim_id"] in normal:
            assert {k: v for k, v in normal[claim["claim_id"]].items()
                    if k not in ("is_anomaly", "pattern")} == claim
    again = CliRunner().invoke(cli, [
        "generate", "--profile", "synthea", "--seed", str(RUN.seed),
        "--patients", str(RUN.patients), "--years", str(RUN.years), "--since", SINCE.isoformat(),
        "--reference-date", RUN.reference_date.isoformat(), "--anomaly-rate", "0.2", "--quiet",
        "--out", str(root / "again.jsonl")])
    assert again.exit_code == 0, again.output
    assert (root / "again.jsonl").read_bytes() == out.read_bytes()


def test_produce_profile_synthea_streams_the_same_claims_keyed_by_member(
        first: tuple[Path, Conversion, Path, float], kafka_bootstrap: str,
        make_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _, _, _ = first
    monkeypatch.setenv("SYNTHEA_RUNS_DIR", str(root / "runs"))
    arguments = ["--profile", "synthea", "--seed", str(RUN.seed), "--patients",
                 str(RUN.patients), "--years", str(RUN.years), "--since", SINCE.isoformat(),
                 "--reference-date", RUN.reference_date.isoformat(), "--quiet"]
    generated = CliRunner().invoke(cli, ["generate", *arguments, "--out", str(root / "p.jsonl")])
    assert generated.exit_code == 0, generated.output
    expected = {c["claim_id"]: c for c in map(json.loads, (root / "p.jsonl").read_bytes()
                                              .splitlines())}
    topic = make_topic(partitions=3, prefix="synthea")
    result = CliRunner().invoke(cli, ["produce", *arguments, "--topic", topic],
                                env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})
    assert result.exit_code == 0, result.output
    messages = consume_until(kafka_bootstrap, [topic], len(expected), timeout_s=60)
    assert len(messages) == len(expected)
    for message in messages:
        line = expected.pop(ClaimV2.from_json(message.value() or b"").claim_id)
        assert message.key() == line["member_id"].encode()
        headers = dict(message.headers() or [])
        assert headers["pattern"] == line["pattern"].encode()
    assert not expected
