"""MLflow: one run per training, the model logged and registered as a new version.

Everything that can fail on bad data has already happened (validation, fit, metrics,
artifacts) before the first call here. If anything fails after the model version exists,
the version is deleted again so that no half-registered model remains; the run itself is
ended as FAILED, which is the honest record of the attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from modelstore.registry import CHALLENGER, client_for, mlflow_uris
from trainer.data import Dataset
from trainer.model import TrainedModel, TrainParams
from trainer.supervised import FAMILY, SupervisedModel, SupervisedParams

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

MODEL_ARTIFACT: Final = "model"
# skops (MLflow's safe default format) refuses unknown types unless listed as trusted.
SKOPS_TRUSTED_TYPES: Final = ["sklearn.tree._tree.Tree",
                               "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
INPUT_EXAMPLE_ROWS: Final = 5


@dataclass(frozen=True)
class StoreConfig:
    """Where runs and models go."""

    tracking_uri: str
    experiment: str
    registered_model: str
    artifact_location: Path | None  # set on experiment creation (embedded store); else default
    serialization_format: str = "skops"


@dataclass(frozen=True)
class RegisteredRun:
    run_id: str
    version: str
    experiment_id: str


def pip_requirements(serialization_format: str) -> list[str]:
    """Pinned to what trained the model; explicit, because inferring them takes seconds."""
    from importlib.metadata import version

    dists = ["scikit-learn", "numpy", "skops" if serialization_format == "skops" else "cloudpickle"]
    return [f"{dist}=={version(dist)}" for dist in dists]


def ensure_experiment(client: MlflowClient, config: StoreConfig) -> str:
    """The experiment's id, creating it (with the embedded artifact folder) when missing."""
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if config.artifact_location is not None:
        config.artifact_location.mkdir(parents=True, exist_ok=True)
        location = config.artifact_location.resolve().as_uri()
    return str(client.create_experiment(config.experiment, artifact_location=location))


def log_and_register(model: TrainedModel, dataset: Dataset, params: TrainParams,
                     config: StoreConfig, artifacts: Path, data_path: Path) -> RegisteredRun:
    """Log one run (params, metrics, artifacts, model) and register a ``challenger`` version."""
    import mlflow

    client = client_for(config.tracking_uri)
    experiment_id = ensure_experiment(client, config)
    with mlflow_uris(config.tracking_uri), \
            mlflow.start_run(experiment_id=experiment_id) as run:
        run_id = run.info.run_id
        mlflow.log_params({**params.as_params(model.feature_set.features),
                           **row_counts(model, dataset),
                           "feature_set": model.feature_set.name,
                           "claim_version": model.feature_set.claim_version,
                           # What the forest used ("auto" resolves per feature set).
                           "max_samples": model.estimator.max_samples})
        mlflow.set_tags({"data_sha256": dataset.sha256, "data_path": str(data_path),
                         "claimflow.component": "trainer"})
        mlflow.log_metrics(model.metrics)
        mlflow.log_artifacts(str(artifacts))
        model_uri = log_model(model, config.serialization_format)
        version = register(client, config, model_uri, run_id, dataset)
        log.info("run %s registered %s version %s (alias %s)", run_id,
                 config.registered_model, version, CHALLENGER)
    return RegisteredRun(run_id=run_id, version=version, experiment_id=experiment_id)


def row_counts(model: TrainedModel, dataset: Dataset) -> dict[str, int]:
    return {
        "rows_read": dataset.rows_read,
        "rows_dropped": dataset.rows_dropped,
        "rows_train": int(model.split.x_train.shape[0]),
        "rows_test": int(model.split.x_test.shape[0]),
    }


def log_model(model: TrainedModel, serialization_format: str) -> str:
    """Log the Isolation Forest (sklearn flavour, signature, input example); returns its URI."""
    return _log_estimator(model, model.estimator.predict, serialization_format, {
        "score": "anomaly_score = -score_samples(x); investigate iff > threshold"})


def register(client: MlflowClient, config: StoreConfig, model_uri: str, run_id: str,
             dataset: Dataset) -> str:
    """New version of the registered model with alias ``challenger``; all or nothing."""
    import mlflow

    version = mlflow.register_model(model_uri, config.registered_model,
                                    tags={"data_sha256": dataset.sha256, "run_id": run_id})
    try:
        client.set_registered_model_alias(config.registered_model, CHALLENGER,
                                          str(version.version))
    except BaseException:
        log.error("could not alias %s version %s; deleting it", config.registered_model,
                  version.version)
        client.delete_model_version(config.registered_model, str(version.version))
        raise
    return str(version.version)


def log_and_register_supervised(model: SupervisedModel, dataset: Dataset,
                                params: SupervisedParams, config: StoreConfig, artifacts: Path,
                                data_path: Path, extra_params: dict[str, str]) -> RegisteredRun:
    """The supervised run: params, every metric (the champion's on the same holdout too),
    the learning curve (also as stepped metrics), the classifier; a ``challenger`` version."""
    import mlflow

    client = client_for(config.tracking_uri)
    experiment_id = ensure_experiment(client, config)
    with mlflow_uris(config.tracking_uri), \
            mlflow.start_run(experiment_id=experiment_id) as run:
        run_id = run.info.run_id
        mlflow.log_params({**params.as_params(), **extra_params,
                           "features": ",".join(model.feature_set.features),
                           "feature_set": model.feature_set.name,
                           "claim_version": model.feature_set.claim_version,
                           "rows_read": dataset.rows_read,
                           "rows_train": int(model.split.x_train.shape[0]),
                           "rows_test": int(model.split.x_test.shape[0])})
        mlflow.set_tags({"data_sha256": dataset.sha256, "data_path": str(data_path),
                         "claimflow.component": "trainer", "claimflow.family": FAMILY})
        mlflow.log_metrics(model.metrics)
        for point in model.curve:
            step = int(point["labels"])
            mlflow.log_metric("learning_curve_pr_auc", point["pr_auc"], step=step)
            mlflow.log_metric("learning_curve_precision_at_budget",
                              point["precision_at_budget"], step=step)
        mlflow.log_artifacts(str(artifacts))
        model_uri = log_classifier(model, config.serialization_format)
        version = register(client, config, model_uri, run_id, dataset)
        log.info("run %s registered %s version %s (%s, alias %s)", run_id,
                 config.registered_model, version, FAMILY, CHALLENGER)
    return RegisteredRun(run_id=run_id, version=version, experiment_id=experiment_id)


def log_classifier(model: SupervisedModel, serialization_format: str) -> str:
    """Log the supervised classifier like :func:`log_model`; returns its URI."""
    return _log_estimator(model, model.estimator.predict_proba, serialization_format, {
        "family": FAMILY,
        "score": "anomaly_score = predict_proba(x)[:, 1]; investigate iff > "
                 "threshold (the budget share of training claims is above it)"})


def _log_estimator(model: TrainedModel | SupervisedModel, predict: Callable[[Any], Any],
                   serialization_format: str, metadata: dict[str, Any]) -> str:
    """The estimator with its signature (from ``predict`` on the input example), its
    features and threshold in the model's metadata, plus ``metadata``; returns its URI."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    # A plain array, like the estimator was fitted on: a DataFrame example would make
    # MLflow's input-example check trip scikit-learn's feature-name warning. The column
    # order is recorded in the model's metadata instead.
    example = model.split.x_train[:INPUT_EXAMPLE_ROWS]
    signature = infer_signature(example, predict(example))
    info = mlflow.sklearn.log_model(
        model.estimator,
        name=MODEL_ARTIFACT,
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(serialization_format),
        serialization_format=serialization_format,
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        metadata={"features": list(model.feature_set.features),
                  "feature_set": model.feature_set.name,
                  "claim_version": model.feature_set.claim_version,
                  "threshold": model.threshold, **metadata},
    )
    return str(info.model_uri)
