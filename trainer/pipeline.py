"""The trainer's use cases: train (and register) a model, promote a version to champion."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from modelstore.bento import export_to_bentoml
from modelstore.registry import (
    CHAMPION,
    client_for,
    load_estimator,
    load_reference,
    newest_version,
    run_of_version,
)
from trainer import artifacts
from trainer.data import DataError, Dataset, load_csv
from trainer.jsonl import is_jsonl, load_jsonl
from trainer.model import TrainParams, train
from trainer.settings import TrainerSettings
from trainer.tracking import RegisteredRun, StoreConfig, log_and_register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOutcome:
    run: RegisteredRun
    metrics: dict[str, float]
    rows_train: int
    rows_test: int
    seconds: dict[str, float]  # wall time per phase: load, train, artifacts, mlflow


class Stopwatch:
    """Wall time of consecutive phases."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = now - self._last
        self._last = now


@dataclass(frozen=True)
class Promotion:
    version: str
    run_id: str
    bento_tag: str


def store_config(settings: TrainerSettings, experiment: str | None = None) -> StoreConfig:
    return StoreConfig(
        tracking_uri=settings.tracking_uri,
        experiment=experiment or settings.experiment,
        registered_model=settings.registered_model,
        # Without an explicit location, the embedded store would put artifacts under the
        # current directory; with a tracking server, the server decides.
        artifact_location=settings.artifacts_dir if settings.uses_default_store else None,
        serialization_format=settings.serialization_format,
    )


def load_data(path: Path, feature_set_name: str | None = None) -> Dataset:
    """JSON Lines (``.jsonl``/``.ndjson``: claims of any one version) or CSV (v1 columns)."""
    if is_jsonl(path):
        return load_jsonl(path, feature_set_name)
    if feature_set_name not in (None, "v1"):
        raise DataError(f"{path}: a CSV file holds v1 claims; feature set {feature_set_name} "
                        "reads v2 claims (JSON Lines)")
    return load_csv(path)


def train_and_register(data_path: Path, params: TrainParams, config: StoreConfig,
                       feature_set_name: str | None = None) -> TrainOutcome:
    """Validate, train and evaluate completely, then log and register in one run."""
    watch = Stopwatch()
    dataset = load_data(data_path, feature_set_name)
    watch.lap("load")
    model = train(dataset, params)
    watch.lap("train")
    with tempfile.TemporaryDirectory(prefix="claimflow-train-") as tmp:
        folder = Path(tmp)
        artifacts.write_all(model, folder)
        watch.lap("artifacts")
        run = log_and_register(model, dataset, params, config, folder, data_path)
        watch.lap("mlflow")
    log.info("training took %.2f s (%s)", sum(watch.seconds.values()),
             ", ".join(f"{k} {v:.2f} s" for k, v in watch.seconds.items()))
    return TrainOutcome(run=run, metrics=model.metrics,
                        rows_train=int(model.split.x_train.shape[0]),
                        rows_test=int(model.split.x_test.shape[0]), seconds=watch.seconds)


def promote(settings: TrainerSettings, version: str | None = None) -> Promotion:
    """Export ``version`` (default: the newest) to BentoML, then move ``champion`` to it.

    Export first: serving follows the alias, so the alias must never point at a version
    whose BentoML model does not exist yet.
    """
    name = settings.registered_model
    client = client_for(settings.tracking_uri)
    chosen = version or newest_version(client, name)
    run_id = run_of_version(client, chosen, name)
    estimator = load_estimator(settings.tracking_uri, chosen, name)
    with tempfile.TemporaryDirectory(prefix="claimflow-promote-") as tmp:
        reference = load_reference(client, run_id, Path(tmp))
    tag = export_to_bentoml(estimator, reference, chosen, run_id, settings.bentoml_home, name)
    client.set_registered_model_alias(name, CHAMPION, chosen)
    log.info("%s version %s (run %s) is now @%s, exported as %s", name, chosen, run_id,
             CHAMPION, tag)
    return Promotion(version=chosen, run_id=run_id, bento_tag=tag)
