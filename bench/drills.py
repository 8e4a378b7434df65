"""Fault drills against the real stack: ``python -m bench.drills [--smoke] [--only N ...]``.

1. SIGKILL the scorer at random moments while claims stream -> exactly once, read_committed.
2. Model service stopped mid-stream -> nothing lost; the backlog drained within 5 s of ready.
3. Broker SIGKILLed mid-stream (transactions open) and restarted -> nothing lost; no manual
   restart needed.
4. Two scorer workers, one killed -> the other owns every partition within 10 s.
5. Poison flood -> every bad message dead-lettered with its reason, every good one decided.
6. Gateway fuzz -> property-based requests, no server error.
7. SIGKILL the scorer while v2 claims stream through the member stage -> exactly once, and
   every score equal to ``claimflow score-file``'s (1e-9): member state restored from Kafka.

One stack serves all drills: its own broker on free ports (never the shared one), a model
trained and promoted into a temporary CLAIMFLOW_HOME, the model service; each drill starts
its own workers, gateway and producers on fresh uuid topics. Every drill prints PASS/FAIL
with counts; the results go to ``bench/results/drills.json`` (``--smoke``: under
``bench/results/tmp/``, git-ignored). A run of some drills (``--only``) replaces those in the
result file and keeps the others, each with the time, seed and commit of its own run. Exit
code 0 only when every selected drill passed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR
from bench.drill_common import DrillContext, DrillResult
from bench.provenance import DirtyTreeError, Provenance, git_provenance, results_target
from bench.report import commit_line
from bench.stack_harness import Stack, StackError, stop_on_sigterm

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).parent.parent

DRILLS: dict[int, tuple[str, str]] = {
    1: ("bench.drill_kill_scorer", "kill-scorer"),
    2: ("bench.drill_model_outage", "model-outage"),
    3: ("bench.drill_broker_restart", "broker-restart"),
    4: ("bench.drill_rebalance", "worker-killed-rebalance"),
    5: ("bench.drill_poison", "poison-flood"),
    6: ("bench.drill_gateway_fuzz", "gateway-fuzz"),
    7: ("bench.drill_kill_scorer_v2", "kill-scorer-v2-members"),
}
# Whole-run bounds (the stack's watchdog interrupts past them); each drill bounds its own
# waits well inside.
DEADLINE_S = {True: 20 * 60, False: 90 * 60}
TRAIN_ROWS = {True: 5_000, False: 50_000}


def run_one(number: int, ctx: DrillContext) -> DrillResult:
    module_name, name = DRILLS[number]
    started = time.monotonic()
    try:
        module = importlib.import_module(module_name)
        result: DrillResult = module.run_drill(ctx, ctx.smoke)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a drill that breaks is a FAIL with its reason, not a crash
        logger.error("drill %d (%s) raised:\n%s", number, name, traceback.format_exc())
        result = DrillResult(number=number, name=name, passed=False,
                             summary="the drill could not complete",
                             error=f"{type(exc).__name__}: {exc}"[:2000])
    result.seconds = round(time.monotonic() - started, 1)
    return result


def setup_stack(stack: Stack, smoke: bool, seed: int) -> tuple[DrillContext, dict[str, float]]:
    # A reused home keeps its model, but its broker starts afresh on this run's ports.
    shutil.rmtree(stack.home / "kafka", ignore_errors=True)
    timings = {"broker_start_s": round(stack.start_broker(), 1)}
    started = time.monotonic()
    if stack.has_champion():
        logger.info("reusing the model already exported in %s", stack.home)
    else:
        stack.train_champion(rows=TRAIN_ROWS[smoke], seed=seed)
        timings["train_and_promote_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    model = stack.start_model_service()
    timings["model_service_ready_s"] = round(time.monotonic() - started, 1)
    return DrillContext(stack=stack, model=model, seed=seed, smoke=smoke), timings


def keep_logs(stack: Stack) -> Path:
    """Copy every component's log out of the stack's home (removed on close) for diagnosis."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = RESULTS_DIR / "tmp" / f"drill-logs-{stamp}"
    for source in (stack.logs, stack.home / "logs"):
        if source.exists():
            shutil.copytree(source, target / source.name, dirs_exist_ok=True)
    logger.info("logs of this run kept in %s", target)
    return target


def run_drills(numbers: Sequence[int], *, smoke: bool, seed: int, keep_home: bool,
               deadline_s: float, home: Path | None = None) -> dict[str, Any]:
    from bench.run import environment  # the same machine record as the benchmarks

    report: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "smoke": smoke, "seed": seed, "machine": environment(), "stack": {}, "drills": [],
    }
    results: list[DrillResult] = []
    try:
        with stop_on_sigterm(), Stack(deadline_s=deadline_s, keep_home=keep_home,
                                      home=home) as stack:
            report["stack"]["bootstrap"] = stack.bootstrap
            try:
                ctx, timings = setup_stack(stack, smoke, seed)
            except (StackError, OSError, TimeoutError, subprocess.TimeoutExpired) as exc:
                logger.error("the drill stack did not start: %s", exc)
                report["stack"]["error"] = str(exc)[:3000]
                results = [DrillResult(number=n, name=DRILLS[n][1], passed=False,
                                       summary="the stack did not start", error=str(exc)[:500])
                           for n in numbers]
            else:
                report["stack"].update(timings)
                try:
                    for number in numbers:
                        logger.info("=== drill %d: %s", number, DRILLS[number][1])
                        result = run_one(number, ctx)
                        results.append(result)
                        print(result.line(), flush=True)
                finally:
                    ctx.close()
                    if not all(r.passed for r in results):
                        report["logs"] = str(keep_logs(stack))
    except KeyboardInterrupt:
        # The deadline's watchdog or a signal: the stack is closed; report what we have.
        logger.error("interrupted (deadline or signal); the stack was stopped")
        report["interrupted"] = True
    report["drills"] = [{**r.as_dict(), **run_stamp(report)} for r in results]
    report["passed"] = bool(results) and len(results) == len(numbers) and all(
        r.passed for r in results)
    report["machine"]["load_average_end"] = _load()
    return report


def run_stamp(report: dict[str, Any]) -> dict[str, Any]:
    """What tells one drill's run from another's once results of several runs are merged."""
    machine = report.get("machine", {})
    return {"ran_at": report.get("generated_at"), "seed": report.get("seed"),
            "git_commit": machine.get("git_commit"), "git_dirty": machine.get("git_dirty"),
            "load_average_start": machine.get("load_average_start")}


def merge_reports(previous: dict[str, Any] | None, current: dict[str, Any],
                  selected: Sequence[int]) -> dict[str, Any]:
    """``current`` plus the drills of ``previous`` it was not asked to run (same size only):
    a run of one drill must not wipe the recorded results of the others. Each drill keeps
    the stamp of its own run; the verdict covers every drill in the merged report."""
    if not previous or previous.get("smoke") != current.get("smoke"):
        return current
    kept = [{**run_stamp(previous), **drill} for drill in previous.get("drills", [])
            if drill.get("number") not in selected]
    if not kept:
        return current
    drills = sorted([*kept, *current["drills"]], key=lambda drill: drill["number"])
    return {**current, "drills": drills,
            "passed": bool(current["passed"]) and all(d.get("passed") for d in kept),
            "kept_from_earlier_runs": sorted(d["number"] for d in kept)}


def _load() -> list[float] | None:
    from bench.run import _load_average

    return _load_average()


def render_markdown(report: dict[str, Any]) -> str:
    """The drills table for the README: verdict, what was checked, the key numbers."""
    machine = report.get("machine", {})
    lines = [
        f"Fault drills ({'smoke sizes' if report.get('smoke') else 'full sizes'}), "
        f"{report.get('generated_at', '?')}, seed {report.get('seed', '?')}; "
        f"{machine.get('cpu_model', '?')}, {machine.get('cpus', '?')} CPUs, load average at "
        f"start {machine.get('load_average_start', '?')}. " + commit_line(machine),
        "",
        "| # | Drill | Result | What happened | Checks failed |",
        "|---:|---|:---:|---|---|",
    ]
    runs: dict[str, list[int]] = {}
    for drill in report.get("drills", []):
        runs.setdefault(str(drill.get("ran_at", report.get("generated_at", "?"))), []).append(
            drill["number"])
        failed = [name for name, ok in drill.get("checks", {}).items() if not ok]
        if drill.get("error"):
            failed.append(f"error: {drill['error']}")
        text = " ".join(str(drill.get("summary", "")).split()).replace("|", "\\|")
        why = "; ".join(failed).replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {drill['number']} | {drill['name']} | "
                     f"{'PASS' if drill.get('passed') else '**FAIL**'} | {text} | {why} |")
    if len(runs) > 1:
        lines += ["", "Merged from several runs: " + "; ".join(
            f"drill{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))} at {at}"
            for at, numbers in sorted(runs.items())) + "."]
    if report.get("interrupted"):
        lines += ["", "The run was interrupted (deadline or signal) before every drill ran."]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.drills", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small sizes (CI)")
    parser.add_argument("--only", nargs="+", type=int, metavar="N", choices=sorted(DRILLS),
                        help="run only these drills (numbers)")
    parser.add_argument("--seed", type=int, default=20261126, help="seed of every random choice")
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: bench/results/drills.json; smoke: "
                             "bench/results/tmp/drills-smoke.json)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="from a tree with uncommitted changes, write under "
                             "bench/results/tmp/dirty/ instead of refusing")
    parser.add_argument("--keep-home", action="store_true",
                        help="keep the temporary CLAIMFLOW_HOME (logs of every component)")
    parser.add_argument("--home", type=Path, default=None,
                        help="use (and keep) this CLAIMFLOW_HOME; a model exported there by an "
                             "earlier run is reused instead of training again")
    parser.add_argument("--deadline", type=float, default=None,
                        help="stop everything after this many seconds (default: 20 min smoke, "
                             "90 min full)")
    return parser.parse_args(argv)


def output_path(args: argparse.Namespace, provenance: Provenance) -> Path:
    """The result file; the committed one only from a clean tree (see bench.provenance)."""
    committed = RESULTS_DIR / "drills.json"
    out: Path = args.out or (RESULTS_DIR / "tmp" / "drills-smoke.json" if args.smoke
                             else committed)
    if out.resolve() != committed.resolve():
        return out
    return results_target(committed, provenance, allow_dirty=args.allow_dirty,
                          dirty_dir=RESULTS_DIR / "tmp" / "dirty")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "hypothesis"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    numbers = sorted(set(args.only or DRILLS))
    try:
        # Checked before the drills run: a refusal after an hour of drills helps nobody.
        out = output_path(args, git_provenance(REPO_ROOT))
    except DirtyTreeError as exc:
        print(exc, file=sys.stderr)
        return 2
    report = run_drills(numbers, smoke=args.smoke, seed=args.seed, keep_home=args.keep_home,
                        deadline_s=args.deadline or DEADLINE_S[args.smoke],
                        home=args.home.resolve() if args.home else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.only and out.exists():
        report = merge_reports(json.loads(out.read_text(encoding="utf-8")), report, numbers)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(render_markdown(report), encoding="utf-8")
    ran = [d for d in report["drills"] if d["number"] in numbers]
    passed = bool(ran) and len(ran) == len(numbers) and all(d["passed"] for d in ran)
    print(f"{'PASS' if passed else 'FAIL'}: "
          f"{sum(d['passed'] for d in ran)}/{len(numbers)} drills passed; "
          f"results in {out}", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
