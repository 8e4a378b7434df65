"""Stream with member features: v2 claims -> member stage -> v2-history champion -> committed
decisions, through the real broker and model service.

    python -m bench.stream_members [--smoke]

Issue 16's stream goals, measured the way ``bench.stream_scoring`` measures the v1 stream
(its functions are reused), on v2 realistic claims (``claimflow generate --profile
realistic``) and a v2-history champion (trained by the trainer's ``train`` on v2 claims,
exported like ``claimflow promote``):

* ``throughput_runs``: ``claimflow score --instances 2`` joined, then ``claimflow produce
  --from-file claims.jsonl`` (keyed by member_id); claims/s from the first claim in the topic
  to the last committed claim offset. ``readme_default`` (worker defaults, the headline) and
  ``tuned`` (batches of up to 2,000). ``cpu_us_per_claim``: CPU the workers and the model
  service spent per claim in that window; ``cpu_cores.machine``: every busy core.
* ``latency``: 1,000 claims/s, one worker, each claim timed from ``produce`` to its
  committed decision in a read_committed consumer; missing decisions and producer errors
  fail the figure.
* ``in_process`` (anchor and profile, no Kafka, no HTTP, one thread): CPU per claim of the
  worker's decode (``ClaimV2.from_json``), its member step (``member_step`` + applying the
  updates + encoding the changelog records), the model service's path
  (``ServedModel.score_json`` with member contexts, i.e. ``_history_rows``) and within it
  the feature computation (``feature_vector``) alone; and ``profiles``: the top functions
  by own time (per claim) of a cProfile of the member step and of ``score_json``
  (cProfile's own overhead inflates them; read them as shares, not as costs).

The changelog topics the workers create (``<group>.member-state``) are deleted with the
run's other topics.
"""

from __future__ import annotations

import cProfile
import gc
import logging
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from bench.common import emit, machine_info
from bench.member_common import generate_v2, history_champion, read_claims
from bench.stream_scoring import (
    GOAL_CLAIMS_PER_S,
    GOAL_P50_MS,
    GOAL_P99_MS,
    README_DEFAULT,
    TUNED,
    Setup,
    latency_run,
    model_service,
    throughput_run,
)
from claimflow.settings import CommonSettings
from schemas import ClaimV2
from scorer.member_state import MemberStore, member_step
from scorer.routing import Position

logger = logging.getLogger(__name__)

IN_PROCESS_BATCH = 1000


@dataclass(frozen=True)
class Sizes:
    backlog: int
    setups: tuple[Setup, ...]
    latency_rate: float
    latency_seconds: float
    in_process_claims: int
    train_rows: int
    trees: int


FULL = Sizes(backlog=200_000, setups=(README_DEFAULT, TUNED), latency_rate=1000,
             latency_seconds=20, in_process_claims=100_000, train_rows=20_000, trees=100)
SMOKE = Sizes(backlog=3_000, setups=(README_DEFAULT, TUNED), latency_rate=1000, latency_seconds=3,
              in_process_claims=5_000, train_rows=4_000, trees=30)


# --------------------------------------------------------------------------- in process


def in_process(lines: Sequence[bytes], model: Any) -> dict[str, Any]:
    """CPU per claim of each step of the path, one thread, batches of 1,000 in stream order
    (each member's history grows as in the stream), with the worker's garbage collection
    after each batch (``collect``, scorer.collector). CPU time, not wall time: on a shared
    machine a step's wall time counts the other processes' turns too."""
    from features.vector import feature_vector
    from scorer.collector import BatchCollector

    gc.collect()
    gc.freeze()
    collector = BatchCollector()
    store = MemberStore()
    timers = {"decode": 0.0, "member_step": 0.0, "model_score_json": 0.0,
              "feature_vector": 0.0, "collect": 0.0}
    codes = model.codes
    clock = time.thread_time
    wall0 = time.perf_counter()
    for start in range(0, len(lines), IN_PROCESS_BATCH):
        chunk = lines[start:start + IN_PROCESS_BATCH]
        t0 = clock()
        claims = [ClaimV2.from_json(line) for line in chunk]
        t1 = clock()
        positions = [Position("claims", 0, start + i) for i in range(len(chunk))]
        step = member_step(store, claims, positions)
        step.changelog("claims.member-state")
        store.apply(step.updates)
        t2 = clock()
        model.score_json(claims, step.features)
        t3 = clock()
        for claim, member in zip(claims, step.features, strict=True):
            feature_vector(claim, member, codes)
        t4 = clock()
        collector.after_batch()
        t5 = clock()
        timers["decode"] += t1 - t0
        timers["member_step"] += t2 - t1
        timers["model_score_json"] += t3 - t2
        timers["feature_vector"] += t4 - t3
        timers["collect"] += t5 - t4
    gc.unfreeze()
    wall = time.perf_counter() - wall0
    n = len(lines)
    path_s = (timers["decode"] + timers["member_step"] + timers["model_score_json"]
              + timers["collect"])
    return {
        "claims": n, "batch": IN_PROCESS_BATCH,
        "cpu_us_per_claim": {name: seconds / n * 1e6 for name, seconds in timers.items()},
        # decode + member step + the model's path + the collection per CPU second of one
        # thread: what one core does without Kafka, HTTP, decisions' encoding and
        # transactions.
        "claims_per_s": n / path_s if path_s > 0 else 0.0,
        "cpu_cores": 1.0,
        # How much of a core this process got meanwhile (the machine is shared).
        "share_of_a_core": sum(timers.values()) / wall if wall > 0 else 0.0,
        "members": sum(store.members(p) for p in store.partitions),
    }


def top_functions(profiler: cProfile.Profile, claims: int, top: int) -> list[dict[str, Any]]:
    """The profile's functions by own time, per claim."""
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in (
            stats.stats.items()):  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(filename).name}:{line}:{name}", "calls": calls,
                     "own_us_per_claim": own / claims * 1e6,
                     "cumulative_us_per_claim": cumulative / claims * 1e6})
    rows.sort(key=lambda row: -row["own_us_per_claim"])
    return rows[:top]


def profiles(lines: Sequence[bytes], model: Any, top: int = 12) -> dict[str, Any]:
    """cProfile of the worker's member step (features, new histories, changelog records)
    and of the model service's scoring path with member contexts, in stream order."""
    claims = [ClaimV2.from_json(line) for line in lines]
    store = MemberStore()
    batches = []
    member = cProfile.Profile()
    for start in range(0, len(claims), IN_PROCESS_BATCH):
        chunk = claims[start:start + IN_PROCESS_BATCH]
        positions = [Position("c", 0, i) for i in range(len(chunk))]
        member.enable()
        step = member_step(store, chunk, positions)
        step.changelog("claims.member-state")
        store.apply(step.updates)
        member.disable()
        batches.append((chunk, step.features))
    scoring = cProfile.Profile()
    scoring.enable()
    for chunk, features in batches:
        model.score_json(chunk, features)
    scoring.disable()
    return {"claims": len(claims),
            "member_step": top_functions(member, len(claims), top),
            "model_score_json": top_functions(scoring, len(claims), top)}


# --------------------------------------------------------------------------- the stream


def run(smoke: bool = False) -> dict[str, Any]:
    from schemas import ModelRef
    from scorer.model_settings import ModelSettings
    from scoring.model import build_served_model

    sizes = SMOKE if smoke else FULL
    load_at_start = os.getloadavg()
    bootstrap = CommonSettings().kafka_bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    with tempfile.TemporaryDirectory(prefix="claimflow-bench-members-") as tmp:
        home = Path(tmp)
        champion = history_champion(home, sizes.train_rows, n_estimators=sizes.trees)
        model = build_served_model(champion.estimator, champion.reference,
                                   ModelRef(name="claim-anomaly", version="1"), champion.tag,
                                   ModelSettings())
        local = generate_v2(home / "local.jsonl", sizes.in_process_claims, seed=22)
        local_lines = [claim.to_json() for claim in read_claims(local)]
        anchor = in_process(local_lines, model)
        profile = profiles(local_lines[:20_000], model)
        claims_file = generate_v2(home / "stream.jsonl", sizes.backlog, seed=21)
        latency_claims = read_claims(generate_v2(
            home / "latency.jsonl", int(sizes.latency_rate * sizes.latency_seconds) + 1,
            seed=23))
        with model_service(home, champion.tag) as service:
            runs = {setup.name: throughput_run(bootstrap, home, admin, service, claims_file,
                                               sizes.backlog, setup, prefix="mtput",
                                               count_changelog=True)
                    for setup in sizes.setups}
            latency = latency_run(bootstrap, home, admin, service.url, latency_claims,
                                  sizes.latency_rate,
                                  key_of=lambda claim: claim.member_id.encode())
    headline = runs[README_DEFAULT.name]
    return {
        "benchmark": "stream_members", "smoke": smoke,
        "feature_set": champion.reference.feature_set,
        "throughput": {**headline, "goal_per_s": GOAL_CLAIMS_PER_S,
                       "goal_met": headline["claims_per_s"] >= GOAL_CLAIMS_PER_S},
        "throughput_runs": runs,
        "in_process": anchor,
        "profiles": profile,
        "latency": {**latency, "goal_p50_ms": GOAL_P50_MS, "goal_p99_ms": GOAL_P99_MS},
        "load_average": {"start": list(load_at_start), "end": list(os.getloadavg())},
        "machine": machine_info(),
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    emit(run(smoke="--smoke" in sys.argv))
