"""Run every benchmark of the project and write one report: ``python -m bench.run``.

    python -m bench.run [--smoke] [--only NAME ...] [--repeats K] [--out DIR]

Each benchmark module (``bench/<name>.py`` with ``run(smoke) -> dict``) runs K times, each
time in a fresh subprocess (no state leaks between runs, a crash or a hang cannot take the
aggregator down, a timeout kills the whole process group). The median of every numeric leaf
is kept; headline figures (:data:`FIGURES`) are placed beside their anchors from the same
run, with goals from the issues. Full runs write ``bench/results/latest.json`` and
``latest.md`` (committed); ``--smoke`` runs write under ``bench/results/tmp/`` (git-ignored),
so CI never overwrites the committed results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import import_module, metadata
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, machine_info
from bench.provenance import DirtyTreeError, Provenance, git_provenance, results_target
from bench.report import (
    AnchorSpec,
    Figure,
    FigureSpec,
    Goal,
    build_figure,
    goals_summary,
    median_merge,
    render_markdown,
)

logger = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).parent
REPO_ROOT = BENCH_DIR.parent
SMOKE_DIR = RESULTS_DIR / "tmp"
DIRTY_DIR = SMOKE_DIR / "dirty"

# Run order: cheap and self-contained first; the broker's ceiling before the producer that
# is compared with it.
BENCHMARKS: tuple[str, ...] = (
    "schema_codec",
    "kafka_broker",
    "producer",
    "training",
    "model_scoring",
    "stream_scoring",
    "stream_members",
    "member_restore",
    "gateway",
)
# Modules that repeat and pair their own runs inside one child (shadow_scoring: plain and
# shadowed backlogs in rotating order, three pairs): one child run each, not K.
REPEATS_INSIDE = frozenset({"shadow_scoring"})
# Modules in bench/ that are infrastructure, not benchmarks.
NOT_BENCHMARKS = frozenset({"__init__", "__main__", "common", "report", "run", "drills",
                            "stack_harness", "member_common",
                            # The quixstreams A/B runs from its own virtualenv: `make bench-ab`.
                            "ab_quixstreams", "ab_member_sides"})

EXTRA_VERSIONS = ("pydantic-settings", "pandas", "flask", "flask-openapi3", "granian",
                  "httpx", "orjson", "hypothesis", "schemathesis")

PPERF = AnchorSpec(
    "Kafka ProducerPerformance (~200 B records)", "kafka_broker",
    ("producer_performance.records_per_s",),
)
# The ceiling measured on the same broker as the producer, when the producer benchmark
# measures it; else the kafka_broker benchmark's (same run, its own broker).
PPERF_SAME_BROKER = AnchorSpec(
    "Kafka ProducerPerformance, same broker, same producer settings, records of the claims' "
    "mean size", "producer",
    ("producer_performance.records_per_s", "produce.producer_performance.records_per_s"),
)

# Counts that fail a latency figure when not 0 in every run: the percentiles are over the
# answers that arrived, so what did not arrive has to be judged beside them.
STREAM_LATENCY_FAILURES = ("latency.missing", "latency.producer_errors")
GATEWAY_LATENCY_FAILURES = ("latency.errors", "latency.timeouts", "latency.unanswered",
                            "latency.load_threads_lost")

IN_PROCESS_LOOP = AnchorSpec(
    "in-process decode + score + encode loop (one process, about one core)", "stream_scoring",
    ("in_process.claims_per_s",), cores_paths=("in_process.cpu_cores",))


MEMBER_LOOP = AnchorSpec(
    "in-process decode + member step + the model's path (one process)", "stream_members",
    ("in_process.claims_per_s",), cores_paths=("in_process.cpu_cores",))


def stream_figure(key: str, setup_label: str, setup: str) -> FigureSpec:
    """Claims -> committed decisions from the user's side: from the first claim produced (by
    ``claimflow produce``, while the workers score) to the last committed claim offset."""
    run = f"throughput_runs.{setup}"
    return FigureSpec(
        key, f"Stream, first produce -> last committed decision, {setup_label}",
        "stream_scoring", (f"{run}.claims_per_s",), "claims/s", "higher",
        anchor=IN_PROCESS_LOOP, cores_paths=(f"{run}.cpu_cores.machine",),
        goal=Goal(">=", 30_000), relative_goal=Goal(">=", 0.5),
    )


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "claim_decode", "Claim decode + validate", "schema_codec",
        ("claim_decode_validate.median_per_s",), "claims/s", "higher",
        goal=Goal(">=", 200_000),
    ),
    FigureSpec(
        "decision_encode", "Decision encode", "schema_codec",
        ("decision_encode.median_per_s",), "decisions/s", "higher",
    ),
    FigureSpec(
        "broker_start", "Local broker start (until metadata answers)", "kafka_broker",
        ("broker_start.seconds",), "s", "lower",
    ),
    FigureSpec(
        "broker_ceiling", "Kafka ProducerPerformance ceiling (~200 B records; linger 5 ms, "
        "256 KB batches, no compression: not claimflow's producer settings)", "kafka_broker",
        PPERF.paths, "records/s", "higher",
    ),
    FigureSpec(
        "produce", "claimflow produce of 500k claims, encode + validate + send until all "
        "acknowledged (idempotent, acks=all)", "producer",
        ("produce.pipeline_claims_per_s",),
        "claims/s", "higher", anchor=PPERF_SAME_BROKER, goal=Goal(">=", 100_000),
        anchor_unit="records/s",
    ),
    FigureSpec(
        "produce_send", "claimflow produce, send phase only (claims already encoded)",
        "producer", ("produce.claims_per_s",), "claims/s", "higher",
        anchor=PPERF_SAME_BROKER, anchor_unit="records/s",
    ),
    FigureSpec(
        "generate", "generate realistic claims to CSV (1M rows)", "producer",
        ("generate.seconds",), "s", "lower",
        goal=Goal("<=", 5.0),
    ),
    FigureSpec(
        "generate_v2", "generate realistic v2 claims to JSON Lines (1M claims)", "producer",
        ("generate_v2.seconds",), "s", "lower",
        goal=Goal("<=", 10.0),
    ),
    FigureSpec(
        "produce_v2", "claimflow produce --from-file of 500k v2 claims (read, validate, send)",
        "producer",
        ("produce_v2.pipeline_claims_per_s",),
        "claims/s", "higher", goal=Goal(">=", 100_000),
    ),
    FigureSpec(
        "training", "train on 100k realistic rows incl. MLflow logging + registration",
        "training",
        ("train.seconds",), "s", "lower",
        goal=Goal("<=", 10.0),
    ),
    FigureSpec(
        "score_one", "Model: one claim, in process, the service's path (score, decision, "
        "reasons, JSON answer)", "model_scoring",
        ("single_full.ms",), "ms", "lower", goal=Goal("<=", 0.1),
    ),
    FigureSpec(
        "score_batch", "Model: batches of 500, in process, the service's path (scores, "
        "decisions, reasons, JSON)", "model_scoring",
        ("batch_full.claims_per_s",), "claims/s", "higher", goal=Goal(">=", 200_000),
    ),
    FigureSpec(
        "kernel_one", "Forest kernel only: one claim's anomaly score (no decision, reasons "
        "or JSON)", "model_scoring", ("single.ms",), "ms", "lower",
        anchor=AnchorSpec("scikit-learn score_samples, one claim", "model_scoring",
                          ("sklearn_single.ms",)),
    ),
    FigureSpec(
        "kernel_batch", "Forest kernel only: anomaly scores in batches of 500 (no decisions, "
        "reasons or JSON)", "model_scoring", ("batch.claims_per_s",), "claims/s", "higher",
        anchor=AnchorSpec("scikit-learn score_samples, same batches", "model_scoring",
                          ("sklearn_batch.claims_per_s",)),
    ),
    FigureSpec(
        "service_one", "Model service: one claim over HTTP", "model_scoring",
        ("service_single.ms",), "ms", "lower",
        anchor=AnchorSpec("scikit-learn score_samples, one claim", "model_scoring",
                          ("sklearn_single.ms",)),
    ),
    FigureSpec(
        "service_batch", "Model service: batches of 500 over HTTP", "model_scoring",
        ("service_batch.claims_per_s",), "claims/s", "higher",
        anchor=AnchorSpec("scikit-learn score_samples, in process", "model_scoring",
                          ("sklearn_batch.claims_per_s",)),
    ),
    stream_figure("stream", "README default (claimflow score --instances 2, worker defaults)",
                  "readme_default"),
    stream_figure("stream_tuned", "tuned (2 workers, batches of up to 2,000)", "tuned"),
    FigureSpec(
        "e2e_p50", "End-to-end latency p50 at 1,000 claims/s (produce -> committed decision)",
        "stream_scoring", ("latency.p50_ms",), "ms", "lower",
        goal=Goal("<=", 30), failure_paths=STREAM_LATENCY_FAILURES,
    ),
    FigureSpec(
        "e2e_p99", "End-to-end latency p99 at 1,000 claims/s", "stream_scoring",
        ("latency.p99_ms",), "ms", "lower",
        goal=Goal("<=", 100), failure_paths=STREAM_LATENCY_FAILURES,
    ),
    FigureSpec(
        "stream_members", "Stream with member features (v2 claims, v2-history champion), "
        "first produce -> last committed decision, README default (2 workers)",
        "stream_members", ("throughput_runs.readme_default.claims_per_s",), "claims/s",
        "higher", anchor=MEMBER_LOOP,
        cores_paths=("throughput_runs.readme_default.cpu_cores.machine",),
        goal=Goal(">=", 30_000),
    ),
    FigureSpec(
        "stream_members_tuned", "Stream with member features, tuned (2 workers, batches of "
        "up to 2,000)", "stream_members", ("throughput_runs.tuned.claims_per_s",), "claims/s",
        "higher", anchor=MEMBER_LOOP, cores_paths=("throughput_runs.tuned.cpu_cores.machine",),
        goal=Goal(">=", 30_000),
    ),
    FigureSpec(
        "e2e_members_p50", "Stream with member features: end-to-end latency p50 at 1,000 "
        "claims/s", "stream_members", ("latency.p50_ms",), "ms", "lower",
        goal=Goal("<=", 30), failure_paths=STREAM_LATENCY_FAILURES,
    ),
    FigureSpec(
        "e2e_members_p99", "Stream with member features: end-to-end latency p99 at 1,000 "
        "claims/s", "stream_members", ("latency.p99_ms",), "ms", "lower",
        goal=Goal("<=", 100), failure_paths=STREAM_LATENCY_FAILURES,
    ),
    FigureSpec(
        "member_restore", "Worker with 1M members' state SIGKILLed: replacement's process "
        "start -> its first committed batch", "member_restore",
        ("replacement.start_to_first_commit_s",), "s", "lower", goal=Goal("<=", 10),
    ),
    FigureSpec(
        "member_restore_static", "... the same with static group membership "
        "(SCORER_STATIC_MEMBERSHIP=true, opt-in): the replacement rejoins under the killed "
        "worker's instance id", "member_restore",
        ("static.replacement.start_to_first_commit_s",), "s", "lower", goal=Goal("<=", 10),
    ),
    FigureSpec(
        "member_restore_read", "... of which restoring 1M members after the assignment (the "
        "worker's \"restored\" log line; with the default prefetch, what was not read before "
        "it plus the catch-up)", "member_restore", ("replacement.restore_s",), "s", "lower",
    ),
    # The module pairs its own runs (each shadowed run against the faster of that repeat's
    # two unshadowed ones, in rotating order) and reports the worst paired cost: the goal is
    # judged on that, not on a median that one bad pair hides.
    FigureSpec(
        "shadow_cost", "Shadow scoring: stream throughput lost with a challenger shadowed "
        "(2 workers, 300k-claim backlog; worst of the module's paired runs, each against the "
        "faster run without shadow records)", "shadow_scoring",
        ("cost.worst",), "%", "lower", scale=100.0, goal=Goal("<=", 25),
    ),
    FigureSpec(
        "gateway_p50",
        "Gateway single-claim POST p50 at 200 req/s (decided by the stream worker)",
        "gateway", ("latency.p50_ms",), "ms", "lower",
        anchor=AnchorSpec("model service /score p50, called directly", "gateway",
                          ("model_call.p50_ms",)),
        goal=Goal("<=", 50), failure_paths=GATEWAY_LATENCY_FAILURES,
    ),
    FigureSpec(
        "gateway_p99", "Gateway single-claim POST p99 at 200 req/s", "gateway",
        ("latency.p99_ms",), "ms", "lower",
        anchor=AnchorSpec("model service /score p99, called directly", "gateway",
                          ("model_call.p99_ms",)),
        goal=Goal("<=", 150), failure_paths=GATEWAY_LATENCY_FAILURES,
    ),
    FigureSpec(
        "gateway_max", "Gateway maximum single-claim req/s", "gateway",
        ("max_rate.req_per_s",), "req/s", "higher",
        goal=Goal(">=", 1_000), failure_paths=("max_rate.errors",),
    ),
)


@dataclass
class ModuleOutcome:
    name: str
    runs: list[dict[str, Any]]
    seconds: list[float]
    errors: list[str]

    @property
    def status(self) -> str:
        if self.runs:
            return "ok"
        return "failed" if self.errors else "not run"


# --------------------------------------------------------------------------- discovery

def discover(bench_dir: Path = BENCH_DIR) -> list[str]:
    """Known benchmarks in run order, then any other ``bench/<name>.py`` that defines run()."""
    found = []
    for path in sorted(bench_dir.glob("*.py")):
        name = path.stem
        if name in NOT_BENCHMARKS or name.startswith("drill") or name.startswith("_"):
            continue
        if re.search(r"^def run\(", path.read_text(encoding="utf-8"), re.MULTILINE):
            found.append(name)
    known = [name for name in BENCHMARKS if name in found]
    return known + [name for name in found if name not in BENCHMARKS]


# --------------------------------------------------------------------------- child runs

def child_env(bootstrap: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", BENTOML_DO_NOT_TRACK="true",
               PYTHONUNBUFFERED="1")
    if bootstrap:
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    return env


def needs_broker(name: str, bench_dir: Path = BENCH_DIR) -> bool:
    """Does the module read the shared bootstrap setting (rather than start its own broker)?"""
    text = (bench_dir / f"{name}.py").read_text(encoding="utf-8")
    return "kafka_bootstrap_servers" in text or "KAFKA_BOOTSTRAP_SERVERS" in text


@contextmanager
def bench_broker(external: str | None, deadline_s: float, wanted: bool = True
                 ) -> Iterator[dict[str, Any]]:
    """The broker for benchmarks that use ``KAFKA_BOOTSTRAP_SERVERS``: ``external`` when
    given, else one of our own (temporary home, free ports) for the whole run, so that
    ``make bench`` works on a fresh clone and never measures someone else's broker load.
    (Benchmarks that time a broker's own start start their own.)"""
    if external:
        yield {"kind": "external", "bootstrap": external}
        return
    if not wanted:
        yield {"kind": "none", "bootstrap": None}
        return
    from bench.stack_harness import Stack

    with Stack(deadline_s=deadline_s, label="bench") as stack:
        seconds = stack.start_broker()
        warm_s = warm_up_groups(stack.bootstrap)
        yield {"kind": "own", "bootstrap": stack.bootstrap, "start_s": round(seconds, 1),
               "group_coordinator_ready_s": round(warm_s, 1)}


def warm_up_groups(bootstrap: str, timeout_s: float = 120.0) -> float:
    """Commit an offset in a throwaway group until the broker accepts it.

    A brand-new broker creates its offsets topic and loads the group coordinators on first
    use, answering NOT_COORDINATOR meanwhile; benchmarks measure a broker in its steady state
    (like one that has served groups before), not that one-off start-up.
    """
    import uuid

    from confluent_kafka import Consumer, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topic = f"bench-warmup-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=60)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-group",
                         "enable.auto.commit": False})
    started = time.monotonic()
    try:
        while True:
            try:
                consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
                consumer.committed([TopicPartition(topic, 0)], timeout=10)
                return time.monotonic() - started
            except KafkaException as exc:
                if time.monotonic() - started > timeout_s:
                    raise RuntimeError(f"group coordinator not ready: {exc}") from exc
                time.sleep(0.5)  # the coordinator is loading; ask again shortly
    finally:
        consumer.close()
        admin.delete_topics([topic])


def run_child(name: str, smoke: bool, timeout_s: float, log_path: Path,
              bootstrap: str | None = None) -> tuple[dict[str, Any] | None, str | None, float]:
    """One run of one benchmark in a fresh interpreter; returns (result, error, seconds)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.run", "--child", name, "--child-out", str(out)]
        if smoke:
            cmd.append("--smoke")
        start = time.monotonic()
        with log_path.open("ab") as log:
            # Own session: a timeout kills the benchmark and every process it started.
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=child_env(bootstrap), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return None, f"timed out after {timeout_s:.0f} s", time.monotonic() - start
            except BaseException:
                _kill_group(proc)
                raise
        elapsed = time.monotonic() - start
        if code != 0:
            return None, f"exit code {code}: {_tail(log_path)}", elapsed
        try:
            result = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return None, f"no result written ({exc})", elapsed
        if not isinstance(result, dict):
            return None, f"run() returned {type(result).__name__}, not a dict", elapsed
        return result, None, elapsed


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])[-600:]


def child_main(name: str, smoke: bool, out: Path) -> int:
    """Inside the child: import the module, run it once, write its dict as JSON."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    module = import_module(f"bench.{name}")
    result = module.run(smoke=smoke)
    out.write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------- environment

def environment() -> dict[str, Any]:
    """machine_info() plus what makes figures comparable: CPU, RAM, load, Java, git."""
    info = machine_info()
    versions = info.setdefault("versions", {})
    for dist in EXTRA_VERSIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    info["cpu_model"] = _cpu_model()
    info["memory_gb"] = _memory_gb()
    info["load_average_start"] = _load_average()
    info["java"] = _command_first_line(["java", "-version"])
    # The commit measured, and whether the tree had changes on top of it (bench/results
    # aside): a result file must say which code it describes.
    info.update(git_provenance(REPO_ROOT).as_dict())
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _command_first_line(cmd: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=20,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text and done.returncode == 0 else None


# --------------------------------------------------------------------------- report

def assemble(outcomes: Sequence[ModuleOutcome], *, smoke: bool, repeats: int,
             machine: dict[str, Any], generated_at: str,
             specs: Sequence[FigureSpec] = FIGURES,
             only: Sequence[str] | None = None,
             carried: frozenset[str] = frozenset()) -> tuple[dict[str, Any], list[Figure]]:
    """The report dict and its headline figures.

    Without ``only``, every headline figure is listed, so a benchmark module that does not
    exist (yet) shows up as a missing row instead of vanishing from the table.
    """
    medians = {o.name: median_merge(o.runs) for o in outcomes if o.runs}
    runs = {o.name: o.runs for o in outcomes}
    statuses = {spec.module: "no benchmark module" for spec in specs}
    statuses.update({o.name: o.status for o in outcomes})
    figures = [build_figure(spec, medians, runs, statuses, judge=not smoke, carried=carried)
               for spec in specs if only is None or spec.module in only]
    report: dict[str, Any] = {
        "generated_at": generated_at,
        "smoke": smoke,
        "repeats": repeats,
        "machine": machine,
        "figures": [fig.as_dict() for fig in figures],
        "goals": goals_summary(figures),
        "benchmarks": {
            o.name: {
                "status": o.status,
                "error": "; ".join(o.errors) if o.errors else None,
                "seconds": [round(s, 2) for s in o.seconds],
                "median": medians.get(o.name),
                "runs": o.runs,
            }
            for o in outcomes
        },
    }
    return report, figures


def carry_over(outcomes: Sequence[ModuleOutcome], previous_path: Path
               ) -> tuple[list[ModuleOutcome], dict[str, dict[str, Any]]]:
    """``outcomes`` plus, from an earlier report, every benchmark not run now."""
    if not previous_path.exists():
        return list(outcomes), {}
    previous = json.loads(previous_path.read_text(encoding="utf-8"))
    ran = {o.name for o in outcomes}
    merged = list(outcomes)
    carried: dict[str, dict[str, Any]] = {}
    for name, info in previous.get("benchmarks", {}).items():
        if name in ran:
            continue
        error = info.get("error")
        merged.append(ModuleOutcome(name, list(info.get("runs") or []),
                                    list(info.get("seconds") or []),
                                    [error] if error else []))
        carried[name] = info.get("measured") or {
            "at": previous.get("generated_at"),
            "load_average_start": previous.get("machine", {}).get("load_average_start"),
            "git_commit": previous.get("machine", {}).get("git_commit"),
            "git_dirty": previous.get("machine", {}).get("git_dirty"),
        }
    return merged, carried


def stamp_measurements(report: dict[str, Any], carried: Mapping[str, dict[str, Any]],
                       generated_at: str, machine: Mapping[str, Any]) -> None:
    """Record in each benchmark's entry when it was measured (now, or carried over)."""
    now = {"at": generated_at, "load_average_start": machine.get("load_average_start"),
           "git_commit": machine.get("git_commit"), "git_dirty": machine.get("git_dirty")}
    for name, info in report["benchmarks"].items():
        info["measured"] = dict(carried.get(name, now))
    if carried:
        report["carried_over"] = sorted(carried)


def write_report(report: dict[str, Any], figures: Sequence[Figure], out_dir: Path,
                 stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report, figures), encoding="utf-8")
    return json_path, md_path


def run_module(name: str, smoke: bool, repeats: int, timeout: float, logs: Path,
               bootstrap: str | None) -> ModuleOutcome:
    outcome = ModuleOutcome(name, [], [], [])
    log_path = logs / f"{name}.log"
    log_path.write_bytes(b"")
    for attempt in range(1, repeats + 1):
        logger.info("bench %s: run %d/%d%s", name, attempt, repeats, " (smoke)" if smoke else "")
        result, error, seconds = run_child(name, smoke, timeout, log_path, bootstrap)
        outcome.seconds.append(seconds)
        if result is not None:
            outcome.runs.append(result)
            continue
        outcome.errors.append(f"run {attempt}: {error}")
        logger.error("bench %s run %d failed: %s (log: %s)", name, attempt, error, log_path)
        break  # a broken benchmark will not heal on the next repeat
    return outcome


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small sizes (CI)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs per benchmark for the median (default: 3, smoke: 1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: bench/results, smoke: bench/results/tmp)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per benchmark run (default: 1800, smoke: 600)")
    parser.add_argument("--bootstrap", default=None, metavar="HOST:PORT",
                        help="use this broker (default: start one of our own for the run)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="from a tree with uncommitted changes, write under "
                             "bench/results/tmp/dirty/ instead of refusing")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def output_dir(args: argparse.Namespace, provenance: Provenance) -> Path:
    """The results folder; the committed one only from a clean tree (see bench.provenance)."""
    out_dir: Path = args.out or (SMOKE_DIR if args.smoke else RESULTS_DIR)
    if out_dir.resolve() != RESULTS_DIR.resolve():
        return out_dir
    return results_target(RESULTS_DIR, provenance, allow_dirty=args.allow_dirty,
                          dirty_dir=DIRTY_DIR)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.smoke, args.child_out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    available = discover()
    if args.list:
        for name in available:
            print(name)
        return 0
    names = available
    if args.only:
        unknown = [name for name in args.only if name not in available]
        if unknown:
            print(f"unknown benchmark(s): {', '.join(unknown)}; available: "
                  f"{', '.join(available)}", file=sys.stderr)
            return 2
        names = [name for name in available if name in args.only]
    repeats = args.repeats or (1 if args.smoke else 3)
    timeout = args.timeout or (600.0 if args.smoke else 1800.0)
    try:
        out_dir = output_dir(args, git_provenance(REPO_ROOT))
    except DirtyTreeError as exc:
        print(exc, file=sys.stderr)
        return 2
    stem = "smoke" if args.smoke else "latest"
    logs = (args.out or SMOKE_DIR) / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    machine = environment()
    generated_at = datetime.now(UTC).isoformat(timespec="seconds")
    outcomes: list[ModuleOutcome] = []
    deadline = timeout * repeats * max(len(names), 1) + 600
    wanted = any(needs_broker(name) for name in names)
    with bench_broker(args.bootstrap, deadline, wanted) as broker:
        machine["broker"] = broker
        for name in names:
            runs = 1 if name in REPEATS_INSIDE else repeats
            outcomes.append(run_module(name, args.smoke, runs, timeout, logs,
                                       broker["bootstrap"]))
    machine["load_average_end"] = _load_average()

    carried: dict[str, dict[str, Any]] = {}
    if args.only and not args.smoke:
        # A partial full run updates those benchmarks in the committed results and keeps
        # the others, each stamped with when (and under what load) it was measured.
        outcomes, carried = carry_over(outcomes, out_dir / f"{stem}.json")
    report, figures = assemble(outcomes, smoke=args.smoke, repeats=repeats, machine=machine,
                               generated_at=generated_at,
                               only=args.only if args.smoke else None,
                               carried=frozenset(carried))
    stamp_measurements(report, carried, generated_at, machine)
    json_path, md_path = write_report(report, figures, out_dir, stem)
    sys.stdout.write(render_markdown(report, figures))
    logger.info("wrote %s and %s", json_path, md_path)
    failed = [o.name for o in outcomes if o.status != "ok"]
    if failed:
        logger.error("benchmarks that failed: %s", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
