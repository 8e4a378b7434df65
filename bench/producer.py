"""Producer benchmarks: generate 1M realistic rows to CSV (goal <= 5 s) and produce 500k
claims unthrottled to the broker (goal >= 100,000 claims/s); for contract v2, generate 1M
realistic claims to JSON Lines (goal <= 10 s) and produce 500k claims from such a file (goal
>= 100,000 claims/s for the whole path: read the file, validate, send, flush).

    python -m bench.producer [--smoke]

``produce.pipeline_claims_per_s`` (the headline) is ``claimflow produce`` from the user's
side: encode and validate every claim, send, until the broker acknowledged every claim
(idempotent, acks=all). ``produce.claims_per_s`` is the send phase alone, claims already
encoded and validated (reported as such, never as the producer's rate).
The anchor, ``producer_performance``, is Kafka's ProducerPerformance run right after on the
same broker with as many records of the claims' mean size, to a topic with as many
partitions, with the claimflow producer's own settings (acks, idempotence, linger, batch
size, compression: :func:`same_producer_props`). The broker is the one in
``KAFKA_BOOTSTRAP_SERVERS`` (uuid topics, deleted afterwards).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.common import emit, machine_info
from bench.kafka_broker import producer_performance
from producer.csvio import write_claims_csv
from producer.encoding import encode_claims
from producer.jsonl import read_claims_jsonl, write_claims_jsonl
from producer.kafka import DeliveryTracker, connect, produce_claims
from producer.profiles import generate
from producer.realistic_v2 import generate_realistic_claims
from producer.settings import ProducerSettings

GOAL_GENERATE_S = 5.0
GOAL_GENERATE_V2_S = 10.0
GOAL_PRODUCE_PER_S = 100_000
PARTITIONS = 6  # like the claims topic


def bench_generate(rows: int) -> dict[str, Any]:
    started = time.perf_counter()
    frame = generate("realistic", rows, seed=42)
    generated = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-producer-") as folder:
        path = Path(folder) / "claims.csv"
        write_claims_csv(frame, path)
        written = time.perf_counter()
        size = path.stat().st_size
    seconds = written - started
    full = rows == 1_000_000
    return {
        "rows": rows,
        "seconds": seconds,
        "generate_s": generated - started,
        "write_csv_s": written - generated,
        "csv_bytes": size,
        "goal_s": GOAL_GENERATE_S,
        "goal_met": (seconds <= GOAL_GENERATE_S) if full else None,
    }


def bench_generate_v2(rows: int) -> dict[str, Any]:
    """What ``claimflow generate --profile realistic --out x.jsonl`` does, in process."""
    started = time.perf_counter()
    table = generate_realistic_claims(rows, seed=42)
    generated = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-producer-") as folder:
        path = Path(folder) / "claims.jsonl"
        write_claims_jsonl(table, path)
        written = time.perf_counter()
        size = path.stat().st_size
    seconds = written - started
    return {
        "rows": rows,
        "seconds": seconds,
        "generate_inject_s": generated - started,
        "write_jsonl_s": written - generated,
        "jsonl_bytes": size,
        "goal_s": GOAL_GENERATE_V2_S,
        "goal_met": (seconds <= GOAL_GENERATE_V2_S) if rows == 1_000_000 else None,
    }


def bench_produce_jsonl(rows: int, settings: ProducerSettings) -> dict[str, Any]:
    """``claimflow produce --from-file x.jsonl``: read, validate, send, flush."""
    with tempfile.TemporaryDirectory(prefix="bench-producer-") as folder:
        path = Path(folder) / "claims.jsonl"
        write_claims_jsonl(generate_realistic_claims(rows, seed=7), path)
        with temporary_topic(settings.kafka_bootstrap_servers) as topic:
            cpu_start, started = time.process_time(), time.perf_counter()
            claims, errors = read_claims_jsonl(path)
            read_cpu, read_s = time.process_time() - cpu_start, time.perf_counter() - started
            if errors:
                raise RuntimeError(f"generated claims failed the contract: {errors[:3]}")
            tracker = DeliveryTracker()
            producer = connect(settings, topic, tracker)
            send_cpu_start = time.process_time()
            report = produce_claims(producer, topic, claims, tracker, stop=threading.Event(),
                                    abort=threading.Event(),
                                    flush_timeout_s=settings.flush_timeout_s)
            cpu_end, total_s = time.process_time(), time.perf_counter() - started
    if not report.complete:
        raise RuntimeError(f"produce did not complete: {report}")
    full = rows == 500_000
    pipeline = report.sent / total_s
    return {
        "claims": rows,
        "pipeline_claims_per_s": pipeline,
        "claims_per_s": report.rate,
        "read_validate_s": read_s,
        "send_s": report.elapsed_s,
        "total_s": total_s,
        "process_cpu_s": {"read_validate": read_cpu, "send": cpu_end - send_cpu_start},
        "value_bytes_mean": sum(map(len, claims.values)) / len(claims),
        "partitions": PARTITIONS,
        "goal_per_s": GOAL_PRODUCE_PER_S,
        "goal_met": (pipeline >= GOAL_PRODUCE_PER_S) if full else None,
    }


@contextmanager
def temporary_topic(bootstrap: str) -> Iterator[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    name = f"bench-producer-{uuid.uuid4().hex[:12]}"
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[
        name].result(timeout=30)
    try:
        yield name
    finally:
        admin.delete_topics([name])[name].result(timeout=30)


def bench_produce(rows: int, settings: ProducerSettings) -> dict[str, Any]:
    frame = generate("realistic", rows, seed=7)
    cpu_start, started = time.process_time(), time.perf_counter()
    claims, errors = encode_claims(frame, lambda i: f"row {i + 1}")
    encoded = time.perf_counter()
    if errors:
        raise RuntimeError(f"generated claims failed the contract: {errors[:3]}")
    with temporary_topic(settings.kafka_bootstrap_servers) as topic:
        tracker = DeliveryTracker()
        producer = connect(settings, topic, tracker)
        send_cpu_start = time.process_time()
        report = produce_claims(producer, topic, claims, tracker, stop=threading.Event(),
                                abort=threading.Event(), flush_timeout_s=settings.flush_timeout_s)
        cpu_end = time.process_time()
    if not report.complete:
        raise RuntimeError(f"produce did not complete: {report}")
    encode_s = encoded - started
    full = rows == 500_000
    return {
        "claims": rows,
        "claims_per_s": report.rate,
        "send_s": report.elapsed_s,
        "pipeline_claims_per_s": report.sent / (encode_s + report.elapsed_s),
        "encode_validate_s": encode_s,
        "process_cpu_s": {"encode": send_cpu_start - cpu_start, "send": cpu_end - send_cpu_start},
        "value_bytes_mean": sum(map(len, claims.values)) / len(claims),
        "label_headers": claims.headers is not None,
        "partitions": PARTITIONS,
        "librdkafka": {"linger.ms": settings.linger_ms, "batch.size": settings.batch_size,
                       "compression": settings.compression, "acks": "all",
                       "enable.idempotence": True},
        "goal_per_s": GOAL_PRODUCE_PER_S,
        "goal_met": (report.rate >= GOAL_PRODUCE_PER_S) if full else None,
    }


def same_producer_props(settings: ProducerSettings) -> dict[str, str]:
    """ProducerPerformance configured like ``claimflow produce``: an anchor with other
    batching or compression measures a different producer, not ours."""
    return {"acks": "all", "enable.idempotence": "true",
            "linger.ms": str(settings.linger_ms), "batch.size": str(settings.batch_size),
            "compression.type": settings.compression}


def bench_producer_performance(records: int, bootstrap: str, settings: ProducerSettings,
                               record_size: int) -> dict[str, Any]:
    """The anchor; an error (no Java or Kafka jars, say) is reported, not fatal."""
    try:
        with temporary_topic(bootstrap) as topic:
            return {"partitions": PARTITIONS,
                    **producer_performance(bootstrap, topic, records, record_size,
                                           producer_props=same_producer_props(settings))}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def run(smoke: bool = False) -> dict[str, Any]:
    settings = ProducerSettings()
    claims = 20_000 if smoke else 500_000
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "benchmark": "producer",
        "smoke": smoke,
        "bootstrap": settings.kafka_bootstrap_servers,
        "generate": bench_generate(100_000 if smoke else 1_000_000),
        "produce": bench_produce(claims, settings),
        "generate_v2": bench_generate_v2(100_000 if smoke else 1_000_000),
        "produce_v2": bench_produce_jsonl(claims, settings),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "machine": machine_info(),
    }
    # Records of our claims' mean size, sent with our settings.
    result["producer_performance"] = bench_producer_performance(
        claims, settings.kafka_bootstrap_servers, settings,
        round(result["produce"]["value_bytes_mean"]))
    pperf = result["producer_performance"].get("records_per_s")
    if pperf:
        result["produce"]["ratio_to_producer_performance"] = (
            result["produce"]["claims_per_s"] / pperf)
    return result


if __name__ == "__main__":
    emit(run(smoke="--smoke" in sys.argv))
