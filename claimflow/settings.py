"""Settings shared by every service.

Each service defines its own frozen settings class (with its own env prefix) that inherits
from :class:`CommonSettings`, builds it once in its ``main()`` and passes it down. Nothing
else reads ``os.environ``. Building settings has no side effects: folders are created by
the code that needs them, when it needs them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


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
