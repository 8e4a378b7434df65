"""Where the repository's code lives, from the one place that says so: pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]


def distribution_packages() -> tuple[str, ...]:
    """The top-level packages of the claimflow distribution (hatch's wheel target)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return tuple(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
