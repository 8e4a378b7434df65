"""The benchmark aggregator's pure core: medians, figures beside anchors, goals, Markdown."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.common import RESULTS_DIR
from bench.provenance import DirtyTreeError, Provenance, git_provenance, results_target
from bench.report import (
    AnchorSpec,
    Figure,
    FigureSpec,
    Goal,
    build_figure,
    commit_line,
    format_number,
    goals_summary,
    median_merge,
    met_in_every_run,
    paired_relatives,
    per_core_rate,
    relative,
    render_markdown,
    resolve,
)
from bench.run import (
    DIRTY_DIR,
    FIGURES,
    SMOKE_DIR,
    ModuleOutcome,
    assemble,
    carry_over,
    discover,
    needs_broker,
    output_dir,
    parse_args,
    stamp_measurements,
    write_report,
)

# --------------------------------------------------------------------------- median_merge


def test_median_of_numbers_is_the_middle_run() -> None:
    assert median_merge([3.0, 1.0, 2.0]) == 2.0
    assert median_merge([1.0, 2.0, 10.0, 20.0]) == 6.0


def test_median_of_ints_stays_int_when_whole() -> None:
    merged = median_merge([5, 7, 9])
    assert merged == 7
    assert isinstance(merged, int)
    assert median_merge([1, 2]) == 1.5


def test_median_merges_nested_dicts_key_by_key() -> None:
    runs = [
        {"a": {"rate": 10.0, "n": 100}, "name": "x"},
        {"a": {"rate": 30.0, "n": 100}, "name": "x"},
        {"a": {"rate": 20.0, "n": 100}, "name": "x"},
    ]
    assert median_merge(runs) == {"a": {"rate": 20.0, "n": 100}, "name": "x"}


def test_median_uses_runs_that_have_the_key() -> None:
    merged = median_merge([{"a": 1.0}, {"a": 3.0, "b": 7.0}])
    assert merged == {"a": 2.0, "b": 7.0}


def test_median_ignores_non_finite_samples() -> None:
    assert median_merge([1.0, math.nan, 3.0, math.inf]) == 2.0


def test_median_of_booleans_is_the_cautious_majority() -> None:
    assert median_merge([True, True, False]) is True
    assert median_merge([True, False]) is False  # a tie is not a pass


def test_median_of_equal_length_lists_is_element_wise() -> None:
    assert median_merge([[1.0, 10.0], [3.0, 30.0], [2.0, 20.0]]) == [2.0, 20.0]


def test_median_keeps_first_value_for_text_and_ragged_lists() -> None:
    assert median_merge(["a", "b"]) == "a"
    assert median_merge([[1], [1, 2]]) == [1]


def test_median_of_nothing_is_none() -> None:
    assert median_merge([]) is None


# --------------------------------------------------------------------------- resolve/ratios


def test_resolve_follows_dicts_and_list_indexes() -> None:
    tree = {"a": {"b": [{"c": 5}]}}
    assert resolve(tree, "a.b.0.c") == 5
    assert resolve(tree, "a.x") is None
    assert resolve(tree, "a.b.3.c") is None
    assert resolve(tree, "a.b.0.c.d") is None


def test_relative_is_oriented_so_above_one_is_better() -> None:
    assert relative(50_000, 100_000, "higher") == 0.5  # throughput: figure / anchor
    assert relative(0.05, 5.0, "lower") == 100.0  # latency: anchor / figure (speed-up)
    assert relative(None, 1.0, "higher") is None
    assert relative(1.0, 0.0, "higher") is None


@pytest.mark.parametrize(
    ("goal", "value", "met"),
    [(Goal(">=", 10), 10, True), (Goal(">=", 10), 9.99, False),
     (Goal("<=", 5), 5, True), (Goal("<=", 5), 5.01, False)],
)
def test_goal_boundaries(goal: Goal, value: float, met: bool) -> None:
    assert goal.met(value) is met


# --------------------------------------------------------------------------- figures

STREAM = FigureSpec(
    "stream", "Stream", "stream", ("throughput.claims_per_s", "claims_per_s"), "claims/s",
    "higher", anchor=AnchorSpec("in-process loop", "stream", ("in_process.claims_per_s",)),
    goal=Goal(">=", 30_000), relative_goal=Goal(">=", 0.5),
)
LATENCY = FigureSpec(
    "one", "One claim", "model", ("single.ms",), "ms", "lower",
    anchor=AnchorSpec("sklearn", "sk", ("single_ms",)), goal=Goal("<=", 0.1),
)


def _figure(
    spec: FigureSpec, runs: dict[str, list[Any]], statuses: dict[str, str] | None = None
) -> Figure:
    medians = {name: median_merge(r) for name, r in runs.items()}
    return build_figure(spec, medians, runs, statuses or dict.fromkeys(runs, "ok"))


def test_figure_takes_median_and_range_and_judges_both_goals() -> None:
    runs = {"stream": [
        {"throughput": {"claims_per_s": 40_000.0}, "in_process": {"claims_per_s": 100_000.0}},
        {"throughput": {"claims_per_s": 35_000.0}, "in_process": {"claims_per_s": 100_000.0}},
        {"throughput": {"claims_per_s": 20_000.0}, "in_process": {"claims_per_s": 100_000.0}},
    ]}
    fig = _figure(STREAM, runs)
    assert fig.value == 35_000.0
    assert (fig.low, fig.high, fig.samples) == (20_000.0, 40_000.0, 3)
    assert fig.anchor_value == 100_000.0
    assert fig.relative == pytest.approx(0.35)
    assert fig.worst == 20_000.0
    assert fig.relative_worst == pytest.approx(0.2)
    assert fig.goal_met is False  # the median meets 30,000 but the worst run does not
    assert fig.relative_goal_met is False
    assert fig.met is False  # one goal missed is a miss


def test_figure_falls_back_to_later_paths() -> None:
    fig = _figure(STREAM, {"stream": [{"claims_per_s": 31_000.0}]})
    assert fig.source_path == "claims_per_s"
    assert fig.goal_met is True
    assert fig.anchor_value is None
    assert fig.relative is None
    assert fig.met is True  # the relative goal cannot be judged without an anchor


def test_latency_figure_against_an_anchor_from_another_module() -> None:
    runs: dict[str, list[Any]] = {"model": [{"single": {"ms": 0.04}}], "sk": [{"single_ms": 4.0}]}
    fig = _figure(LATENCY, runs)
    assert fig.relative == pytest.approx(100.0)
    assert fig.met is True


def test_figure_not_reported_or_failed_is_unknown_not_met() -> None:
    missing = _figure(LATENCY, {"model": [{"other": 1}]})
    assert missing.value is None
    assert missing.status == "not reported"
    assert missing.met is None
    failed = _figure(LATENCY, {"model": []}, {"model": "failed"})
    assert failed.status == "failed"
    assert failed.met is None


def test_goals_summary_names_every_miss_with_its_figure() -> None:
    runs: dict[str, list[Any]] = {"stream": [{"throughput": {"claims_per_s": 12_000.0}}],
            "model": [{"single": {"ms": 0.05}}]}
    figures = [_figure(STREAM, runs), _figure(LATENCY, runs)]
    summary = goals_summary(figures)
    assert summary["total"] == 2
    assert summary["met"] == ["one"]
    assert summary["not_met"][0]["key"] == "stream"
    assert summary["not_met"][0]["value"] == 12_000.0


# --------------------------------------------------------------------------- markdown


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (0, "0"), (0.0421, "0.0421"), (12.345, "12.3"), (250.4, "250"),
     (123_456.7, "123,457")],
)
def test_format_number(value: float | None, text: str) -> None:
    assert format_number(value) == text


def test_markdown_table_has_a_row_per_figure_with_anchor_ratio_and_verdict() -> None:
    runs: dict[str, list[Any]] = {"stream": [{"throughput": {"claims_per_s": 20_000.0},
                        "in_process": {"claims_per_s": 80_000.0}}],
            "model": [{"single": {"ms": 0.05}}], "sk": [{"single_ms": 5.0}]}
    figures = [_figure(STREAM, runs), _figure(LATENCY, runs)]
    report = {"generated_at": "2026-01-01T00:00:00+00:00", "smoke": False, "repeats": 3,
              "machine": {"cpu_model": "Xeon", "cpus": 2, "memory_gb": 24, "python": "3.11"},
              "benchmarks": {"gateway": {"status": "failed", "error": "exit code 1: boom"}}}
    text = render_markdown(report, figures)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| Figure"))
    rows = lines[header + 2: header + 4]
    assert rows[0].startswith("| Stream | 20,000 claims/s |  |")  # one run: no worst
    assert "in-process loop: 80,000 claims/s" in rows[0]
    assert "| 0.25x |" in rows[0]
    assert rows[0].rstrip().endswith("**NO** |")
    assert "| 100x |" in rows[1]
    assert rows[1].rstrip().endswith("| yes |")
    assert "3 run(s)" in lines[0]
    assert "Measured on an unknown commit." in lines[0]
    assert "`gateway`: failed (exit code 1: boom)" in text
    # Every row has the header's column count.
    assert {row.count("|") for row in lines[header: header + 4]} == {9}


def test_markdown_escapes_pipes_in_labels() -> None:
    spec = FigureSpec("k", "a | b", "m", ("v",), "x", "higher")
    text = render_markdown({}, [_figure(spec, {"m": [{"v": 1.0}]})])
    assert "a \\| b" in text


# --------------------------------------------------------------------------- run.py shell


def test_figure_specs_are_unique_and_judge_sensibly() -> None:
    keys = [spec.key for spec in FIGURES]
    assert len(keys) == len(set(keys))
    for spec in FIGURES:
        assert spec.paths, spec.key
        if spec.goal is not None:
            # Throughputs need a floor, latencies and durations a ceiling.
            assert spec.goal.op == (">=" if spec.better == "higher" else "<="), spec.key


def test_assemble_lists_missing_modules_as_rows_and_writes_both_files(tmp_path: Path) -> None:
    outcomes = [ModuleOutcome("schema_codec", [
        {"claim_decode_validate": {"median_per_s": 150_000.0}},
        {"claim_decode_validate": {"median_per_s": 250_000.0}},
        {"claim_decode_validate": {"median_per_s": 210_000.0}},
    ], [1.0, 1.0, 1.0], [])]
    report, figures = assemble(outcomes, smoke=False, repeats=3, machine={},
                               generated_at="2026-01-01T00:00:00+00:00")
    by_key = {fig.key: fig for fig in figures}
    assert by_key["claim_decode"].value == 210_000.0
    assert by_key["claim_decode"].worst == 150_000.0
    assert by_key["claim_decode"].met is False  # met in two runs of three is not met
    assert by_key["stream"].status == "no benchmark module"
    assert len(figures) == len(FIGURES)
    json_path, md_path = write_report(report, figures, tmp_path, "latest")
    saved = json.loads(json_path.read_text())
    assert saved["benchmarks"]["schema_codec"]["median"] == {
        "claim_decode_validate": {"median_per_s": 210_000.0}}
    assert "Claim decode + validate | 210,000 claims/s" in md_path.read_text()


def test_assemble_with_only_keeps_the_selected_modules() -> None:
    _, figures = assemble([ModuleOutcome("schema_codec", [], [1.0], ["run 1: exit code 1"])],
                          smoke=True, repeats=1, machine={}, generated_at="x",
                          only=["schema_codec"])
    assert {fig.module for fig in figures} == {"schema_codec"}
    assert all(fig.status == "failed" for fig in figures)


def test_a_partial_full_run_keeps_the_other_benchmarks_with_their_dates(tmp_path: Path) -> None:
    codec_run = {"claim_decode_validate": {"median_per_s": 210_000.0}}
    earlier = [ModuleOutcome("schema_codec", [codec_run], [1.0], [])]
    report, figures = assemble(earlier, smoke=False, repeats=1,
                               machine={"load_average_start": [0.5, 0.5, 0.5]},
                               generated_at="2026-01-01T00:00:00+00:00")
    stamp_measurements(report, {}, "2026-01-01T00:00:00+00:00", report["machine"])
    json_path, _ = write_report(report, figures, tmp_path, "latest")

    gateway_run = {"max_rate": {"req_per_s": 400.0}}
    merged, carried = carry_over([ModuleOutcome("gateway", [gateway_run], [2.0], [])], json_path)
    assert [o.name for o in merged] == ["gateway", "schema_codec"]
    assert merged[1].runs == [codec_run]
    assert carried["schema_codec"]["at"] == "2026-01-01T00:00:00+00:00"
    report, figures = assemble(merged, smoke=False, repeats=3, machine={},
                               generated_at="2026-02-02T00:00:00+00:00")
    stamp_measurements(report, carried, "2026-02-02T00:00:00+00:00", {})
    assert report["benchmarks"]["gateway"]["measured"]["at"] == "2026-02-02T00:00:00+00:00"
    assert report["benchmarks"]["schema_codec"]["measured"]["at"] == "2026-01-01T00:00:00+00:00"
    by_key = {fig.key: fig for fig in figures}
    assert by_key["claim_decode"].value == 210_000.0
    markdown = render_markdown(report, figures)
    assert "Re-measured in this run: `gateway`" in markdown
    assert "`schema_codec` (2026-01-01T00:00:00+00:00, load average [0.5, 0.5, 0.5])" in markdown

    # Carried over twice: the date stays the one of the run that measured it.
    json_path, _ = write_report(report, figures, tmp_path, "latest")
    _, carried_again = carry_over([ModuleOutcome("gateway", [gateway_run], [2.0], [])],
                                  json_path)
    assert carried_again["schema_codec"]["at"] == "2026-01-01T00:00:00+00:00"


def test_discover_orders_known_benchmarks_first_and_skips_infrastructure(
        tmp_path: Path) -> None:
    for name in ("producer", "common", "run", "drills", "drill_poison", "zeta", "schema_codec",
                 "stack_harness", "helper"):
        body = "def run(smoke: bool = False) -> dict:\n    return {}\n"
        (tmp_path / f"{name}.py").write_text("x = 1\n" if name == "helper" else body)
    assert discover(tmp_path) == ["schema_codec", "producer", "zeta"]


def test_cli_defaults_and_validation() -> None:
    args = parse_args(["--smoke", "--only", "producer", "gateway"])
    assert args.smoke
    assert args.only == ["producer", "gateway"]
    assert args.repeats is None
    with pytest.raises(SystemExit):
        parse_args(["--repeats", "0"])


def test_only_modules_reading_the_shared_bootstrap_get_the_run_broker(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("bootstrap = CommonSettings().kafka_bootstrap_servers\n")
    (tmp_path / "b.py").write_text("settings = KafkaSettings(port=free_port())\n")
    assert needs_broker("a", tmp_path)
    assert not needs_broker("b", tmp_path)


def test_anchor_candidates_prefer_the_first_one_measured() -> None:
    same = AnchorSpec("same broker", "producer", ("pperf.rate",))
    other = AnchorSpec("broker benchmark", "kafka_broker", ("pperf.rate",))
    spec = FigureSpec("produce", "produce", "producer", ("produce.rate",), "claims/s", "higher",
                      anchor=(same, other))
    runs: dict[str, list[Any]] = {"producer": [{"produce": {"rate": 100.0}}],
                                  "kafka_broker": [{"pperf": {"rate": 400.0}}]}
    fig = _figure(spec, runs)
    assert (fig.anchor_label, fig.anchor_value, fig.relative) == ("broker benchmark", 400.0, 0.25)
    runs["producer"][0]["pperf"] = {"rate": 200.0}
    fig = _figure(spec, runs)
    assert (fig.anchor_label, fig.anchor_value, fig.relative) == ("same broker", 200.0, 0.5)


def test_smoke_sizes_are_measured_but_not_judged() -> None:
    runs: dict[str, list[Any]] = {"stream": [{"throughput": {"claims_per_s": 1_000.0},
                                              "in_process": {"claims_per_s": 80_000.0}}]}
    medians = {name: median_merge(r) for name, r in runs.items()}
    fig = build_figure(STREAM, medians, runs, {"stream": "ok"}, judge=False)
    assert fig.value == 1_000.0
    assert fig.relative == pytest.approx(1 / 80)
    assert fig.goal_met is None
    assert fig.relative_goal_met is None
    assert fig.met is None
    text = render_markdown({"smoke": True}, [fig])
    assert text.splitlines()[4].rstrip().endswith("| - |")
    assert "not judged" in text


# --------------------------------------------------------------------------- honest numbers

def test_a_goal_missed_in_one_run_is_not_met_and_the_worst_run_is_shown() -> None:
    runs: dict[str, list[Any]] = {"model": [{"single": {"ms": 0.05}}, {"single": {"ms": 0.2}},
                                            {"single": {"ms": 0.06}}]}
    fig = _figure(LATENCY, runs)
    assert fig.value == pytest.approx(0.06)
    assert fig.worst == pytest.approx(0.2)  # latency: the highest run is the worst
    assert fig.goal_met is False


def test_met_in_every_run_leaves_a_run_without_the_figure_open() -> None:
    goal = Goal(">=", 10)
    assert met_in_every_run(goal, [11, 12]) is True
    assert met_in_every_run(goal, [11, None]) is None
    assert met_in_every_run(goal, [9, None]) is False
    assert met_in_every_run(goal, []) is None


def test_ratios_are_paired_per_run_not_medians_of_different_runs() -> None:
    # Medians would give 30,000 / 60,000 = 0.5; run by run the figure is 0.3, 0.75 and 0.6.
    runs = {"stream": [
        {"throughput": {"claims_per_s": 30_000.0}, "in_process": {"claims_per_s": 100_000.0}},
        {"throughput": {"claims_per_s": 45_000.0}, "in_process": {"claims_per_s": 60_000.0}},
        {"throughput": {"claims_per_s": 24_000.0}, "in_process": {"claims_per_s": 40_000.0}},
    ]}
    fig = _figure(STREAM, runs)
    assert fig.relative == pytest.approx(0.6)
    assert fig.relative_worst == pytest.approx(0.3)
    assert fig.relative_goal_met is False


def test_an_anchor_from_other_runs_is_not_paired() -> None:
    assert paired_relatives([1.0, 2.0], [4.0], "higher") == []


def test_ratio_is_per_core_when_both_sides_report_their_cores() -> None:
    spec = FigureSpec(
        "stream", "Stream", "stream", ("rate",), "claims/s", "higher",
        anchor=AnchorSpec("loop", "stream", ("loop",), cores_paths=("loop_cores",)),
        cores_paths=("cores",), relative_goal=Goal(">=", 0.5))
    runs: dict[str, list[Any]] = {"stream": [
        {"rate": 33_000.0, "cores": 1.73, "loop": 50_000.0, "loop_cores": 1.0}]}
    fig = _figure(spec, runs)
    assert fig.per_core is True
    assert fig.relative == pytest.approx(33_000 / 1.73 / 50_000)  # ~0.38, not 0.66
    assert fig.relative_goal_met is False
    assert per_core_rate(10.0, 0.0) is None


FAILING = FigureSpec("p99", "p99", "gw", ("latency.p99_ms",), "ms", "lower",
                     goal=Goal("<=", 20), failure_paths=("latency.errors", "latency.timeouts"))


def test_failures_in_any_run_fail_a_latency_figure() -> None:
    runs: dict[str, list[Any]] = {"gw": [
        {"latency": {"p99_ms": 10.0, "errors": 0, "timeouts": 0}},
        {"latency": {"p99_ms": 10.0, "errors": 3, "timeouts": 0}},
    ]}
    fig = _figure(FAILING, runs)
    assert fig.failures == {"latency.errors": 3.0, "latency.timeouts": 0.0}
    assert fig.goal_met is False
    assert fig.met is False
    row = render_markdown({}, [fig]).splitlines()[4]
    assert "| errors 3 |" in row


def test_failures_not_counted_leave_a_latency_figure_unjudged() -> None:
    fig = _figure(FAILING, {"gw": [{"latency": {"p99_ms": 10.0, "errors": 0}}]})
    assert fig.failures["latency.timeouts"] is None
    assert fig.goal_met is None
    assert fig.met is None
    assert "| not counted |" in render_markdown({}, [fig])
    clean = _figure(FAILING, {"gw": [{"latency": {"p99_ms": 10.0, "errors": 0, "timeouts": 0}}]})
    assert clean.met is True


def test_the_table_names_the_commit_and_a_dirty_tree() -> None:
    assert commit_line({"git_commit": "0123456789abcdef", "git_dirty": False}) == (
        "Measured on commit 0123456789ab.")
    assert "with uncommitted changes" in commit_line({"git_commit": "abc", "git_dirty": True})
    assert "unknown" in commit_line({"git_commit": "abc"})


# --------------------------------------------------------------------------- provenance

def test_a_clean_tree_writes_the_committed_results(tmp_path: Path) -> None:
    target = results_target(tmp_path / "latest.json", Provenance("abc", dirty=False),
                            allow_dirty=False, dirty_dir=tmp_path / "dirty")
    assert target == tmp_path / "latest.json"


@pytest.mark.parametrize("dirty", [True, None])
def test_a_dirty_or_unknown_tree_refuses_unless_allowed_and_then_writes_elsewhere(
    tmp_path: Path, dirty: bool | None
) -> None:
    provenance = Provenance("abc", dirty=dirty)
    with pytest.raises(DirtyTreeError, match="--allow-dirty"):
        results_target(tmp_path / "drills.json", provenance, allow_dirty=False,
                       dirty_dir=tmp_path / "dirty")
    target = results_target(tmp_path / "drills.json", provenance, allow_dirty=True,
                            dirty_dir=tmp_path / "dirty")
    assert target == tmp_path / "dirty" / "drills.json"


def test_bench_run_refuses_the_committed_folder_from_a_dirty_tree(tmp_path: Path) -> None:
    dirty = Provenance("abc", dirty=True)
    with pytest.raises(DirtyTreeError):
        output_dir(parse_args([]), dirty)
    assert output_dir(parse_args(["--allow-dirty"]), dirty) == DIRTY_DIR / RESULTS_DIR.name
    assert output_dir(parse_args(["--smoke"]), dirty) == SMOKE_DIR  # never committed
    assert output_dir(parse_args(["--out", str(tmp_path)]), dirty) == tmp_path


def test_drills_refuse_the_committed_file_from_a_dirty_tree() -> None:
    from bench.drills import output_path
    from bench.drills import parse_args as drill_args

    dirty = Provenance("abc", dirty=True)
    with pytest.raises(DirtyTreeError):
        output_path(drill_args([]), dirty)
    elsewhere = output_path(drill_args(["--allow-dirty"]), dirty)
    assert elsewhere == RESULTS_DIR / "tmp" / "dirty" / "drills.json"
    clean = Provenance("abc", dirty=False)
    assert output_path(drill_args([]), clean) == RESULTS_DIR / "drills.json"


def test_git_provenance_reads_the_commit_and_ignores_rewritten_results(tmp_path: Path) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                       cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "latest.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    assert git_provenance(tmp_path).dirty is False
    (tmp_path / "bench" / "results" / "latest.json").write_text('{"new": 1}')
    assert git_provenance(tmp_path).dirty is False  # a run rewriting results stays clean
    (tmp_path / "code.py").write_text("x = 2\n")
    provenance = git_provenance(tmp_path)
    assert provenance.dirty is True
    assert provenance.commit is not None
    assert len(provenance.commit) == 40


def test_an_anchor_carried_over_from_an_earlier_run_is_not_paired() -> None:
    spec = FigureSpec("one", "One", "model", ("single.ms",), "ms", "lower",
                      anchor=AnchorSpec("sklearn", "sk", ("single_ms",)))
    runs: dict[str, list[Any]] = {"model": [{"single": {"ms": 0.04}}], "sk": [{"single_ms": 4.0}]}
    medians = {name: median_merge(r) for name, r in runs.items()}
    statuses = dict.fromkeys(runs, "ok")
    fig = build_figure(spec, medians, runs, statuses, carried=frozenset({"sk"}))
    assert fig.anchor_value == 4.0  # shown for reference
    assert fig.relative is None  # but no ratio across invocations
    both = build_figure(spec, medians, runs, statuses, carried=frozenset({"sk", "model"}))
    assert both.relative == pytest.approx(100.0)
