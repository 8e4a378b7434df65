"""Trainer settings: ``TRAINER_*`` plus the unprefixed ``MLFLOW_TRACKING_URI``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from claimflow.settings import TOPICS, CommonSettings


class TrainerSettings(CommonSettings):
    """Defaults of ``claimflow train`` / ``promote`` / ``mlflow-ui`` (CLI options override)."""

    model_config = SettingsConfigDict(env_prefix="TRAINER_", frozen=True, extra="ignore")

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "mlflow_tracking_uri"),
        description="MLflow tracking URI; default: SQLite store under CLAIMFLOW_HOME/mlflow.",
    )
    experiment: str = Field(default="claim-anomaly", description="MLflow experiment name.")
    registered_model: str = Field(
        default="claim-anomaly", description="Registered model name in the MLflow registry."
    )
    n_estimators: int = Field(default=100, ge=1, le=10_000, description="Trees in the forest.")
    contamination: float = Field(
        default=0.05, gt=0.0, le=0.5, description="Expected share of anomalies (sets threshold)."
    )
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0, description="Held-out share.")
    seed: int = Field(default=42, ge=0, description="Seed of the split and the forest.")
    budget_percent: float = Field(
        default=5.0, gt=0.0, le=100.0,
        description="Investigation budget for precision/recall@budget: top N% of test claims.",
    )
    naive_quantile: float = Field(
        default=98.0, gt=0.0, lt=100.0,
        description="Naive baseline: flag claim_amount above this training percentile.",
    )
    serialization_format: Literal["skops", "cloudpickle"] = Field(
        default="skops",
        description="How MLflow stores the estimator: skops (restricted types) or cloudpickle "
        "(faster to save).",
    )
    promote_strict: bool = Field(
        default=False,
        description="`claimflow promote` refuses a candidate with no comparable evidence "
        "(neither a labelled holdout nor a labelled shadow period); `--strict` sets it too.",
    )
    promote_shadow_topic: str = Field(
        default=TOPICS.shadow,
        description="Shadow scores `claimflow promote` reads for the shadow period; empty: "
        "the gate does not read a shadow period.",
    )
    promote_labels_topic: str = Field(
        default=TOPICS.labels, description="Labels joined with the shadow period."
    )
    promote_min_shadow_labelled: int = Field(
        default=20, ge=1,
        description="Labelled investigate decisions each model needs in the shadow period "
        "before the gate compares their precision.",
    )
    promote_max_queue_growth: float = Field(
        default=1.5, gt=1.0,
        description="The gate refuses a candidate whose share of investigate decisions in the "
        "shadow period is above this many times the larger of the champion's share and the "
        "budget (TRAINER_BUDGET_PERCENT): investigators could not work that queue.",
    )
    promote_min_shadow_claims: int = Field(
        default=1_000, ge=1,
        description="Shadowed claims the gate needs before it judges a candidate's queue "
        "size (labels are not needed for that).",
    )
    promote_read_timeout_s: float = Field(
        default=30.0, gt=0.0,
        description="Seconds to read the shadow period; an unreachable broker means no "
        "shadow evidence (refused under strict).",
    )
    ui_host: str = Field(default="127.0.0.1", description="Host of `claimflow mlflow-ui`.")
    ui_port: int = Field(default=5000, ge=1, le=65535, description="Port of `mlflow-ui`.")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or self.default_mlflow_tracking_uri

    @property
    def uses_default_store(self) -> bool:
        return self.mlflow_tracking_uri is None

    @property
    def artifacts_dir(self) -> Path:
        """Artifact root of the embedded store (experiments created here get it)."""
        return self.mlflow_dir / "artifacts"
