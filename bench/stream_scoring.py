"""Stream scoring: claims -> committed decisions through the real broker and model service.

    python -m bench.stream_scoring [--smoke]

* ``throughput_runs``: claims/s from the first claim in the topic to the last committed
  claim offset, run the way the README shows: ``claimflow score --instances 2`` (joined),
  then ``claimflow produce --from-file`` of the backlog, so producing and scoring overlap as
  they do for a user. Against a real ``bentoml serve`` model service and the broker at
  ``KAFKA_BOOTSTRAP_SERVERS``. Two fixed setups, both reported: ``readme_default`` (the
  worker's default settings; the headline ``throughput``) and ``tuned`` (a larger batch).
  ``cpu_cores``: cores each part used in that window; ``machine`` (all busy cores: producer,
  broker, workers, model service) is the one the per-core ratio divides by.
* ``in_process`` (the anchor): the same decode + score + encode in one process, no Kafka, no
  HTTP: ``Claim.from_json``, the same compiled forest and explanations the service uses,
  and the worker's own decision encoder; ``cpu_cores`` is what it used (about one).
  ``ratio_to_in_process_per_core``: claims per busy machine core over claims per loop core.
* ``latency``: claims produced at a fixed rate (1,000/s), each timed from ``produce`` to
  the moment a read_committed consumer receives its decision.

Topics are uuid-named and deleted afterwards; the champion is a temporary one (trained
here, exported to a temporary BentoML store), so nothing of the machine's state is used.
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.common import emit, machine_info
from bench.stack_harness import (
    CLAIMFLOW,
    COMPONENT_ENV_PREFIXES,
    QUIET_ENV,
    ManagedProcess,
    ModelService,
    Topics,
    free_port,
)
from claimflow.settings import TOPICS, CommonSettings
from producer.csvio import write_claims_csv
from producer.profiles import generate
from schemas import CLAIM_FEATURES, Claim, ClaimV2
from schemas.score import only_results
from scorer.routing import OutcomeTopics, Position, route_decisions

logger = logging.getLogger(__name__)

GOAL_CLAIMS_PER_S = 30_000
GOAL_RATIO = 0.5
GOAL_P50_MS = 30.0
GOAL_P99_MS = 100.0
CLAIM_PARTITIONS = 6
IN_PROCESS_BATCH = 1000


@dataclass(frozen=True)
class Setup:
    """Workers as a user starts them; ``batch_max_size`` None keeps the worker's default."""

    name: str
    instances: int
    batch_max_size: int | None


# The README's commands: ``claimflow score --instances 2``, then ``claimflow produce``.
README_DEFAULT = Setup("readme_default", 2, None)
# Fixed before measuring, never the best of several tries: a maximum over setups picked
# per run flatters the figure by the run-to-run noise.
TUNED = Setup("tuned", 2, 2000)


@dataclass(frozen=True)
class Sizes:
    backlog: int  # claims per throughput run
    setups: tuple[Setup, ...]
    latency_rate: float  # claims/s
    latency_seconds: float
    in_process_claims: int
    repeats: int


FULL = Sizes(backlog=200_000, setups=(README_DEFAULT, TUNED),
             latency_rate=1000, latency_seconds=20, in_process_claims=100_000, repeats=3)
SMOKE = Sizes(backlog=5_000, setups=(README_DEFAULT, TUNED), latency_rate=1000, latency_seconds=3,
              in_process_claims=5_000, repeats=1)


# --------------------------------------------------------------------------- fixtures


def realistic_claims(n: int, seed: int) -> list[Claim]:
    from producer.profiles import generate

    frame = generate("realistic", n, seed=seed)
    stamps = [cast(pd.Timestamp, ts).to_pydatetime() for ts in frame["submitted_at"]]
    columns = [frame[name].tolist() for name in (
        "claim_id", "claim_amount", "num_services", "patient_age", "provider_id",
        "days_since_last_claim")]
    return [
        Claim(claim_id=f"{claim_id}-{seed}", claim_amount=float(amount), num_services=services,
              patient_age=age, provider_id=provider, days_since_last_claim=days,
              submitted_at=stamp)
        for claim_id, amount, services, age, provider, days, stamp in zip(
            *columns, stamps, strict=True)
    ]


def make_champion(home: Path) -> tuple[str, Any, Any]:
    """Train a forest like ``claimflow train`` does and export it like ``promote`` does."""
    from sklearn.ensemble import IsolationForest

    from features.reference import build_reference
    from modelstore.bento import export_to_bentoml

    claims = realistic_claims(20_000, seed=7)
    x = np.array([claim.features() for claim in claims], dtype=np.float64)
    estimator = IsolationForest(n_estimators=100, contamination=0.05, random_state=42).fit(x)
    reference = build_reference(x)
    tag = export_to_bentoml(estimator, reference, "1", "bench-stream", home / "bentoml")
    return tag, estimator, reference


def child_env(**settings: str) -> dict[str, str]:
    """The caller's environment without any component setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(COMPONENT_ENV_PREFIXES)}
    return {**env, **QUIET_ENV, **settings}


@contextmanager
def model_service(home: Path, tag: str, **settings: str) -> Iterator[ModelService]:
    port = free_port()
    env = child_env(CLAIMFLOW_HOME=str(home), MODEL_TAG=tag, MODEL_POLL_INTERVAL_S="0",
                    **settings)
    process = ManagedProcess("model", [*CLAIMFLOW, "serve-model", "--port", str(port)],
                             env, home / "logs" / "model.log").start()
    service = ModelService(process, f"http://127.0.0.1:{port}", port)
    try:
        service.wait_ready(180)
        yield service
    finally:
        process.stop()


def create_topics(admin: AdminClient, label: str) -> Topics:
    """A fresh topic set named ``bench-<label>-<uuid>``: the claims topic with
    ``CLAIM_PARTITIONS`` partitions, the outcome topics with 3."""
    topics = Topics.fresh(f"bench-{label}")
    specs = [NewTopic(topics.claims, num_partitions=CLAIM_PARTITIONS, replication_factor=1)]
    specs += [NewTopic(name, num_partitions=3, replication_factor=1) for name in topics.outcomes]
    for future in admin.create_topics(specs).values():
        future.result(30)
    return topics


def delete_topics(admin: AdminClient, names: Sequence[str]) -> None:
    """Delete the run's topics; one that was never created is no error."""
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [name for name in names if name in existing]
    if wanted:
        for future in admin.delete_topics(wanted).values():
            future.result(30)


def start_workers(bootstrap: str, home: Path, topics: Topics, group: str, model_url: str,
                  instances: int, batch_max_size: int | None, **settings: str
                  ) -> ManagedProcess:
    tuning = {} if batch_max_size is None else {"SCORER_BATCH_MAX_SIZE": str(batch_max_size)}
    tuning.update(settings)
    env = child_env(
        CLAIMFLOW_HOME=str(home), KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        SCORER_INPUT_TOPIC=topics.claims, SCORER_APPROVED_TOPIC=topics.approved,
        SCORER_INVESTIGATE_TOPIC=topics.investigate, SCORER_DEADLETTER_TOPIC=topics.deadletter,
        SCORER_GROUP_ID=group, SCORER_MODEL_URL=model_url,
        SCORER_TRANSACTIONAL_ID_PREFIX=group, **tuning,
    )
    return ManagedProcess(
        f"score-{group}", [*CLAIMFLOW, "score", "--instances", str(instances)], env,
        home / "logs" / f"score-{group}.log",
    ).start()


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU time (user + system) of a process and all its live descendants (Linux /proc).
    By parent links, not by session: BentoML starts its workers in sessions of their own."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process ended while we looked
        pid = int(stat.parent.name)
        # Fields after "(comm)": state ppid pgrp session ... utime(11) stime(12).
        parent[pid] = int(fields[1])
        cpu[pid] = int(fields[11]) + int(fields[12])
    tree = {root_pid}
    grew = True
    while grew:
        children = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(cpu.get(pid, 0) for pid in tree) / ticks


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine so far (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def committed_total(consumer: Consumer, partitions: list[TopicPartition]) -> int:
    return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))


def count_committed(bootstrap: str, topics: Sequence[str], timeout_s: float = 120) -> int:
    """Messages a read_committed consumer sees in ``topics``, read to the end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed", "enable.partition.eof": True,
                         "enable.auto.commit": False})
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
             for p in consumer.list_topics(t, timeout=10).topics[t].partitions]
    consumer.assign(parts)
    pending, count = {(tp.topic, tp.partition) for tp in parts}, 0
    deadline = time.monotonic() + timeout_s
    try:
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(5000, 0.5):
                error = msg.error()
                if error is None:
                    count += 1
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic() or "", msg.partition() or 0))
    finally:
        consumer.close()
    return count


# --------------------------------------------------------------------------- measurements


def in_process(values: Sequence[bytes], estimator: Any, reference: Any, repeats: int
               ) -> dict[str, float]:
    """Decode + score + encode on one core with the service's own model objects."""
    from schemas import ModelRef
    from scorer.model_settings import ModelSettings
    from scoring.model import build_served_model

    model = build_served_model(estimator, reference, ModelRef(name="claim-anomaly", version="1"),
                               "claim-anomaly:v1", ModelSettings())
    # The same treatment the worker and the service give their long-lived heap (the claims
    # held by this benchmark would otherwise be walked by every full collection).
    gc.collect()
    gc.freeze()
    topics = OutcomeTopics("approved", "investigate", "deadletter")
    rates = []
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(values), IN_PROCESS_BATCH):
            chunk = values[start:start + IN_PROCESS_BATCH]
            claims = [Claim.from_json(value) for value in chunk]
            positions = [Position("claims", 0, start + i) for i in range(len(chunk))]
            results = only_results(model.score(claims))
            route_decisions(claims, positions, results, decided_at=datetime.now(UTC),
                            topics=topics)
        rates.append(len(values) / (time.perf_counter() - started))
    # The cores the loop used (numpy may use more than one): the per-core ratio needs it.
    cores = (time.process_time() - cpu_started) / (time.perf_counter() - wall_started)
    return {"claims_per_s": statistics.median(rates), "cpu_cores": cores,
            "min_per_s": min(rates),
            "max_per_s": max(rates), "claims": len(values), "repeats": repeats,
            "batch": IN_PROCESS_BATCH}


def start_produce(bootstrap: str, home: Path, topic: str, claims_csv: Path) -> ManagedProcess:
    """``claimflow produce --from-file``, as the README streams claims (defaults otherwise)."""
    env = child_env(CLAIMFLOW_HOME=str(home), KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    return ManagedProcess(
        f"produce-{topic}", [*CLAIMFLOW, "produce", "--from-file", str(claims_csv),
                             "--topic", topic, "--quiet"],
        env, home / "logs" / f"produce-{topic}.log",
    ).start()


def wait_joined(admin: AdminClient, group: str, members: int, workers: ManagedProcess,
                timeout_s: float = 120) -> float:
    """Until every worker is in the group: a user starts the workers, then produces."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not workers.alive():
            raise RuntimeError(f"workers exited:\n{workers.log_tail()}")
        try:
            described = admin.describe_consumer_groups([group])[group].result(10)
        except (TimeoutError, KafkaException) as exc:
            # A fresh broker creates __consumer_offsets and loads the coordinator first: on
            # a busy machine a single answer can take longer than 10 s. Ask again.
            logger.info("describe %s: %r; asking again", group, exc)
            continue
        if len(described.members) >= members and str(described.state).endswith("STABLE"):
            return time.monotonic() - started
        time.sleep(0.1)  # polling the group's state, bounded by the deadline
    raise RuntimeError(f"{members} worker(s) did not join {group} within {timeout_s:.0f} s")


def throughput_run(bootstrap: str, home: Path, admin: AdminClient, service: ModelService,
                   claims_file: Path, claims: int, setup: Setup, prefix: str = "tput",
                   count_changelog: bool = False) -> dict[str, Any]:
    """First produced claim to last committed claim offset, claims produced meanwhile, from
    ``claims_file`` (CSV or JSON Lines: ``claimflow produce --from-file`` reads both) on
    topics named ``prefix``-something; with ``count_changelog``, the member-state changelog
    records the run committed too."""
    topics = create_topics(admin, prefix)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        partitions = [TopicPartition(topics.claims, p) for p in range(CLAIM_PARTITIONS)]
        probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        workers = start_workers(bootstrap, home, topics, group, service.url, setup.instances,
                                setup.batch_max_size)
        try:
            joined_s = wait_joined(admin, group, setup.instances, workers)
            producer = start_produce(bootstrap, home, topics.claims, claims_file)
            window = follow_whole_path(probe, partitions, claims, workers, service, producer)
            produce_exit = producer.stop(60)
        finally:
            exit_code = workers.stop(60)
            probe.close()
        decisions = count_committed(bootstrap, [topics.approved, topics.investigate])
        changelog = ({"changelog_records": count_committed(bootstrap, [TOPICS.changelog(group)])}
                     if count_changelog else {})
    finally:
        delete_topics(admin, [*topics.all, TOPICS.changelog(group)])
    return {"setup": setup.name, "instances": setup.instances,
            "batch_max_size": setup.batch_max_size, "claims": claims, **window,
            "group_join_s": joined_s, "decisions": decisions, **changelog,
            "exactly_once": decisions == claims, "produce_exit_code": produce_exit,
            "worker_exit_code": exit_code}


def cpu_snapshot(workers: ManagedProcess, service: ModelService) -> dict[str, float]:
    return {"workers": tree_cpu_seconds(workers.pid),
            "model_service": tree_cpu_seconds(service.process.pid),
            "machine": machine_cpu_seconds()}


def produced_total(probe: Consumer, partitions: list[TopicPartition]) -> int:
    return sum(probe.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in partitions)


def follow_whole_path(probe: Consumer, partitions: list[TopicPartition], total: int,
                      workers: ManagedProcess, service: ModelService,
                      producer: ManagedProcess, timeout_s: float = 600) -> dict[str, Any]:
    """From the first claim in the topic until every claim offset is committed, and the CPU
    each part used meanwhile (``machine``: everything, producer and broker included)."""
    command_started = time.perf_counter()
    start: tuple[float, dict[str, float]] | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not workers.alive():
            raise RuntimeError(f"workers exited:\n{workers.log_tail()}")
        if producer.returncode not in (None, 0):
            raise RuntimeError(f"claimflow produce failed:\n{producer.log_tail()}")
        now = time.perf_counter()
        if start is None and produced_total(probe, partitions) > 0:
            start = (now, cpu_snapshot(workers, service))
        if start is not None and committed_total(probe, partitions) >= total:
            return window_figures(start, (time.perf_counter(), cpu_snapshot(workers, service)),
                                  total, command_started)
        time.sleep(0.05)  # sampling interval of the probe, bounded by the deadline
    raise RuntimeError(f"not every claim committed within {timeout_s:.0f} s")


def window_figures(start: tuple[float, dict[str, float]], end: tuple[float, dict[str, float]],
                   claims: int, command_started: float) -> dict[str, Any]:
    """Rate and CPU of one measured window (pure: unit-tested)."""
    (t0, cpu0), (t1, cpu1) = start, end
    seconds = t1 - t0
    used = {name: cpu1[name] - cpu0[name] for name in cpu1}
    cores = {name: value / seconds if seconds > 0 else 0.0 for name, value in used.items()}
    cores["pipeline"] = cores.get("workers", 0.0) + cores.get("model_service", 0.0)
    return {"claims_per_s": claims / seconds if seconds > 0 else 0.0, "seconds": seconds,
            "command_to_first_claim_s": t0 - command_started, "cpu_cores": cores,
            "cpu_us_per_claim": {name: value / claims * 1e6 for name, value in used.items()
                                 if name != "machine"}}


class LatencyReader(threading.Thread):
    """Receives decisions (read_committed) and notes when each claim_id arrived."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        super().__init__(name="latency-reader", daemon=True)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"lat-{uuid.uuid4().hex}",
            "isolation.level": "read_committed", "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5, "enable.auto.commit": False,
        })
        self.consumer.subscribe(topics)
        self.arrived: dict[bytes, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                # poll, not consume: consume waits to fill its batch, which would be timed too.
                msg = self.consumer.poll(0.05)
                if msg is not None and msg.error() is None and msg.key() is not None:
                    self.arrived.setdefault(msg.key() or b"", time.perf_counter())
        finally:
            self.consumer.close()


def latency_run(bootstrap: str, home: Path, admin: AdminClient, model_url: str,
                claims: Sequence[Claim | ClaimV2], rate: float,
                key_of: Callable[[Any], bytes] | None = None) -> dict[str, Any]:
    """``key_of`` gives a claim's message key (default: its claim_id; v2 claims are keyed by
    member_id, which the member stage needs). Latencies are matched by claim_id."""
    topics = create_topics(admin, "lat")
    group = f"bench-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    reader = LatencyReader(bootstrap, [topics.approved, topics.investigate])
    workers = start_workers(bootstrap, home, topics, group, model_url, 1, 1000)
    sent: dict[bytes, float] = {}
    delivery_errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            delivery_errors.append(str(err))

    try:
        reader.start()
        warm_up(producer, reader, topics.claims, claims[0], workers, key_of)
        started = time.perf_counter()
        for i, claim in enumerate(claims[1:]):
            wait = started + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # pacing to the target rate
            key = claim.claim_id.encode()
            sent[key] = time.perf_counter()
            producer.produce(topics.claims, claim.to_json(),
                             key if key_of is None else key_of(claim), on_delivery=delivered)
            producer.poll(0)
        undelivered = producer.flush(30)
        deadline = time.monotonic() + 60
        while len(reader.arrived) < len(claims) and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the last decisions, bounded by the deadline
    finally:
        reader.stop.set()
        reader.join(10)
        exit_code = workers.stop(60)
        delete_topics(admin, [*topics.all, TOPICS.changelog(group)])
    latencies = sorted((reader.arrived[k] - t) * 1000 for k, t in sent.items()
                       if k in reader.arrived)
    if not latencies:
        raise RuntimeError("no decision arrived")
    return {
        "rate_per_s": rate, "claims": len(sent), "decided": len(latencies),
        # A claim without a decision 60 s after the last send is a failure of the figure,
        # not a sample left out of it.
        "missing": len(sent) - len(latencies),
        "producer_errors": len(delivery_errors) + undelivered,
        "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99), "max_ms": latencies[-1],
        "goal_p50_ms": GOAL_P50_MS, "goal_p99_ms": GOAL_P99_MS,
        "goal_met": percentile(latencies, 50) <= GOAL_P50_MS
        and percentile(latencies, 99) <= GOAL_P99_MS and len(latencies) == len(sent)
        and not delivery_errors and not undelivered,
        "worker_exit_code": exit_code,
    }


def warm_up(producer: Producer, reader: LatencyReader, topic: str, claim: Claim | ClaimV2,
            workers: ManagedProcess, key_of: Callable[[Any], bytes] | None = None,
            timeout_s: float = 120) -> None:
    """One claim through the whole path: the worker has joined and the reader is assigned."""
    key = claim.claim_id.encode()
    producer.produce(topic, claim.to_json(), key if key_of is None else key_of(claim))
    producer.flush(30)
    deadline = time.monotonic() + timeout_s
    while key not in reader.arrived:
        if not workers.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"warm-up claim not decided:\n{workers.log_tail()}")
        time.sleep(0.05)  # polling for the warm-up decision, bounded by the deadline


def percentile(sorted_values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(sorted_values), q))


def per_core_ratio(run: dict[str, Any], anchor: dict[str, Any]) -> float | None:
    """Claims per busy core of the machine against claims per core of the in-process loop.

    The machine's cores, not only the workers' and the model service's: the broker and the
    producer are part of the path too, and a quiet machine (the load average is recorded)
    has nothing else to count. The conservative side: it can only make the ratio lower."""
    cores, anchor_cores = float(run["cpu_cores"]["machine"]), float(anchor["cpu_cores"])
    if cores <= 0 or anchor_cores <= 0:
        return None
    return (float(run["claims_per_s"]) / cores) / (float(anchor["claims_per_s"]) / anchor_cores)


# --------------------------------------------------------------------------- entry point


def run(smoke: bool = False) -> dict[str, Any]:
    sizes = SMOKE if smoke else FULL
    load_at_start = os.getloadavg()
    bootstrap = CommonSettings().kafka_bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    with tempfile.TemporaryDirectory(prefix="claimflow-bench-stream-") as tmp:
        home = Path(tmp)
        tag, estimator, reference = make_champion(home)
        claims = realistic_claims(sizes.in_process_claims, seed=21)
        anchor = in_process([c.to_json() for c in claims], estimator, reference, sizes.repeats)
        claims_csv = home / "claims.csv"
        write_claims_csv(generate("realistic", sizes.backlog, seed=21), claims_csv)
        with model_service(home, tag) as service:
            runs = {setup.name: throughput_run(bootstrap, home, admin, service, claims_csv,
                                               sizes.backlog, setup)
                    for setup in sizes.setups}
            latency_claims = realistic_claims(int(sizes.latency_rate * sizes.latency_seconds),
                                              seed=22)
            latency = latency_run(bootstrap, home, admin, service.url, latency_claims,
                                  sizes.latency_rate)
    headline = runs[README_DEFAULT.name]
    return {
        "benchmark": "stream_scoring",
        "smoke": smoke,
        "features": list(CLAIM_FEATURES),
        "throughput": {**headline, "goal_per_s": GOAL_CLAIMS_PER_S,
                       "goal_met": headline["claims_per_s"] >= GOAL_CLAIMS_PER_S},
        "throughput_runs": runs,
        "in_process": anchor,
        "ratio_to_in_process_per_core": {
            **{name: per_core_ratio(run, anchor) for name, run in runs.items()},
            "goal": GOAL_RATIO},
        "latency": latency,
        # The machine is shared: every figure depends on what else ran meanwhile.
        "load_average": {"start": list(load_at_start), "end": list(os.getloadavg())},
        "machine": machine_info(),
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    emit(run(smoke="--smoke" in sys.argv))
