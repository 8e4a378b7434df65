"""Shared helpers for benchmarks: timing, medians, machine facts, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in ("pydantic", "confluent-kafka", "scikit-learn", "numpy", "mlflow", "bentoml"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def median_rate(fn: Callable[[], int], repeats: int) -> dict[str, float]:
    """Run ``fn`` (which returns how many items it processed) ``repeats`` times."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        rates.append(count / (time.perf_counter() - start))
    return {"median_per_s": statistics.median(rates), "min_per_s": min(rates),
            "max_per_s": max(rates), "repeats": repeats}


def emit(result: dict[str, Any]) -> None:
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
