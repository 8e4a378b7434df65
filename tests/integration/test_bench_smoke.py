"""Every benchmark at smoke size through the aggregator: ``python -m bench.run --smoke``.

Checks that each benchmark module still runs and still reports the figures the README table
is built from (a renamed key shows up here, not as a silently empty row)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run import FIGURES, discover

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=1700,
        check=False,
    )
    report_path = out / "smoke.json"
    assert report_path.exists(), done.stderr[-4000:]
    return json.loads(report_path.read_text()), (out / "smoke.md").read_text(), done.stderr


def test_every_benchmark_module_runs(smoke: tuple[dict[str, Any], str, str]) -> None:
    report, _, stderr = smoke
    assert set(report["benchmarks"]) == set(discover())
    failed = {name: info["error"] for name, info in report["benchmarks"].items()
              if info["status"] != "ok"}
    assert not failed, f"{failed}\n{stderr[-3000:]}"


def test_every_headline_figure_is_reported(smoke: tuple[dict[str, Any], str, str]) -> None:
    report, _, _ = smoke
    present = set(discover())
    missing = [(f["key"], f["status"]) for f in report["figures"]
               if f["module"] in present and f["value"] is None]
    assert not missing


def test_markdown_table_has_a_row_per_figure(smoke: tuple[dict[str, Any], str, str]) -> None:
    report, markdown, _ = smoke
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(FIGURES) == 1 + len(report["figures"])
    assert report["machine"]["cpus"]
    assert report["smoke"] is True
