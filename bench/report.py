"""Pure core of the benchmark aggregator: medians over repeated runs, figures beside their
anchors, goals, and the Markdown table. No I/O here; ``bench.run`` is the shell.

A benchmark module returns a free-form JSON-able dict. The aggregator runs it K times and
takes the median of every numeric leaf (:func:`median_merge`); headline figures are then
picked out of that median tree by dotted paths (:class:`FigureSpec`), so each module stays
free to report whatever detail it wants.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Better = Literal["higher", "lower"]
Op = Literal[">=", "<="]


@dataclass(frozen=True)
class Goal:
    op: Op
    target: float

    def met(self, value: float) -> bool:
        return value >= self.target if self.op == ">=" else value <= self.target

    def describe(self, unit: str = "") -> str:
        sign = "≥" if self.op == ">=" else "≤"
        suffix = unit if unit == "x" else f" {unit}" if unit else ""
        return f"{sign} {format_number(self.target)}{suffix}"


@dataclass(frozen=True)
class AnchorSpec:
    """The comparison point measured in the same run (maybe by another module).

    ``cores_paths``: where the anchor's run reports how many CPU cores it used; with the
    figure's own, the ratio is taken per core (a pipeline on 1.7 cores against a one-core
    loop is otherwise flattered by the cores it used).
    """

    label: str
    module: str
    paths: tuple[str, ...]
    cores_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class FigureSpec:
    """One headline figure: where to find it, how to judge it.

    ``paths`` are tried in order (the first one present wins) so that a module may rename a
    key without silently dropping the figure: a figure that resolves nowhere is reported as
    missing, never skipped.
    """

    key: str
    label: str
    module: str
    paths: tuple[str, ...]
    unit: str
    better: Better
    # One anchor, or candidates in order of preference (the first one measured wins, e.g.
    # the broker ceiling measured on the same broker before the one measured on another).
    anchor: AnchorSpec | tuple[AnchorSpec, ...] | None = None
    goal: Goal | None = None
    # Goal on the relative figure (value vs anchor, > 1 = better than the anchor).
    relative_goal: Goal | None = None
    note: str = ""
    # Some figures are converted for readability (e.g. seconds reported as ms).
    scale: float = 1.0
    anchor_unit: str | None = None
    anchor_scale: float = 1.0
    # Counts that must be 0 in every run for the figure to meet its goal (errors, timeouts,
    # load threads that died): a latency measured over the requests that succeeded says
    # nothing about the ones that did not.
    failure_paths: tuple[str, ...] = ()
    # CPU cores the figure's run used (see AnchorSpec.cores_paths).
    cores_paths: tuple[str, ...] = ()


@dataclass
class Figure:
    key: str
    label: str
    module: str
    unit: str
    better: Better
    value: float | None
    low: float | None = None
    high: float | None = None
    worst: float | None = None
    samples: int = 0
    source_path: str | None = None
    anchor_label: str | None = None
    anchor_value: float | None = None
    anchor_unit: str | None = None
    relative: float | None = None
    relative_worst: float | None = None
    per_core: bool = False
    failures: dict[str, float | None] = field(default_factory=dict)
    goal: str | None = None
    goal_met: bool | None = None
    relative_goal: str | None = None
    relative_goal_met: bool | None = None
    status: str = "ok"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        """Every goal on this figure met in every run (None: no goal, or not measured)."""
        verdicts = [v for v in (self.goal_met, self.relative_goal_met) if v is not None]
        if self.goal is None and self.relative_goal is None:
            return None
        if self.value is None or not verdicts:
            return None
        if False in verdicts:
            return False
        # A goal that could not be judged (failures not reported) is not a met goal.
        if self.goal is not None and self.goal_met is None:
            return None
        return True

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "label": self.label, "module": self.module, "unit": self.unit,
            "better": self.better, "value": self.value, "min": self.low, "max": self.high,
            "worst": self.worst, "samples": self.samples, "source_path": self.source_path,
            "anchor": None if self.anchor_label is None else {
                "label": self.anchor_label, "value": self.anchor_value, "unit": self.anchor_unit,
            },
            "relative": self.relative, "relative_worst": self.relative_worst,
            "per_core": self.per_core, "failures": self.failures,
            "goal": self.goal, "goal_met": self.goal_met,
            "relative_goal": self.relative_goal, "relative_goal_met": self.relative_goal_met,
            "met": self.met, "status": self.status, "note": self.note,
        }


# --------------------------------------------------------------------------- medians

def is_number(value: Any) -> bool:
    # bool is an int subclass; a True/False flag is not a measurement.
    return isinstance(value, int | float) and not isinstance(value, bool)


def median_merge(runs: Sequence[Any]) -> Any:
    """Merge repeated results into one tree: median of every numeric leaf.

    Dicts merge key by key (a key missing from some runs uses the runs that have it);
    numbers become their median (NaN/inf samples ignored); booleans take the majority
    (a tie is False, the cautious answer); equal-length lists merge element-wise; anything
    else keeps the first run's value.
    """
    present = [run for run in runs if run is not None]
    if not present:
        return None
    first = present[0]
    if all(isinstance(run, Mapping) for run in present):
        keys: list[str] = []
        for run in present:
            keys.extend(key for key in run if key not in keys)
        return {key: median_merge([run[key] for run in present if key in run]) for key in keys}
    if all(is_number(run) for run in present):
        finite = [float(run) for run in present if math.isfinite(run)]
        if not finite:
            return first
        med = statistics.median(finite)
        if all(isinstance(run, int) for run in present) and med == int(med):
            return int(med)
        return med
    if all(isinstance(run, bool) for run in present):
        return sum(present) * 2 > len(present)
    if all(isinstance(run, list) for run in present) and len({len(run) for run in present}) == 1:
        return [median_merge(list(column)) for column in zip(*present, strict=True)]
    return first


def resolve(tree: Any, path: str) -> Any:
    """Follow a dotted path (``a.b.0.c``) through dicts and lists; None when absent."""
    node = tree
    for part in path.split("."):
        if isinstance(node, Mapping):
            if part not in node:
                return None
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def first_number(tree: Any, paths: Sequence[str]) -> tuple[str | None, float | None]:
    for path in paths:
        value = resolve(tree, path)
        if is_number(value) and math.isfinite(value):
            return path, float(value)
    return None, None


def relative(value: float | None, anchor: float | None, better: Better) -> float | None:
    """Value against its anchor, oriented so that > 1 means better than the anchor.

    Throughput (higher is better): value / anchor. Latency or duration (lower is better):
    anchor / value, i.e. the speed-up over the anchor.
    """
    if value is None or anchor is None or value <= 0 or anchor <= 0:
        return None
    return value / anchor if better == "higher" else anchor / value


# --------------------------------------------------------------------------- figures

def per_run(runs: Sequence[Any], path: str, scale: float = 1.0) -> list[float | None]:
    """The value at ``path`` in each run, in run order (None where a run lacks it)."""
    values: list[float | None] = []
    for run in runs:
        value = resolve(run, path)
        finite = is_number(value) and math.isfinite(value)
        values.append(float(value) * scale if finite else None)
    return values


def worst(values: Sequence[float], better: Better) -> float | None:
    if not values:
        return None
    return min(values) if better == "higher" else max(values)


def met_in_every_run(goal: Goal, values: Sequence[float | None]) -> bool | None:
    """A goal is met when every run meets it; a run that did not measure it leaves it open."""
    if not values:
        return None
    if any(v is not None and not goal.met(v) for v in values):
        return False
    return None if any(v is None for v in values) else True


def per_core_rate(value: float | None, cores: float | None) -> float | None:
    if value is None or cores is None or cores <= 0:
        return None
    return value / cores


def paired_relatives(values: Sequence[float | None], anchors: Sequence[float | None],
                     better: Better) -> list[float | None]:
    """Each run's figure against the anchor of the same run (never medians of other runs)."""
    if len(values) != len(anchors):
        return []  # not the same runs (e.g. one side carried over): no honest pairing
    return [relative(v, a, better) for v, a in zip(values, anchors, strict=True)]


def failure_counts(spec: FigureSpec, runs: Sequence[Any]) -> dict[str, float | None]:
    """Worst run's count per failure path (None: some run did not report it)."""
    counts: dict[str, float | None] = {}
    for path in spec.failure_paths:
        values = per_run(runs, path)
        counts[path] = None if not values or None in values else max(
            v for v in values if v is not None)
    return counts


def judge_goal(spec: FigureSpec, values: Sequence[float | None],
               failures: Mapping[str, float | None]) -> bool | None:
    assert spec.goal is not None
    verdict = met_in_every_run(spec.goal, values)
    if any(count is not None and count > 0 for count in failures.values()):
        return False
    if any(count is None for count in failures.values()):
        return None if verdict is not False else False
    return verdict


def build_figure(
    spec: FigureSpec,
    medians: Mapping[str, Any],
    runs: Mapping[str, Sequence[Any]],
    statuses: Mapping[str, str],
    *,
    judge: bool = True,
    carried: frozenset[str] = frozenset(),
) -> Figure:
    """Pick one figure (and its anchor) out of the per-module runs.

    ``carried``: modules whose runs come from an earlier invocation; never paired with an
    anchor measured now (or the other way round).

    The figure is the median over runs and its worst run; goals are judged on every run.
    ``judge=False`` (smoke sizes) measures without judging: goals are set for full sizes.
    """
    figure = Figure(key=spec.key, label=spec.label, module=spec.module, unit=spec.unit,
                    better=spec.better, value=None, note=spec.note)
    if spec.goal is not None:
        figure.goal = spec.goal.describe(spec.unit)
    if spec.relative_goal is not None:
        figure.relative_goal = "relative " + spec.relative_goal.describe("x")
    status = statuses.get(spec.module, "not run")
    if status != "ok":
        figure.status = status
        return figure
    path, value = first_number(medians.get(spec.module), spec.paths)
    if path is None or value is None:
        figure.status = "not reported"
        return figure
    figure.source_path = path
    figure.value = value * spec.scale
    module_runs = runs.get(spec.module, ())
    values = per_run(module_runs, path, spec.scale)
    measured = [v for v in values if v is not None]
    figure.samples = len(measured)
    if measured:
        figure.low, figure.high = min(measured), max(measured)
        figure.worst = worst(measured, spec.better)
    figure.failures = failure_counts(spec, module_runs)
    if spec.goal is not None and judge:
        figure.goal_met = judge_goal(spec, values or [figure.value], figure.failures)
    _place_anchor(figure, spec, values, medians, runs, statuses, judge, carried)
    return figure


def _place_anchor(figure: Figure, spec: FigureSpec, values: Sequence[float | None],
                  medians: Mapping[str, Any], runs: Mapping[str, Sequence[Any]],
                  statuses: Mapping[str, str], judge: bool, carried: frozenset[str]) -> None:
    candidates = (spec.anchor,) if isinstance(spec.anchor, AnchorSpec) else spec.anchor or ()
    if not candidates:
        return
    figure.anchor_label = candidates[0].label
    figure.anchor_unit = spec.anchor_unit or spec.unit
    for candidate in candidates:
        if statuses.get(candidate.module) != "ok":
            continue
        path, anchor = first_number(medians.get(candidate.module), candidate.paths)
        if path is None or anchor is None:
            continue
        figure.anchor_label = candidate.label
        figure.anchor_value = anchor * spec.anchor_scale
        anchors = per_run(runs.get(candidate.module, ()), path, spec.anchor_scale)
        same_runs = (spec.module in carried) == (candidate.module in carried)
        ratios = _ratios(figure, spec, candidate, values, anchors, runs) if same_runs else []
        break
    else:
        return
    measured = [r for r in ratios if r is not None]
    if measured:
        figure.relative = statistics.median(measured)
        figure.relative_worst = min(measured)  # oriented: > 1 is better, so min is worst
    if spec.relative_goal is not None and judge:
        figure.relative_goal_met = met_in_every_run(spec.relative_goal, ratios)


def _ratios(figure: Figure, spec: FigureSpec, anchor: AnchorSpec,
            values: Sequence[float | None], anchors: Sequence[float | None],
            runs: Mapping[str, Sequence[Any]]) -> list[float | None]:
    """Per-run ratios, per core when both sides report the cores they used."""
    if spec.cores_paths and anchor.cores_paths:
        figure.per_core = True
        cores = _per_run_first(runs.get(spec.module, ()), spec.cores_paths)
        anchor_cores = _per_run_first(runs.get(anchor.module, ()), anchor.cores_paths)
        values = [per_core_rate(v, c) for v, c in zip(values, cores, strict=True)]
        anchors = [per_core_rate(a, c) for a, c in zip(anchors, anchor_cores, strict=True)]
    return paired_relatives(values, anchors, spec.better)


def _per_run_first(runs: Sequence[Any], paths: Sequence[str]) -> list[float | None]:
    return [first_number(run, paths)[1] for run in runs]


def goals_summary(figures: Sequence[Figure]) -> dict[str, Any]:
    with_goal = [f for f in figures if f.goal is not None or f.relative_goal is not None]
    return {
        "total": len(with_goal),
        "met": [f.key for f in with_goal if f.met is True],
        "not_met": [
            {"key": f.key, "label": f.label, "value": f.value, "unit": f.unit,
             "goal": f.goal, "relative": f.relative, "relative_goal": f.relative_goal}
            for f in with_goal if f.met is False
        ],
        "unknown": [{"key": f.key, "status": f.status} for f in with_goal if f.met is None],
    }


# --------------------------------------------------------------------------- markdown

def format_number(value: float | None) -> str:
    """Readable figure: thousands separators for big numbers, 3 significant digits else."""
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude == 0:
        return "0"
    return f"{value:.3g}"


def format_with_unit(value: float | None, unit: str | None) -> str:
    text = format_number(value)
    return text if value is None or not unit else f"{text} {unit}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _verdict(figure: Figure, judged: bool = True) -> str:
    met = figure.met
    if met is None:
        if figure.goal is None and figure.relative_goal is None:
            return ""
        return "?" if judged else "-"
    return "yes" if met else "**NO**"


def carried_over_note(report: Mapping[str, Any]) -> list[str]:
    """For a report merged from several runs: which benchmarks come from an earlier one."""
    carried = report.get("carried_over") or []
    if not carried:
        return []
    benchmarks = report.get("benchmarks", {})
    rerun = [name for name in benchmarks if name not in carried]
    parts = []
    for name in carried:
        measured = benchmarks.get(name, {}).get("measured", {})
        parts.append(f"`{name}` ({measured.get('at', '?')}, load average "
                     f"{measured.get('load_average_start', '?')})")
    return ["", f"Re-measured in this run: {', '.join(f'`{n}`' for n in rerun)}. Carried over "
            f"from earlier full runs: {'; '.join(parts)}."]


def commit_line(machine: Mapping[str, Any]) -> str:
    """Which code the figures describe (a table that does not say is not checkable)."""
    commit = machine.get("git_commit")
    if not commit:
        return "Measured on an unknown commit."
    dirty = machine.get("git_dirty")
    state = (" with uncommitted changes" if dirty else "" if dirty is False
             else " (uncommitted changes unknown)")
    return f"Measured on commit {str(commit)[:12]}{state}."


def _failures_cell(fig: Figure) -> str:
    if not fig.failures:
        return ""
    if any(count is None for count in fig.failures.values()):
        return "not counted"
    total = sum(count or 0 for count in fig.failures.values())
    if not total:
        return "0"
    return ", ".join(f"{path.rsplit('.', 1)[-1]} {format_number(count)}"
                     for path, count in fig.failures.items() if count)


def _relative_cell(fig: Figure) -> str:
    if fig.relative is None:
        return ""
    text = f"{fig.relative:.3g}x"
    if fig.relative_worst is not None and fig.relative_worst != fig.relative:
        text += f" (worst {fig.relative_worst:.3g}x)"
    return text + (" per core" if fig.per_core else "")


def _row(fig: Figure, judged: bool) -> str:
    if fig.value is None:
        measured, worst_text = f"— ({fig.status})", ""
    else:
        measured = format_with_unit(fig.value, fig.unit)
        worst_text = "" if fig.samples < 2 else format_number(fig.worst)
    anchor = ""
    if fig.anchor_label is not None:
        anchor = f"{fig.anchor_label}: {format_with_unit(fig.anchor_value, fig.anchor_unit)}"
    goals = [g for g in (fig.goal, fig.relative_goal) if g]
    label = fig.label + (f" ({fig.note})" if fig.note else "")
    return (f"| {_escape(label)} | {_escape(measured)} | {worst_text} | {_failures_cell(fig)} "
            f"| {_escape(anchor)} | {_relative_cell(fig)} | {_escape('; '.join(goals))} "
            f"| {_verdict(fig, judged)} |")


def render_markdown(report: Mapping[str, Any], figures: Sequence[Figure]) -> str:
    """The README table: one row per headline figure, beside its anchor from the same run."""
    machine = report.get("machine", {})
    lines = [
        f"Benchmarks ({'smoke sizes' if report.get('smoke') else 'full sizes'}), "
        f"{report.get('generated_at', '?')}, {report.get('repeats', '?')} run(s); "
        f"{machine.get('cpu_model', '?')}, {machine.get('cpus', '?')} CPUs, "
        f"{machine.get('memory_gb', '?')} GB RAM, Python {machine.get('python', '?')}, "
        f"load average at start {machine.get('load_average_start', '?')}. "
        + commit_line(machine),
        *carried_over_note(report),
        "",
        "| Figure | Median | Worst run | Failures (worst run) | Anchor (same run) "
        "| vs anchor (paired per run) | Goal | Met in every run |",
        "|---|---:|---:|---:|---|---:|---|:---:|",
    ]
    lines.extend(_row(fig, not report.get("smoke")) for fig in figures)
    lines.append("")
    lines.append(
        "vs anchor: > 1x is better than the anchor (throughput: figure / anchor; "
        "latency and time: anchor / figure), taken in each run against the anchor of that "
        "run; the median of those ratios and the worst. Met: every goal met in every run, "
        "with no failure counted."
        + (" Smoke sizes are not judged against the goals (set for full sizes)."
           if report.get("smoke") else "")
    )
    failed = {name: info for name, info in report.get("benchmarks", {}).items()
              if info.get("status") != "ok"}
    if failed:
        lines.append("")
        lines.append("Benchmarks that did not complete: " + "; ".join(
            f"`{name}`: {_escape(str(info.get('status')))}"
            + (f" ({_escape(str(info.get('error'))[:160])})" if info.get("error") else "")
            for name, info in failed.items()))
    return "\n".join(lines) + "\n"
