"""``bentoml build`` with the repository's ``bentofile.yaml`` gives a complete Bento."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.model_service_fixture import clean_env
from tests.layout import distribution_packages

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OUR_PACKAGES = distribution_packages()


def modules_the_service_imports() -> set[str]:
    """Source files of our packages loaded by importing the service (clean interpreter)."""
    code = (
        "import json, sys; import scorer.service; "
        f"print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() "
        f"if n.split('.')[0] in {OUR_PACKAGES!r} and getattr(m, '__file__', None))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(),
                         capture_output=True, text=True, check=True, timeout=300).stdout
    return {str(Path(path).resolve().relative_to(ROOT)) for path in json.loads(out)}


def test_bento_builds_with_everything_the_service_imports(tmp_path: Path) -> None:
    bentoml_home = tmp_path / "bentoml"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("bentoml")), "build", "-o", "tag"],
        cwd=ROOT, env=clean_env(BENTOML_HOME=str(bentoml_home)),
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [bento] = list((bentoml_home / "bentos" / "claimflow-model-service").glob("*/bento.yaml"))
    src = bento.parent / "src"
    packaged = {str(p.relative_to(src)) for p in src.rglob("*.py")}
    missing = modules_the_service_imports() - packaged
    assert not missing, f"bentofile.yaml does not include {sorted(missing)}"
    info = yaml.safe_load(bento.read_text())
    assert info["service"] == "scorer.service:ClaimAnomalyService"
    openapi = yaml.safe_load((bento.parent / "apis" / "openapi.yaml").read_text())
    assert {"/score_batch", "/score", "/reload", "/readyz", "/metrics"} <= set(openapi["paths"])
