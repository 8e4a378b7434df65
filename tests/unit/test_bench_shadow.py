"""bench/shadow_scoring.py's arithmetic: the paired cost of shadow scoring."""

from __future__ import annotations

from typing import Any

import pytest

from bench.shadow_scoring import summarize


def run(rate: float, shadows: int = 0, service_us: float = 10.0) -> dict[str, Any]:
    return {"claims_per_s": rate, "exactly_once": True, "shadow_scores": shadows,
            "cpu_us_per_claim": {"model_service": service_us, "workers": 20.0}}


def test_cost_is_paired_per_repeat_and_judged_by_the_worst() -> None:
    runs = [{"plain": run(20_000), "no_challenger": run(19_800), "shadow": run(16_000)},
            {"plain": run(10_000), "no_challenger": run(10_000), "shadow": run(7_000)},
            {"plain": run(30_000), "no_challenger": run(29_000), "shadow": run(27_000)}]
    out = summarize(runs)
    assert out["cost"]["runs"] == pytest.approx([0.2, 0.3, 0.1])
    assert out["cost_vs_plain"]["runs"] == pytest.approx([0.2, 0.3, 0.1])
    assert out["cost"]["median"] == pytest.approx(0.2)
    assert out["cost"]["worst"] == pytest.approx(0.3)
    assert out["cost"]["goal_met"] is False
    assert out["claims_per_s"]["shadow"] == {"median": 16_000, "min": 7_000, "max": 27_000}
    assert out["cost_without_challenger"]["median"] == pytest.approx(0.01)
    assert out["exactly_once"] is True


def test_the_baseline_is_the_faster_run_without_shadow_records() -> None:
    """A slow plain run must not make shadow scoring look cheap."""
    runs = [{"plain": run(30_000), "no_challenger": run(39_000), "shadow": run(26_000)}]
    out = summarize(runs)
    assert out["cost"]["runs"] == pytest.approx([1 - 26 / 39])
    assert out["cost_vs_plain"]["runs"] == pytest.approx([1 - 26 / 30])
    assert out["cost"]["goal_met"] is False
