"""The fault drills at smoke size, against the real stack the harness starts (its own broker
on free ports, a model trained into a temporary CLAIMFLOW_HOME, the model service, scorer
workers, the gateway). One run of ``python -m bench.drills --smoke``; one test per drill.

Part of ``make test`` (the smoke size runs in CI); ``make drills-smoke`` runs just this
file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.drills import DRILLS

# Stack setup (broker, training, model service) plus six drills; bounded by the drills' own
# deadline well inside the test's.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def drills_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("drills") / "drills.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.drills", "--smoke", "--out", str(out),
         "--deadline", "1500"],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=1700,
        check=False,
    )
    assert out.exists(), f"no report written:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    report: dict[str, Any] = json.loads(out.read_text())
    report["_stdout"] = done.stdout
    report["_stderr_tail"] = done.stderr[-5000:]
    report["_exit"] = done.returncode
    return report


def _drill(report: dict[str, Any], number: int) -> dict[str, Any]:
    found = [d for d in report["drills"] if d["number"] == number]
    assert found, f"drill {number} did not run; stack: {report.get('stack')}\n" \
                  f"{report['_stderr_tail']}"
    drill: dict[str, Any] = found[0]
    return drill


@pytest.mark.parametrize("number", sorted(DRILLS))
def test_drill_passes_at_smoke_size(drills_report: dict[str, Any], number: int) -> None:
    drill = _drill(drills_report, number)
    assert drill["passed"], json.dumps(drill, indent=1)[:4000]
    assert drill["checks"]
    assert all(drill["checks"].values())
    # Each drill printed its verdict line with counts.
    assert f"drill {number} {drill['name']}: PASS" in drills_report["_stdout"]


def test_report_records_machine_stack_and_overall_verdict(drills_report: dict[str, Any]
                                                          ) -> None:
    assert drills_report["smoke"] is True
    assert drills_report["machine"]["cpus"]
    assert drills_report["stack"]["bootstrap"].split(":")[1] not in ("9092", "9093")
    assert drills_report["passed"] is (drills_report["_exit"] == 0)


@pytest.mark.parametrize("number", [1, 2, 3, 4, 7])
def test_exactly_once_drills_count_every_claim(drills_report: dict[str, Any], number: int
                                               ) -> None:
    drill = _drill(drills_report, number)
    counts = drill["counts"]
    assert counts, f"drill {number} ended without counts: {drill['error']}"
    assert counts["decided"] == counts["expected"] == counts["sent"] > 0, counts
    assert counts["duplicates"] == counts["missing"] == 0, counts


def test_poison_flood_covers_at_least_twelve_kinds(drills_report: dict[str, Any]) -> None:
    counts = _drill(drills_report, 5)["counts"]
    assert counts["kinds"] >= 12
    assert counts["dead_letters"] == counts["bad"] > 0


def test_gateway_fuzz_fired_enough_requests(drills_report: dict[str, Any]) -> None:
    counts = _drill(drills_report, 6)["counts"]
    assert counts["requests"] >= 200
    assert counts["server_errors"] == 0
    assert counts["schema_cases"] >= 150
    assert counts["schema_cases_past_401_405"] > counts["schema_cases"] / 2
