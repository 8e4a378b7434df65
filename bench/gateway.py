"""Gateway benchmark: single-claim ``POST /api/v1/claims`` against the real server on loopback.

    python -m bench.gateway [--smoke]

Everything real and on this machine: an own Kafka broker (free ports, temp home), the BentoML
model service serving a small champion, a stream worker (``claimflow score``) and
``claimflow gateway`` (granian). Each request carries a new claim: the gateway produces it to
the claims topic (broker confirmation), the worker decides it (one model call and one Kafka
transaction per batch) and the gateway answers with that decision, read back from the
outcome topics. No idempotent replays; only a 201 counts as a success (a 202, no decision
within GATEWAY_DECISION_TIMEOUT_S, is counted as an error).

* ``latency``: open loop at a fixed rate (200 req/s). Latency counts from the moment a
  request was *due*, so a stalled server cannot hide its queueing delay (no coordinated
  omission). Goal p50 <= 50 ms, p99 <= 150 ms for the whole round trip through the stream,
  with no error, timeout or unanswered request (a request that raised is counted by kind; a
  load thread that dies or hangs leaves its requests unanswered, which is counted too).
* ``max_rate``: closed loop with several concurrent keep-alive connections; the best
  sustained rate of successful requests. Goal >= 1,000 req/s.
* ``model_call``: the anchor, the model service's own ``/score`` latency measured directly.

The load generator runs on the same (2-core) machine as the broker, the model service, the
worker and the gateway; it speaks HTTP/1.1 through :mod:`scorer.http11` on keep-alive connections to
stay light.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import os
import queue
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import emit, machine_info
from bench.stack_harness import ManagedProcess, ModelService, Stack, Topics, free_port
from scorer.http11 import Http11Connection

logger = logging.getLogger(__name__)

FIXED_RATE = 200.0
# The sync answer goes through the stream (produce, the worker's batch and transaction, the
# reply), so the goals leave room for a batch and a transaction (docs/gateway.md).
GOALS = {"p50_ms": 50.0, "p99_ms": 150.0, "req_per_s": 1_000.0}


@dataclass(frozen=True)
class Plan:
    # Closed loop before measuring: the broker's JVM needs a few thousand requests to compile
    # its hot paths (measured: a cold broker cost 0.9 ms of CPU per request, a warm one 0.3).
    warmup_s: float
    fixed_seconds: float
    max_seconds: float
    concurrency: tuple[int, ...]
    model_calls: int
    deadline_s: float


PLANS = {
    True: Plan(warmup_s=2.0, fixed_seconds=3.0, max_seconds=3.0, concurrency=(8,),
               model_calls=200, deadline_s=420),
    False: Plan(warmup_s=15.0, fixed_seconds=20.0, max_seconds=12.0,
                concurrency=(8, 16, 32, 64),
                model_calls=1000, deadline_s=900),
}


# --------------------------------------------------------------------------- requests


class ClaimBodies:
    """Thread-safe source of fresh, valid claim bodies (unique claim_id each)."""

    def __init__(self, run: str) -> None:
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._run = run

    def next(self) -> bytes:
        with self._lock:
            n = next(self._ids)
        return json.dumps({
            "claim_id": f"bench-{self._run}-{n}", "claim_amount": 800.0 + (n % 500) * 7.5,
            "num_services": 1 + n % 6, "patient_age": 20 + n % 60,
            "provider_id": 10_000 + n % 4000, "days_since_last_claim": n % 200,
        }).encode()


class Connection:
    """One keep-alive HTTP/1.1 connection (reconnects if the server closed it).

    The model client's small transport (:mod:`scorer.http11`), not ``http.client``: its
    header parsing (the ``email`` package) cost the load generator 0.3 ms of CPU per request,
    CPU the machine's two cores then lacked for the gateway.
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._conn: Http11Connection | None = None

    def post(self, path: str, body: bytes) -> int:
        try:
            return self._exchange(path, body)
        except (OSError, http.client.HTTPException):
            self.close()
            return self._exchange(path, body)

    def _exchange(self, path: str, body: bytes) -> int:
        if self._conn is None or self._conn.closed:
            self._conn = Http11Connection("127.0.0.1", self._port, timeout_s=30)
        status, _ = self._conn.request("POST", path, body)
        return status

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {}
    ms = np.array(latencies_s) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3),
            "mean_ms": round(statistics.fmean(ms.tolist()), 3)}


# --------------------------------------------------------------------------- fixed rate


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    service_times: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, kind: str) -> None:
        """A request that got no HTTP answer (timeout, refused, reset): an error, counted."""
        with self.lock:
            self.failures[kind] = self.failures.get(kind, 0) + 1

    def add(self, status: int, latency: float, service: float) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 201:
                self.latencies.append(latency)
                self.service_times.append(service)

    @property
    def ok(self) -> int:
        return self.statuses.get(201, 0)

    @property
    def errors(self) -> int:
        return (sum(n for status, n in self.statuses.items() if status != 201)
                + sum(self.failures.values()))


def send(conn: Connection, tally: Tally, body: bytes, due: float) -> None:
    """One timed request; one that raises is tallied by kind, and the load thread lives on."""
    sent = time.perf_counter()
    try:
        status = conn.post("/api/v1/claims", body)
    except TimeoutError:
        tally.fail("timeout")
        conn.close()
        return
    except (OSError, http.client.HTTPException) as exc:
        tally.fail(type(exc).__name__)
        conn.close()
        return
    done = time.perf_counter()
    tally.add(status, done - due, done - sent)


def load_failures(requests: int, tally: Tally, threads_alive: int) -> dict[str, Any]:
    """What a latency figure over the answered requests leaves out; all of it must be 0.

    ``unanswered``: due requests with no outcome at all (a load thread that died or hung
    took them with it); ``load_threads_lost``: threads still running after the join.
    """
    answered = tally.ok + tally.errors
    return {"errors": tally.errors, "timeouts": tally.failures.get("timeout", 0),
            "unanswered": max(requests - answered, 0), "load_threads_lost": threads_alive,
            "error_rate": round((requests - tally.ok) / requests, 6) if requests else 0.0,
            "failures": dict(sorted(tally.failures.items()))}


def fixed_rate(port: int, bodies: ClaimBodies, rate: float, seconds: float,
               workers: int = 16) -> dict[str, Any]:
    """Open loop: request i is due at start + i / rate, whoever sends it."""
    due: queue.Queue[float | None] = queue.Queue()
    tally = Tally()

    def worker() -> None:
        conn = Connection(port)
        while (when := due.get()) is not None:
            send(conn, tally, bodies.next(), when)
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    for i in range(total):
        when = start + i / rate
        pause = when - time.perf_counter()
        if pause > 0:
            time.sleep(pause)  # the schedule itself, not a wait for a result
        due.put(when)
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join(60)
    elapsed = time.perf_counter() - start
    alive = sum(thread.is_alive() for thread in threads)
    return {"rate_req_per_s": rate, "requests": total, "ok": tally.ok,
            **load_failures(total, tally, alive),
            "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
            "achieved_req_per_s": round(tally.ok / elapsed, 1),
            **percentiles(tally.latencies),
            "service_time": percentiles(tally.service_times)}


# --------------------------------------------------------------------------- max rate


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants."""
    import psutil  # installed with BentoML; only the benchmark needs it

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    except psutil.Error:
        pass
    return total


def closed_loop(port: int, bodies: ClaimBodies, concurrency: int, seconds: float,
                watch: dict[str, int] | None = None) -> dict[str, Any]:
    """``watch``: name -> pid whose CPU per successful request is reported."""
    cpu_before = {name: tree_cpu_s(pid) for name, pid in (watch or {}).items()}
    own_before = time.process_time()
    stop_at = time.perf_counter() + seconds
    tally = Tally()

    def worker() -> None:
        conn = Connection(port)
        while time.perf_counter() < stop_at:
            send(conn, tally, bodies.next(), time.perf_counter())
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    elapsed = time.perf_counter() - started
    ok = max(1, tally.ok)
    cpu = {name: round((tree_cpu_s(pid) - cpu_before[name]) * 1000 / ok, 3)
           for name, pid in (watch or {}).items()}
    cpu["load_generator"] = round((time.process_time() - own_before) * 1000 / ok, 3)
    return {"concurrency": concurrency, "ok": tally.ok, "errors": tally.errors,
            "req_per_s": round(tally.ok / elapsed, 1), **percentiles(tally.latencies),
            "cpu_ms_per_request": cpu}


# --------------------------------------------------------------------------- model anchor


def model_latency(model_port: int, calls: int) -> dict[str, Any]:
    conn = Connection(model_port)
    bodies = ClaimBodies("anchor")
    times = []
    for _ in range(calls):
        claim = json.loads(bodies.next())
        claim["submitted_at"] = "2026-11-26T18:00:00Z"
        body = json.dumps({"claim": claim}).encode()
        sent = time.perf_counter()
        status = conn.post("/score", body)
        times.append(time.perf_counter() - sent)
        if status != 200:
            raise RuntimeError(f"model service answered {status}")
    conn.close()
    return {"calls": calls, **percentiles(times)}


# --------------------------------------------------------------------------- the stack


def start_model(stack: Stack, rows: int = 5_000, seed: int = 7) -> ModelService:
    """A small champion exported straight into the stack's BentoML store (the benchmark is
    about serving, not training), served with the tag pinned."""
    from sklearn.ensemble import IsolationForest

    from features.reference import build_reference
    from modelstore.bento import export_to_bentoml
    from producer.profiles import generate
    from schemas import CLAIM_FEATURES

    frame = generate("realistic", rows, seed=seed)
    x = frame[list(CLAIM_FEATURES)].to_numpy(dtype=np.float64)
    forest = IsolationForest(n_estimators=100, contamination=0.05, random_state=seed).fit(x)
    tag = export_to_bentoml(forest, build_reference(x), "1", "bench-gateway",
                            stack.home / "bentoml")
    port = free_port()
    proc = stack.spawn("model", "serve-model", "--port", str(port),
                       env={"MODEL_TAG": tag, "MODEL_POLL_INTERVAL_S": "0"})
    service = ModelService(proc, f"http://127.0.0.1:{port}", port)
    service.wait_ready(240)
    return service


def wait_assigned(scorer: ManagedProcess, timeout_s: float = 120.0) -> None:
    """Until the worker has its partitions (a claim produced before would wait for it)."""
    deadline = time.monotonic() + timeout_s
    while " assigned " not in scorer.log_tail(200):
        if not scorer.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the scorer has no partitions:\n{scorer.log_tail()}")
        time.sleep(0.2)  # polling interval, bounded by the deadline


def timed(label: str, fn: Callable[[], Any], timings: dict[str, float]) -> Any:
    started = time.monotonic()
    value = fn()
    timings[label] = round(time.monotonic() - started, 1)
    return value


def run(smoke: bool = False) -> dict[str, Any]:
    plan = PLANS[smoke]
    timings: dict[str, float] = {}
    with Stack(deadline_s=plan.deadline_s, label="bench-gateway") as stack:
        timed("broker_start_s", stack.start_broker, timings)
        topics = stack.create_topics(Topics.fresh("bench-gw"), partitions=3)
        model = timed("model_service_ready_s", lambda: start_model(stack), timings)
        scorer = stack.start_scorer("scorer", topics, f"bench-gw-{uuid.uuid4().hex[:6]}",
                                    model.url)
        gateway = timed("gateway_ready_s", lambda: stack.start_gateway(topics), timings)
        timed("scorer_assigned_s", lambda: wait_assigned(scorer), timings)
        bodies = ClaimBodies(uuid.uuid4().hex[:8])
        closed_loop(gateway.port, bodies, 8, plan.warmup_s)  # warm-up
        anchor = model_latency(model.port, plan.model_calls)
        latency = fixed_rate(gateway.port, bodies, FIXED_RATE, plan.fixed_seconds)
        watch = {"gateway": gateway.process.pid, "model_service": model.process.pid,
                 "scorer": scorer.pid}
        broker = stack.broker_pid()
        if broker is not None:  # the produce and the view's fetches are work per request too
            watch["broker"] = broker
        by_concurrency = [closed_loop(gateway.port, bodies, c, plan.max_seconds, watch)
                          for c in plan.concurrency]
    best = max(by_concurrency, key=lambda r: r["req_per_s"])
    clean = not (latency["errors"] or latency["unanswered"] or latency["load_threads_lost"])
    cpu_total = sum(best["cpu_ms_per_request"].values())
    return {
        "benchmark": "gateway",
        "smoke": smoke,
        "latency": latency,
        "max_rate": {"req_per_s": best["req_per_s"], "concurrency": best["concurrency"],
                     "errors": best["errors"],
                     "cpu_ms_per_request": best["cpu_ms_per_request"],
                     # What the measured CPU cost per request (gateway, scorer, model service,
                     # broker, load generator) allows on all of this machine's cores.
                     "cpu_bound_req_per_s": round((os.cpu_count() or 1) * 1000 / cpu_total, 1)
                     if cpu_total else None,
                     "by_concurrency": by_concurrency},
        "model_call": anchor,
        "goals": {
            "p50_ms": {"goal": GOALS["p50_ms"], "met": clean and latency.get("p50_ms", 1e9)
                       <= GOALS["p50_ms"]},
            "p99_ms": {"goal": GOALS["p99_ms"], "met": clean and latency.get("p99_ms", 1e9)
                       <= GOALS["p99_ms"]},
            "req_per_s": {"goal": GOALS["req_per_s"],
                          "met": best["req_per_s"] >= GOALS["req_per_s"]},
        },
        "setup": timings,
        "machine": machine_info(),
        "note": "load generator, broker, model service, scorer and gateway share this "
                "machine's CPUs",
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    emit(run(smoke="--smoke" in sys.argv))
