"""Settings shared by every service.

Each service defines its own frozen settings class (with its own env prefix) that inherits
from :class:`CommonSettings`, builds it once in its ``main()`` and passes it down. Nothing
else reads ``os.environ``. Building settings has no side effects: folders are created by
the code that needs them, when it needs them.

The topic names have one home, :data:`TOPICS`: each service's settings take their topic
defaults from it (under the service's own variable names, e.g. ``SCORER_APPROVED_TOPIC`` and
``GATEWAY_APPROVED_TOPIC``), so the services agree unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class TopicNames(BaseModel):
    """The stream's topics: claims in, decisions and dead letters out, investigators' labels,
    shadow scores, and the member-state changelog named after the worker's consumer group."""

    model_config = ConfigDict(frozen=True)

    claims: str = "claims"
    approved: str = "claims.approved"
    investigate: str = "claims.investigate"
    deadletter: str = "claims.deadletter"
    labels: str = "claims.labels"
    shadow: str = "claims.shadow"

    @staticmethod
    def changelog(group_id: str) -> str:
        """The member-state changelog of the workers of ``group_id`` (state belongs to the
        group, like its offsets)."""
        return f"{group_id}.member-state"


TOPICS: Final = TopicNames()


class CommonSettings(BaseSettings):
    """Settings every service shares; read without a prefix."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default=DEFAULT_BOOTSTRAP,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="Kafka bootstrap servers (host:port[,host:port]).",
    )
    claimflow_home: Path = Field(
        default=Path(".claimflow"),
        validation_alias=AliasChoices("CLAIMFLOW_HOME", "claimflow_home"),
        description="State folder: MLflow store, BentoML home, broker data, logs.",
    )

    @property
    def home(self) -> Path:
        """The state folder as an absolute path (not created here)."""
        return self.claimflow_home.expanduser().resolve()

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def default_mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

# For a consumer that reads a backlog (a state restore, the outcome view catching up, a
# snapshot of a topic): librdkafka stops fetching a partition whose local queue is full
# (queued.min.messages, 100,000 by default) and waits fetch.queue.backoff.ms (1 s by
# default) before asking again. A reader that empties the queue faster than that spends
# most of a backlog waiting: restoring 1M members' state took 7-9 s with the default and
# 2.1-2.4 s with 10 ms on this project's test machine. A consumer whose queue never fills
# (one keeping up with a live stream) never reaches the wait, so this costs it nothing.
BACKLOG_READER_CONFIG: Final = {"fetch.queue.backoff.ms": 10}
