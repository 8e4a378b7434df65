"""Running the ``claimflow`` command in-process, as the trainer's integration tests do."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result

from claimflow.cli import cli


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def train_json(*args: str) -> dict[str, Any]:
    """``claimflow train ... --json``, which must succeed; its JSON outcome."""
    result = invoke("train", *args, "--json")
    assert result.exit_code == 0, result.output
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome
