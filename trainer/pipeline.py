"""The trainer's use cases: train (and register) a model, promote a version to champion."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modelstore.bento import bento_tag, export_to_bentoml
from modelstore.registry import (
    CHAMPION,
    PREVIOUS_CHAMPION,
    REFERENCE_ARTIFACT,
    RegistryError,
    client_for,
    load_estimator,
    load_reference,
    newest_version,
    run_of_version,
    version_for_alias,
)
from trainer import artifacts
from trainer.data import DataError, Dataset, load_csv
from trainer.gate import (
    TOPIC_LABELS,
    PromotionRefusedError,
    QueueLimit,
    RunRecord,
    Verdict,
    decide,
    evidence,
    gate,
    shadow_gate,
)
from trainer.jsonl import is_jsonl, load_jsonl
from trainer.model import TrainParams, train
from trainer.settings import TrainerSettings
from trainer.shadow_period import read_shadow_period
from trainer.supervised import (
    LabelledSplit,
    SupervisedModel,
    SupervisedParams,
    evaluate_on_holdout,
    latest_labels,
    train_supervised,
)
from trainer.tracking import (
    RegisteredRun,
    StoreConfig,
    log_and_register,
    log_and_register_supervised,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

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
    previous: str | None = None  # the champion before this promotion
    verdict: Verdict | None = None  # None: no gate (first champion, same version, rollback)
    forced: bool = False


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


def promote(settings: TrainerSettings, version: str | None = None, *,
            force: bool = False, strict: bool = False, shadow: bool = False) -> Promotion:
    """Export ``version`` (default: the newest) to BentoML, then move ``champion`` to it,
    if the gate lets it (``trainer.gate``; ``force`` overrides a refusal). The gate reads
    the labelled holdout, and with ``shadow`` the pair's shadow period from the broker;
    ``strict`` (or ``TRAINER_PROMOTE_STRICT``) refuses a candidate with no comparable
    evidence.

    Export first: serving follows the alias, so the alias must never point at a version
    whose BentoML model does not exist yet. The champion it replaces keeps the alias
    ``previous-champion`` (what ``rollback`` returns to).
    """
    name = settings.registered_model
    client = client_for(settings.tracking_uri)
    chosen = version or newest_version(client, name)
    run_id = run_of_version(client, chosen, name)
    previous = current_champion(client, name)
    verdict = None
    if previous is not None and previous[0] != chosen:
        verdict = decide(judge(client, run_id, previous[0], previous[1]),
                         judge_shadow(settings, previous[0], chosen) if shadow else
                         Verdict(passed=True, compared=False, reason="not read"),
                         strict=strict or settings.promote_strict)
        if not verdict.passed and not force:
            raise PromotionRefusedError(
                f"{name} version {chosen} is not promoted: {verdict.reason}. "
                "Use --force to promote it anyway.")
    tag = export_version(settings, client, chosen, run_id)
    if previous is not None and previous[0] != chosen:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous[0])
    client.set_registered_model_alias(name, CHAMPION, chosen)
    promotion = Promotion(version=chosen, run_id=run_id, bento_tag=tag,
                          previous=previous[0] if previous else None, verdict=verdict,
                          forced=bool(force and verdict is not None and not verdict.passed))
    record_promotion(settings, client, promotion, "promote")
    log.info("%s version %s (run %s) is now @%s, exported as %s", name, chosen, run_id,
             CHAMPION, tag)
    return promotion


def rollback(settings: TrainerSettings) -> Promotion:
    """Move ``champion`` back to ``previous-champion`` (and ``previous-champion`` to the
    champion it replaces, so a second rollback undoes the first). No gate: the previous
    champion was served before."""
    name = settings.registered_model
    client = client_for(settings.tracking_uri)
    try:
        back, _ = version_for_alias(client, PREVIOUS_CHAMPION, name)
    except RegistryError as exc:
        raise RegistryError(f"{name} has no previous champion to roll back to") from exc
    current = current_champion(client, name)
    run_id = run_of_version(client, back, name)
    tag = export_version(settings, client, back, run_id)
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current[0])
    client.set_registered_model_alias(name, CHAMPION, back)
    promotion = Promotion(version=back, run_id=run_id, bento_tag=tag,
                          previous=current[0] if current else None)
    record_promotion(settings, client, promotion, "rollback")
    log.info("rolled back: %s version %s is @%s again (was version %s)", name, back, CHAMPION,
             promotion.previous)
    return promotion


def current_champion(client: MlflowClient, name: str) -> tuple[str, str] | None:
    try:
        return version_for_alias(client, CHAMPION, name)
    except RegistryError:
        return None


def export_challenger(settings: TrainerSettings, version: str, run_id: str) -> str:
    """A newly registered ``challenger`` into BentoML too, aliases untouched: the model
    service shadows a challenger from its export (docs/trainer.md)."""
    return export_version(settings, client_for(settings.tracking_uri), version, run_id)


def export_version(settings: TrainerSettings, client: MlflowClient, version: str,
                   run_id: str) -> str:
    """The version's estimator, reference and (for a classifier) threshold into BentoML."""
    name = settings.registered_model
    estimator = load_estimator(settings.tracking_uri, version, name)
    with tempfile.TemporaryDirectory(prefix="claimflow-promote-") as tmp:
        reference = load_reference(client, run_id, Path(tmp))
    threshold = client.get_run(run_id).data.metrics.get("threshold")
    return export_to_bentoml(estimator, reference, version, run_id, settings.bentoml_home, name,
                             threshold=threshold)


def judge(client: MlflowClient, candidate_run: str, champion_version: str,
          champion_run: str) -> Verdict:
    """The gate's verdict from what the runs logged (see :func:`trainer.gate.evidence`)."""
    candidate = client.get_run(candidate_run).data
    champion = client.get_run(champion_run).data if champion_run else None
    return gate(evidence(
        RunRecord(candidate.metrics, candidate.params, candidate.tags),
        None if champion is None else RunRecord(champion.metrics, champion.params,
                                                champion.tags),
        champion_version))


def judge_shadow(settings: TrainerSettings, champion_version: str, candidate_version: str
                 ) -> Verdict:
    """The shadow period's verdict (see :func:`trainer.gate.shadow_gate`); a topic that
    cannot be read is no evidence, said in the reason."""
    if not settings.promote_shadow_topic:
        return Verdict(passed=True, compared=False, reason="not read (no shadow topic set)")
    try:
        period = read_shadow_period(
            settings.kafka_bootstrap_servers, settings.promote_shadow_topic,
            settings.promote_labels_topic, settings.registered_model, champion_version,
            candidate_version, settings.promote_read_timeout_s)
    except DataError as exc:
        log.warning("no shadow evidence: %s", exc)
        return Verdict(passed=True, compared=False, reason=f"not read: {exc}")
    queue = QueueLimit(budget_share=settings.budget_percent / 100.0,
                       max_growth=settings.promote_max_queue_growth,
                       min_claims=settings.promote_min_shadow_claims)
    return shadow_gate(period, champion_version, settings.promote_min_shadow_labelled, queue)


def record_promotion(settings: TrainerSettings, client: MlflowClient, promotion: Promotion,
                     action: str) -> None:
    """The evidence, as tags on the promoted version (its latest promotion) and as a run in
    the ``<experiment>-promotions`` experiment (every promotion, in order)."""
    import mlflow

    record = promotion_record(promotion, action)
    name = settings.registered_model
    for key, value in record.items():
        client.set_model_version_tag(name, promotion.version, f"claimflow.{key}", value)
    experiment = f"{settings.experiment}-promotions"
    found = client.get_experiment_by_name(experiment)
    location = None
    if settings.uses_default_store:
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
        location = settings.artifacts_dir.resolve().as_uri()
    experiment_id = (found.experiment_id if found is not None else
                     client.create_experiment(experiment, artifact_location=location))
    run = client.create_run(experiment_id, run_name=f"{action} v{promotion.version}",
                            tags={"claimflow.component": "promote", "claimflow.action": action})
    for key, value in record.items():
        client.log_param(run.info.run_id, key, value)
    if promotion.verdict is not None:
        for metric, number in promotion.verdict.metrics().items():
            client.log_metric(run.info.run_id, metric, number)
    client.set_terminated(run.info.run_id, mlflow.entities.RunStatus.to_string(
        mlflow.entities.RunStatus.FINISHED))


def promotion_record(promotion: Promotion, action: str) -> dict[str, str]:
    verdict = promotion.verdict
    return {
        "action": action,
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": promotion.version,
        "run_id": promotion.run_id,
        "previous_champion": promotion.previous or "",
        "forced": str(promotion.forced).lower(),
        "gate": ("not applied" if verdict is None else
                 "forced past a refusal" if promotion.forced else
                 "passed" if verdict.compared else "no comparable evidence"),
        "evidence": "" if verdict is None else verdict.reason,
        **({} if verdict is None else {k: f"{v:.6f}" for k, v in verdict.metrics().items()}),
    }


# -- the supervised family ------------------------------------------------------------------


@dataclass(frozen=True)
class SupervisedOutcome:
    run: RegisteredRun
    metrics: dict[str, float]
    labels_used: int
    champion_version: str | None
    seconds: dict[str, float]


def train_supervised_and_register(
    data_path: Path, params: SupervisedParams, settings: TrainerSettings, config: StoreConfig,
    feature_set_name: str | None = None, labels_topic: str | None = None,
) -> SupervisedOutcome:
    """Train the classifier (labels from the file or ``labels_topic``), score the current
    champion over the same file and holdout, log both, register a ``challenger``."""
    from trainer.label_topic import read_labels

    watch = Stopwatch()
    dataset = load_data(data_path, feature_set_name)
    topic_labels, extra = None, {"labels_source": "file:is_anomaly"}
    if labels_topic is not None:
        read = read_labels(settings.kafka_bootstrap_servers, labels_topic)
        topic_labels = latest_labels(read.labels)
        extra = {"labels_source": f"{TOPIC_LABELS}{labels_topic}",
                 "labels_on_topic": str(len(topic_labels))}
    watch.lap("load")
    model = train_supervised(dataset, params, topic_labels)
    watch.lap("train")
    champion = champion_on_holdout(settings, dataset, model, params.budget_percent)
    metrics = dict(model.metrics)
    if champion is not None:
        extra["champion_version"] = champion.version
        metrics.update({f"champion_{k}": v for k, v in champion.metrics.items()})
    watch.lap("champion")
    model = replace(model, metrics=metrics)
    with tempfile.TemporaryDirectory(prefix="claimflow-train-") as tmp:
        folder = Path(tmp)
        write_supervised_artifacts(model, champion, folder)
        watch.lap("artifacts")
        run = log_and_register_supervised(model, dataset, params, config, folder, data_path,
                                          extra)
        watch.lap("mlflow")
    export_challenger(settings, run.version, run.run_id)
    watch.lap("export")
    return SupervisedOutcome(run=run, metrics=metrics, labels_used=model.labels_used,
                             champion_version=champion.version if champion else None,
                             seconds=watch.seconds)


@dataclass(frozen=True)
class ChampionScore:
    version: str
    metrics: dict[str, float]


def champion_on_holdout(settings: TrainerSettings, dataset: Dataset, model: SupervisedModel,
                        budget_percent: float) -> ChampionScore | None:
    """The current champion, loaded like serving loads it, scores the whole file in order
    (``score_claims``: the same member history as the stream) and is judged on the
    classifier's labelled holdout. None when there is no champion or it cannot read these
    claims (a warning says why)."""
    import numpy as np

    from scoring.model import DefaultReasons, ModelLoadError, Wanted, load_served_model
    from scoring.score_file import score_claims

    client = client_for(settings.tracking_uri)
    try:
        version, run_id = version_for_alias(client, CHAMPION, settings.registered_model)
    except RegistryError:
        log.info("no champion yet: nothing to compare with")
        return None
    if not dataset.claims:
        log.warning("the champion is compared on claims of a JSON Lines file only")
        return None
    wanted = Wanted(tag=bento_tag(version, settings.registered_model), version=version,
                    run_id=run_id or None)
    try:
        served = load_served_model(wanted, settings.bentoml_home, DefaultReasons())
    except ModelLoadError as exc:
        log.warning("champion version %s cannot be loaded (%s): no comparison", version, exc)
        return None
    answers = list(score_claims(served, dataset.claims))
    test = answers[len(answers) - model.split.x_test.shape[0]:]
    if any("error_kind" in answer for answer in test):
        log.warning("champion version %s cannot score these claims (%s): no comparison",
                    version, next(a["error"] for a in test if "error_kind" in a))
        return None
    scores = np.asarray([answer["anomaly_score"] for answer in test], dtype=np.float64)
    data = holdout_view(model)
    metrics = evaluate_on_holdout(data, scores, float(test[0]["threshold"]), budget_percent)
    log.info("champion version %s on the same holdout: PR-AUC %.3f, precision at budget %.3f",
             version, metrics.get("pr_auc", float("nan")), metrics["precision_at_budget"])
    return ChampionScore(version=version, metrics=metrics)


def holdout_view(model: SupervisedModel) -> LabelledSplit:
    """The holdout of a trained model, for scoring another model on it."""
    return LabelledSplit(split=model.split, features=model.feature_set,
                         reference=model.reference, y_train=np.empty(0, dtype=bool),
                         x_train=model.split.x_train[:0], test_known=model.test_known,
                         test_rules=model.test_rules)


def write_supervised_artifacts(model: SupervisedModel, champion: ChampionScore | None,
                               folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REFERENCE_ARTIFACT).write_text(model.reference.model_dump_json(indent=2),
                                             encoding="utf-8")
    artifacts.write_json(model.metrics, folder / artifacts.METRICS_JSON)
    full = {"labels": float(model.labels_used), "pr_auc": model.metrics.get("pr_auc", 0.0),
            "precision_at_budget": model.metrics["precision_at_budget"]}
    artifacts.write_json([*model.curve, full], folder / artifacts.LEARNING_CURVE_JSON)
    artifacts.plot_learning_curve(model.curve, full, champion.metrics if champion else None,
                                  folder / artifacts.LEARNING_CURVE)
