"""The quixstreams A/B at smoke size: ``python -m bench.ab_quixstreams --smoke``.

Needs the virtualenv that ``make bench-ab`` creates (quixstreams is no project dependency:
it pins an older confluent-kafka); skipped, with that reason, where it does not exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ab_quixstreams import DEFAULT_QUIX_PYTHON, SIDES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not DEFAULT_QUIX_PYTHON.exists(),
                    reason="no quixstreams virtualenv: `make bench-ab` creates it")
def test_every_side_processes_every_claim_and_restores(tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.ab_quixstreams", "--smoke", "--out", str(out)],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=540,
        check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert set(report["sides"]) == {side.name for side in SIDES}
    for name, side in report["sides"].items():
        assert side["processed"] == report["claims"], name
        assert side["claims_per_s"] > 0, name
        assert side["cpu_us_per_claim"] > 0, name
        assert side["restore"]["processed"] == 1, name
        assert side["restore"]["restore_to_first_new_s"] > 0, name
