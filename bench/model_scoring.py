"""Model scoring: the compiled forest against scikit-learn, in process and over HTTP.

    python -m bench.model_scoring [--smoke] [--no-service]

Every in-process figure has a wall-clock median (the headline), the best round, and the
median per CPU second of this process (``cpu_*``): this machine is shared, and CPU time is
far less disturbed by other processes than wall time.

In process, on realistic claims and a 100-tree forest (the lab's hyperparameters), each
figure beside scikit-learn's from the same run:

* ``single``: one claim, ``CompiledForest.anomaly_score`` vs ``score_samples`` on one row
  (the same work: the anomaly score). ``single_full`` adds the decision, the reasons and
  the JSON answer (``ServedModel.score_one_json``, what ``/score`` runs).
* ``batch``: claims/s in batches of 500 (the stream worker's batch size), ``anomaly_scores``
  vs ``score_samples``; ``batch_10k`` with batches of 10,000; ``batch_full`` is
  ``ServedModel.score_json`` (scores, decisions, reasons, JSON) in batches of 500.
* ``parity``: largest |score difference| and decision mismatches over all scored claims.

Over HTTP (a real ``claimflow serve-model`` with a temporary champion, through
``ModelClient``): ``service_single`` (p50/p99 of ``/score``) and ``service_batch`` (round
trip of ``/score_batch`` with 500 claims, and the claims/s it implies for one caller), each
with the service's own CPU time per request (``server_cpu_ms``, from /proc): what one
service worker can sustain on a free core.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest

from bench.common import emit, machine_info
from bench.stack_harness import (
    CLAIMFLOW,
    COMPONENT_ENV_PREFIXES,
    QUIET_ENV,
    ManagedProcess,
    ModelService,
    free_port,
)
from features.reference import build_reference
from modelstore.bento import export_to_bentoml
from producer.profiles import generate
from schemas import Claim, ModelRef
from scorer.client import ModelClient
from scorer.model_settings import ModelSettings
from scoring.forest import CompiledForest, compile_forest
from scoring.model import ServedModel, build_served_model

GOAL_SINGLE_MS = 0.1
GOAL_BATCH_PER_S = 200_000
BATCH = 500
FIELDS = ("claim_id", "claim_amount", "num_services", "patient_age", "provider_id",
          "days_since_last_claim", "submitted_at")


def realistic_claims(rows: int, seed: int) -> list[Claim]:
    frame = generate("realistic", rows, seed=seed)[list(FIELDS)]
    lines = frame.to_json(orient="records", lines=True, date_format="iso").splitlines()
    return [Claim.from_json(line) for line in lines]


def features(claims: list[Claim]) -> np.ndarray:
    return np.array([claim.features() for claim in claims], dtype=np.float64)


def per_call_ms(fn: Callable[[], object], calls: int, repeats: int) -> dict[str, float]:
    """Median (and best) milliseconds per call over ``repeats`` rounds of ``calls`` calls."""
    rounds, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - start) / calls * 1e3)
        cpu.append((time.process_time() - start_cpu) / calls * 1e3)
    return {"ms": statistics.median(rounds), "best_ms": min(rounds),
            "cpu_ms": statistics.median(cpu), "calls": calls, "repeats": repeats}


def batch_rate(fn: Callable[[np.ndarray], object], x: np.ndarray, size: int,
               repeats: int) -> dict[str, float]:
    """Claims/s scoring all of ``x`` in batches of ``size`` (median over ``repeats``)."""
    batches = [x[i:i + size] for i in range(0, len(x), size)]
    rates, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            fn(batch)
        rates.append(len(x) / (time.perf_counter() - start))
        cpu.append(len(x) / max(time.process_time() - start_cpu, 1e-9))
    return {"claims_per_s": statistics.median(rates), "best_claims_per_s": max(rates),
            "cpu_claims_per_s": statistics.median(cpu), "batch_size": size, "claims": len(x),
            "repeats": repeats}


def claims_rate(fn: Callable[[list[Claim]], object], claims: list[Claim],
                repeats: int) -> dict[str, float]:
    """Claims/s of ``fn`` over all claims in batches of :data:`BATCH` (median)."""
    chunks = [claims[i:i + BATCH] for i in range(0, len(claims), BATCH)]
    rates, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for chunk in chunks:
            fn(chunk)
        rates.append(len(claims) / (time.perf_counter() - start))
        cpu.append(len(claims) / max(time.process_time() - start_cpu, 1e-9))
    return {"claims_per_s": statistics.median(rates), "best_claims_per_s": max(rates),
            "cpu_claims_per_s": statistics.median(cpu), "batch_size": BATCH,
            "claims": len(claims), "repeats": repeats}


def ratio(ours: float, theirs: float) -> float:
    return round(ours / theirs, 2) if theirs else float("nan")


def in_process(estimator: IsolationForest, served: ServedModel, claims: list[Claim],
               smoke: bool) -> dict[str, Any]:
    forest = served.forest
    assert isinstance(forest, CompiledForest), "this benchmark measures the compiled forest"
    x = features(claims)
    repeats = 3 if smoke else 5
    one = x[len(x) // 2].tolist()
    one_row = x[len(x) // 2:len(x) // 2 + 1]
    single = per_call_ms(lambda: forest.anomaly_score(one), 200 if smoke else 2_000, repeats)
    sk_single = per_call_ms(lambda: estimator.score_samples(one_row), 20 if smoke else 100,
                            repeats)
    single_full = per_call_ms(lambda: served.score_one_json(claims[0]),
                              200 if smoke else 2_000, repeats)
    batch = batch_rate(forest.anomaly_scores, x, BATCH, repeats)
    sk_batch = batch_rate(estimator.score_samples, x, BATCH, repeats)
    batch_10k = batch_rate(forest.anomaly_scores, x, 10_000, repeats)
    sk_batch_10k = batch_rate(estimator.score_samples, x, 10_000, repeats)
    full = claims_rate(served.score_json, claims, repeats)
    ours, theirs = forest.anomaly_scores(x), -estimator.score_samples(x)
    return {
        "single": {**single, "goal_ms": GOAL_SINGLE_MS, "goal_met": single["ms"] <= GOAL_SINGLE_MS,
                   "speedup_vs_sklearn": ratio(sk_single["ms"], single["ms"])},
        "sklearn_single": sk_single,
        "single_full": single_full,
        "batch": {**batch, "goal_per_s": GOAL_BATCH_PER_S,
                  "goal_met": batch["claims_per_s"] >= GOAL_BATCH_PER_S,
                  "ratio_vs_sklearn": ratio(batch["claims_per_s"], sk_batch["claims_per_s"])},
        "sklearn_batch": sk_batch,
        "batch_10k": {**batch_10k, "ratio_vs_sklearn": ratio(batch_10k["claims_per_s"],
                                                             sk_batch_10k["claims_per_s"])},
        "sklearn_batch_10k": sk_batch_10k,
        "batch_full": full,
        "parity": {
            "claims": len(x),
            "max_abs_score_diff": float(np.max(np.abs(ours - theirs))),
            "decision_mismatches": int(np.sum(forest.investigate(ours)
                                              != (estimator.predict(x) == -1))),
        },
    }


@contextmanager
def model_service(home: Path, tag: str) -> Iterator[ModelService]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(COMPONENT_ENV_PREFIXES)}
    env.update(QUIET_ENV, CLAIMFLOW_HOME=str(home), MODEL_TAG=tag, MODEL_POLL_INTERVAL_S="0")
    process = ManagedProcess("model", [*CLAIMFLOW, "serve-model", "--port", str(port)], env,
                             home / "logs" / "model.log").start()
    service = ModelService(process, f"http://127.0.0.1:{port}", port)
    try:
        service.wait_ready(180)
        yield service
    finally:
        process.stop()


def process_tree_cpu_s(root: int) -> float | None:
    """CPU seconds (user + system) used so far by ``root`` and its descendants (Linux /proc);
    the service's cost per request, whatever else runs on this shared machine."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    stats: dict[int, tuple[int, float]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # After the command: state, ppid, ..., utime (11), stime (12), in clock ticks.
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])))
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    ticks = sum(stats[pid][1] for pid in tree if pid in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.array(samples_s) * 1e3
    return {"ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "samples": len(ms)}


def over_http(service: ModelService, claims: list[Claim], smoke: bool) -> dict[str, Any]:
    singles, batches = (200, 20) if smoke else (2_000, 200)
    batch = claims[:BATCH]
    pid = service.process.pid
    with ModelClient(service.url, timeout_s=30) as client:
        for claim in claims[:50]:  # warm up connections and code paths
            client.score(claim)
        client.score_batch(batch)
        single, server_single = timed_calls(lambda i: client.score(claims[i]), singles, pid)
        rounds, server_batch = timed_calls(lambda _: client.score_batch(batch), batches, pid)
    batch_stats = percentiles(rounds)
    return {
        "service_single": {**percentiles(single), "server_cpu_ms": server_single},
        "service_batch": {**batch_stats, "batch_size": BATCH,
                          "claims_per_s": BATCH / (batch_stats["ms"] / 1e3),
                          "server_cpu_ms": server_batch,
                          "server_cpu_claims_per_s": (BATCH / (server_batch / 1e3)
                                                      if server_batch else None)},
    }


def timed_calls(call: Callable[[int], object], n: int,
                server_pid: int) -> tuple[list[float], float | None]:
    """Wall seconds of each call, and the service's CPU milliseconds per call."""
    cpu_before = process_tree_cpu_s(server_pid)
    samples = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - start)
    cpu_after = process_tree_cpu_s(server_pid)
    if cpu_before is None or cpu_after is None:
        return samples, None
    return samples, (cpu_after - cpu_before) / n * 1e3


def run(smoke: bool = False, service: bool = True) -> dict[str, Any]:
    train_rows, eval_rows = (5_000, 10_000) if smoke else (20_000, 100_000)
    training = realistic_claims(train_rows, seed=1)
    claims = realistic_claims(eval_rows, seed=2)
    x_train = features(training)
    estimator = IsolationForest(n_estimators=100, contamination=0.05, random_state=42)
    estimator.fit(x_train)
    reference = build_reference(x_train)
    start = time.perf_counter()
    compile_forest(estimator)
    compile_s = time.perf_counter() - start
    served = build_served_model(estimator, reference, ModelRef(name="claim-anomaly", version="1"),
                                "claim-anomaly:v1", ModelSettings())
    result: dict[str, Any] = {
        "benchmark": "model_scoring",
        "smoke": smoke,
        "machine": machine_info(),
        "forest": {"trees": served.forest.n_trees,
                   "table_mb": getattr(served.forest, "nbytes", 0) / 1e6,
                   "compile_s": compile_s, "training_rows": train_rows},
        **in_process(estimator, served, claims, smoke),
    }
    if service:
        with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
            home = Path(tmp)
            tag = export_to_bentoml(estimator, reference, "1", "bench-model", home / "bentoml")
            with model_service(home, tag) as running:
                result.update(over_http(running, claims, smoke))
        result["service_single"]["vs_sklearn_in_process"] = ratio(
            result["sklearn_single"]["ms"], result["service_single"]["ms"])
    return result


if __name__ == "__main__":
    emit(run(smoke="--smoke" in sys.argv, service="--no-service" not in sys.argv))
