"""The stream benchmark's window: whole path from first produce, cores, per-core ratio."""

from __future__ import annotations

import pytest

from bench.run import FIGURES
from bench.stream_scoring import FULL, README_DEFAULT, per_core_ratio, window_figures


def test_window_counts_every_claim_from_the_first_produce_and_the_pipeline_cores() -> None:
    start = (10.0, {"workers": 1.0, "model_service": 2.0, "machine": 5.0})
    end = (20.0, {"workers": 11.0, "model_service": 9.0, "machine": 25.0})
    window = window_figures(start, end, claims=200_000, command_started=9.0)
    assert window["claims_per_s"] == pytest.approx(20_000)  # all claims over the whole window
    assert window["command_to_first_claim_s"] == pytest.approx(1.0)
    assert window["cpu_cores"]["pipeline"] == pytest.approx(1.7)  # workers + model service
    assert window["cpu_cores"]["machine"] == pytest.approx(2.0)
    assert window["cpu_us_per_claim"]["workers"] == pytest.approx(50.0)


def test_per_core_ratio_divides_each_side_by_the_cores_it_used() -> None:
    # The case: 33k claims/s on 1.73 busy cores against a one-core loop at 50k.
    run = {"claims_per_s": 33_000.0, "cpu_cores": {"pipeline": 1.26, "machine": 1.73}}
    anchor = {"claims_per_s": 50_000.0, "cpu_cores": 1.0}
    assert per_core_ratio(run, anchor) == pytest.approx(0.381, abs=1e-3)
    assert per_core_ratio({"claims_per_s": 1.0, "cpu_cores": {"machine": 0.0}}, anchor) is None


def test_the_headline_stream_figure_is_the_readme_default_not_the_best_setup() -> None:
    assert FULL.setups[0] == README_DEFAULT
    assert (README_DEFAULT.instances, README_DEFAULT.batch_max_size) == (2, None)
    stream = next(spec for spec in FIGURES if spec.key == "stream")
    assert stream.paths == ("throughput_runs.readme_default.claims_per_s",)
    assert stream.cores_paths  # judged per core against the loop
    assert {spec.key for spec in FIGURES} >= {"stream", "stream_tuned"}
