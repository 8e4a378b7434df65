"""Settings of the local broker and of topic administration (env prefix ``KAFKA_``).

Built once in a command and passed down; nothing else reads the environment. The shared,
unprefixed ``KAFKA_BOOTSTRAP_SERVERS`` and ``CLAIMFLOW_HOME`` come from ``CommonSettings``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from claimflow.settings import TOPICS, CommonSettings

KAFKA_VERSION = "4.1.1"


class KafkaSettings(CommonSettings):
    """The local broker (``claimflow kafka``) and the topics (``claimflow topics``)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the local broker listens on.")
    port: int = Field(default=9092, ge=1, le=65_535, description="Client port of the local broker.")
    controller_port: int = Field(
        default=9093, ge=1, le=65_535, description="KRaft controller port of the local broker."
    )
    heap: str = Field(
        default="512m", pattern=r"^\d+[kmgKMG]$", description="Java heap of the local broker."
    )
    java: str = Field(default="java", description="Java 17+ executable (name on PATH or path).")
    mvn: str = Field(default="mvn", description="Maven executable used to fetch the Kafka jars.")
    cache_dir: Path = Field(
        default=Path("~/.cache/claimflow"),
        description="Cache outside the repository for the Kafka jars (kafka-<version>/libs).",
    )
    start_timeout_s: float = Field(
        default=90.0, gt=0, description="How long `kafka start` waits for metadata answers."
    )
    stop_timeout_s: float = Field(
        default=60.0, gt=0, description="How long `kafka stop` waits before it kills the broker."
    )
    claims_topic: str = Field(default=TOPICS.claims, description="Input topic of claims.")
    approved_topic: str = Field(default=TOPICS.approved, description="Approved decisions.")
    investigate_topic: str = Field(
        default=TOPICS.investigate, description="Decisions flagged for investigation."
    )
    deadletter_topic: str = Field(
        default=TOPICS.deadletter, description="Input that could not be processed."
    )
    labels_topic: str = Field(
        default=TOPICS.labels,
        description="Investigators' dispositions, keyed by claim_id (compacted: the latest per "
        "claim wins).",
    )
    shadow_topic: str = Field(
        default=TOPICS.shadow,
        description="Champion and challenger side by side (ShadowScore per decided claim, "
        "keyed by claim_id) while a challenger is scored in shadow.",
    )
    partitions: int = Field(
        default=6, ge=1, le=10_000, description="Partitions per topic for `topics create`."
    )

    @property
    def bootstrap(self) -> str:
        """Bootstrap address of the local broker (not of ``KAFKA_BOOTSTRAP_SERVERS``)."""
        return f"{self.host}:{self.port}"

    @property
    def kafka_home(self) -> Path:
        return self.home / "kafka"

    @property
    def data_dir(self) -> Path:
        return self.kafka_home / "data"

    @property
    def server_properties(self) -> Path:
        return self.kafka_home / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.kafka_home / "log4j2.properties"

    @property
    def pid_file(self) -> Path:
        return self.kafka_home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        """The broker's own log (log4j2, rotated)."""
        return self.logs_dir / "kafka.log"

    @property
    def console_file(self) -> Path:
        """The JVM's stdout/stderr: normally empty, holds crashes before logging starts."""
        return self.logs_dir / "kafka.out"

    @property
    def jars_root(self) -> Path:
        return self.cache_dir.expanduser().resolve() / f"kafka-{KAFKA_VERSION}"

    @property
    def libs_dir(self) -> Path:
        return self.jars_root / "libs"

    def topic_names(self) -> list[str]:
        return [self.claims_topic, self.approved_topic, self.investigate_topic,
                self.deadletter_topic, self.labels_topic, self.shadow_topic]
