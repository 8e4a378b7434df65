"""Settings of the model service (``claimflow serve-model``): env prefix ``MODEL_``, plus the
unprefixed ``MLFLOW_TRACKING_URI`` shared with the trainer. Built once per process (in the
command, and in the BentoML service's constructor) and passed down."""

from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from claimflow.settings import CommonSettings
from scoring.model import DefaultReasons


class ModelSettings(CommonSettings):
    """Everything the model service needs (all overridable as ``MODEL_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="MODEL_", frozen=True, extra="ignore")

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "mlflow_tracking_uri"),
        description="MLflow tracking/registry URI; default: SQLite store under CLAIMFLOW_HOME.",
    )
    registered_model: str = Field(
        default="claim-anomaly", description="Registered model whose alias is served."
    )
    alias: str = Field(default="champion", description="Registry alias that is served.")
    tag: str | None = Field(
        default=None,
        description="Serve this BentoML model tag (e.g. claim-anomaly:v3) instead of asking "
        "the registry: for a Bento deployed without MLflow.",
    )
    shadow_alias: str = Field(
        default="challenger",
        description="Registry alias scored in shadow beside the champion while it exists "
        "(`/score_batch` with shadow=true); empty: no shadow model.",
    )
    shadow_tag: str | None = Field(
        default=None,
        description="Score this BentoML model tag in shadow instead of the registry alias "
        "(deployments without MLflow). With MODEL_TAG set and this unset: no shadow model.",
    )
    poll_interval_s: float = Field(
        default=10.0, ge=0, description="How often the registry alias is checked; 0 = only /reload."
    )
    host: str = Field(default="127.0.0.1", description="Interface `serve-model` binds to.")
    port: int = Field(default=3000, ge=1, le=65_535, description="Port of `serve-model`.")
    workers: int = Field(default=1, ge=1, le=64, description="BentoML worker processes.")
    access_log: bool = Field(
        default=False,
        description="BentoML's access log line per request (costs ~0.1 ms, a tenth of a "
        "/score call; requests are counted in /metrics either way).",
    )
    max_reasons: int = Field(default=DefaultReasons.max_reasons, ge=0, le=5,
                             description="Most reasons per claim.")
    reason_high_percentile: float = Field(
        default=DefaultReasons.reason_high_percentile, gt=0, le=100,
        description="A feature above this percentile is a reason.",
    )
    reason_low_percentile: float = Field(
        default=DefaultReasons.reason_low_percentile, ge=0, lt=100,
        description="A feature below this percentile is a reason.",
    )

    @model_validator(mode="after")
    def _tails_ordered(self) -> ModelSettings:
        if self.reason_low_percentile >= self.reason_high_percentile:
            raise ValueError("MODEL_REASON_LOW_PERCENTILE must be below the high one")
        return self

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or self.default_mlflow_tracking_uri
