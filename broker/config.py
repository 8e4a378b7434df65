"""Pure rendering of the broker's configuration: server.properties, log4j2, java command lines.

No I/O here, so the container harness, the benchmark and unit tests render exactly what the
local broker runs with.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"
PRODUCER_PERFORMANCE_MAIN = "org.apache.kafka.tools.ProducerPerformance"

# G1 with short pauses, as Kafka's own start scripts use; exit instead of limping on OOM.
BROKER_JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


@dataclass(frozen=True)
class BrokerConfig:
    """One combined broker+controller KRaft node."""

    listen_host: str
    port: int
    controller_port: int
    data_dir: str
    advertised_host: str | None = None  # defaults to listen_host
    advertised_port: int | None = None  # a container's mapped port differs from its own
    controller_host: str = "127.0.0.1"
    # A listener for the broker's calls to itself (e.g. the partition leader asking the
    # transaction coordinator). Needed when clients reach the broker at an address the broker
    # cannot reach itself, like a container's mapped port.
    internal_port: int | None = None
    node_id: int = 1
    internal_partitions: int = 10


def server_properties(cfg: BrokerConfig) -> dict[str, str]:
    """Broker settings for a single node on which transactions work."""
    advertised = f"{cfg.advertised_host or cfg.listen_host}:{cfg.advertised_port or cfg.port}"
    listeners = [f"PLAINTEXT://{cfg.listen_host}:{cfg.port}",
                 f"CONTROLLER://{cfg.controller_host}:{cfg.controller_port}"]
    advertised_listeners = [f"PLAINTEXT://{advertised}"]
    inter_broker = "PLAINTEXT"
    if cfg.internal_port is not None:
        internal = f"INTERNAL://{cfg.controller_host}:{cfg.internal_port}"
        listeners.append(internal)
        advertised_listeners.append(internal)
        inter_broker = "INTERNAL"
    protocols = [f"{name.split(':')[0]}:PLAINTEXT" for name in listeners]
    return {
        "process.roles": "broker,controller",
        "node.id": str(cfg.node_id),
        "controller.quorum.voters": f"{cfg.node_id}@{cfg.controller_host}:{cfg.controller_port}",
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised_listeners),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": inter_broker,
        "listener.security.protocol.map": ",".join(protocols),
        "log.dirs": cfg.data_dir,
        # One node: every internal topic must live with a single replica, or consumer
        # groups and transactions never become available.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # 50 partitions each (the default) make the first group join and the first
        # transaction wait for 100 partitions to be created on one small machine.
        "offsets.topic.num.partitions": str(cfg.internal_partitions),
        "transaction.state.log.num.partitions": str(cfg.internal_partitions),
        # Topics are created on purpose (`claimflow topics create`), never by a typo.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        # A single-node dev broker has nobody else to wait for before the first rebalance.
        "group.initial.rebalance.delay.ms": "0",
        # A dead worker's open transaction keeps its partitions' offsets unstable, so whoever
        # inherits them cannot commit until the coordinator aborts it. The coordinator looks
        # for timed-out transactions every 10 s by default, so the abort came 10-20 s after
        # the transaction began (the worker's transaction timeout is 10 s); every second
        # makes that 10-11 s.
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    }


def render_properties(props: Mapping[str, str], header: str = "") -> str:
    """Java .properties text (keys sorted so that a re-render is byte-identical)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for key in sorted(props):
        lines.append(f"{_escape(key, is_key=True)}={_escape(props[key], is_key=False)}")
    return "\n".join(lines) + "\n"


def _escape(text: str, *, is_key: bool) -> str:
    if "\n" in text or "\r" in text:
        raise ValueError(f"line break in property {text!r}")
    text = text.replace("\\", "\\\\")
    if is_key:
        text = re.sub(r"([=: ])", r"\\\1", text)
    return text


def log4j2_properties(log_file: Path | None, level: str = "INFO") -> dict[str, str]:
    """log4j2 settings: a rotated file when ``log_file`` is given, else the console."""
    props = {
        "status": "warn",
        "name": "claimflow-kafka",
        "rootLogger.level": level,
        # Per-request logging is for debugging a protocol problem, not for a dev broker.
        "logger.request.name": "kafka.request.logger",
        "logger.request.level": "WARN",
    }
    layout = "[%d] %p %m (%c)%n"
    if log_file is None:
        props |= {
            "appender.out.type": "Console",
            "appender.out.name": "out",
            "appender.out.target": "SYSTEM_ERR" if level != "INFO" else "SYSTEM_OUT",
            "appender.out.layout.type": "PatternLayout",
            "appender.out.layout.pattern": layout,
            "rootLogger.appenderRef.out.ref": "out",
        }
        return props
    return props | {
        "appender.file.type": "RollingFile",
        "appender.file.name": "file",
        "appender.file.fileName": str(log_file),
        "appender.file.filePattern": f"{log_file}.%i",
        "appender.file.layout.type": "PatternLayout",
        "appender.file.layout.pattern": layout,
        "appender.file.policies.type": "Policies",
        "appender.file.policies.size.type": "SizeBasedTriggeringPolicy",
        "appender.file.policies.size.size": "20MB",
        "appender.file.strategy.type": "DefaultRolloverStrategy",
        "appender.file.strategy.max": "5",
        "rootLogger.appenderRef.file.ref": "file",
    }


def cluster_id(random16: bytes) -> str:
    """A KRaft cluster id from 16 random bytes, in Kafka's Uuid text form."""
    if len(random16) != 16:
        raise ValueError("a cluster id needs 16 random bytes")
    text = base64.urlsafe_b64encode(random16).decode().rstrip("=")
    # Kafka itself never hands out ids starting with '-': they read as command-line flags.
    return text if not text.startswith("-") else "A" + text[1:]


def java_command(
    java: str,
    libs_dir: Path | str,
    main_class: str,
    args: Sequence[str],
    *,
    heap: str,
    log4j_config: Path | str,
    jvm_flags: Sequence[str] = (),
) -> list[str]:
    """``java ... -cp <libs>/* <main> <args>``: one command line for broker and tools."""
    return [
        java,
        f"-Xmx{heap}",
        f"-Xms{heap}",
        *jvm_flags,
        f"-Dlog4j2.configurationFile={log4j_config}",
        "-cp",
        f"{libs_dir}/*",
        main_class,
        *args,
    ]

