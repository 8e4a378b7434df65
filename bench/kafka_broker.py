"""The local broker: start time, and its own ceiling measured by Kafka's ProducerPerformance.

    python -m bench.kafka_broker [--smoke]

Starts a fresh local broker (temporary CLAIMFLOW_HOME, free ports; never the shared 9092),
times a first start (KRaft format + start, until metadata answers), a stop and a restart,
then runs ``org.apache.kafka.tools.ProducerPerformance`` (from the kafka-tools artifact) with
~200-byte records, acks=all, against a 6-partition topic like ``claims``.

``producer_performance()`` is the reusable anchor: the producer benchmark calls it against
its own broker and topic to report claimflow's producer beside Kafka's own figure.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import emit
from broker import local
from broker.config import PRODUCER_PERFORMANCE_MAIN, java_command, log4j2_properties
from broker.config import render_properties as render
from broker.jars import find_java, install_jars
from broker.settings import KAFKA_VERSION, KafkaSettings
from broker.topics import TopicSpec, ensure_topics

RECORD_SIZE = 200
PARTITIONS = 6
# Durable like the claimflow producer (acks=all, idempotent by default since Kafka 3), with
# batching a throughput-minded producer would use.
PRODUCER_PROPS: Mapping[str, str] = {
    "acks": "all",
    "linger.ms": "5",
    "batch.size": str(256 * 1024),
    "compression.type": "none",
}
SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<records_per_s>[\d.]+) records/sec "
    r"\((?P<mb_per_s>[\d.]+) MB/sec\), (?P<avg_latency_ms>[\d.]+) ms avg latency, "
    r"(?P<max_latency_ms>[\d.]+) ms max latency, (?P<p50_ms>\d+) ms 50th, "
    r"(?P<p95_ms>\d+) ms 95th, (?P<p99_ms>\d+) ms 99th, (?P<p999_ms>\d+) ms 99.9th"
)


def parse_summary(output: str) -> dict[str, float]:
    """The final summary line of ProducerPerformance (the one with percentiles)."""
    matches = list(SUMMARY.finditer(output))
    if not matches:
        raise ValueError(f"no ProducerPerformance summary in output: {output[-500:]!r}")
    found = {key: float(value) for key, value in matches[-1].groupdict().items()}
    found["records"] = int(found["records"])
    return found


def producer_performance(
    bootstrap: str,
    topic: str,
    records: int,
    record_size: int = RECORD_SIZE,
    *,
    settings: KafkaSettings | None = None,
    producer_props: Mapping[str, str] = PRODUCER_PROPS,
) -> dict[str, Any]:
    """Run Kafka's ProducerPerformance once against an existing topic; return its summary.

    ``records_per_s`` and ``mb_per_s`` are the tool's own figures (MB = 2^20 bytes of record
    values); latencies are in milliseconds.
    """
    settings = settings or KafkaSettings()
    java = find_java(settings)
    libs = install_jars(settings)
    with tempfile.TemporaryDirectory(prefix="claimflow-pperf-") as tmp:
        log4j = Path(tmp) / "log4j2.properties"
        log4j.write_text(render(log4j2_properties(None, level="WARN")))
        props = {"bootstrap.servers": bootstrap, **producer_props}
        command = java_command(
            java, libs, PRODUCER_PERFORMANCE_MAIN,
            ["--topic", topic, "--num-records", str(records), "--record-size", str(record_size),
             "--throughput", "-1", "--producer-props",
             *(f"{key}={value}" for key, value in props.items())],
            heap="512m", log4j_config=log4j)
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"ProducerPerformance failed ({done.returncode}): {done.stderr[-2000:]}")
    return {
        "tool": PRODUCER_PERFORMANCE_MAIN,
        "kafka_version": KAFKA_VERSION,
        "record_size": record_size,
        "producer_props": dict(producer_props),
        **parse_summary(done.stdout),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used so far: unlike wall time, barely moved by other load."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def run(smoke: bool = False) -> dict[str, Any]:
    records = 50_000 if smoke else 1_000_000
    # Two shared cores: a busy machine slows a JVM start several-fold; say so beside it.
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="claimflow-bench-broker-") as home:
        settings = KafkaSettings(claimflow_home=Path(home), port=_free_port(),
                                 controller_port=_free_port())
        install_jars(settings)
        # The first graceful stop writes the class-data archive later starts load from.
        archive_before = local.class_archive(settings, find_java(settings)).exists()
        first = local.start(settings)
        first_cpu = _cpu_seconds(first.pid)
        try:
            stopped = local.stop(settings)
            restarted = local.start(settings)
            restart_cpu = _cpu_seconds(restarted.pid)
            topic = "bench-pperf"
            ensure_topics(settings.bootstrap, [TopicSpec(topic, partitions=PARTITIONS)])
            pperf = producer_performance(settings.bootstrap, topic, records, settings=settings)
        finally:
            local.stop(settings)
    return {
        "benchmark": "kafka_broker",
        "kafka_version": KAFKA_VERSION,
        "broker_start": {
            "seconds": round(first.seconds, 2),  # fresh data folder: KRaft format + start
            "cpu_seconds": first_cpu,  # the broker JVM's, until metadata answered
            "restart_seconds": round(restarted.seconds, 2),  # existing data
            "restart_cpu_seconds": restart_cpu,
            "stop_seconds": round(stopped.seconds, 2),
            "graceful_stop": stopped.graceful,
            "class_archive_at_first_start": archive_before,
        },
        "producer_performance": {"partitions": PARTITIONS, **pperf},
        "load_average_1m": {"before": round(load_before, 2),
                            "after": round(os.getloadavg()[0], 2)},
    }


if __name__ == "__main__":
    emit(run(smoke="--smoke" in sys.argv))
