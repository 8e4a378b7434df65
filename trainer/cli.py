"""``claimflow train``, ``claimflow promote`` and ``claimflow mlflow-ui``.

Heavy imports (scikit-learn, MLflow, BentoML) happen inside the commands so that
``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from claimflow.logging_setup import configure_logging
from claimflow.settings import TOPICS

if TYPE_CHECKING:
    from trainer.settings import TrainerSettings

# Environment for MLflow/BentoML in this process and the processes it starts: no telemetry,
# no progress bars on artifact downloads. Defaults only: an explicit user setting wins.
QUIET_ENV: Final = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# Field notes: `mlflow server` defaults to many worker processes and a job runner.
UI_ENV: Final = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# features.sets.FEATURE_SETS by name (a unit test keeps them equal): importing the sets here
# would load numpy for every `claimflow --help`.
FEATURE_SET_NAMES: Final = ("v1", "v2-claim", "v2-history", "v2-peers", "v2-velocity")
HEADLINE_METRICS: Final = (
    "train_anomaly_percentage", "test_anomaly_percentage", "threshold", "precision", "recall",
    "f1", "roc_auc", "pr_auc", "precision_at_budget", "recall_at_budget", "naive_pr_auc",
)


def quiet_third_parties() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def load_settings() -> TrainerSettings:
    from pydantic import ValidationError

    from trainer.settings import TrainerSettings

    try:
        return TrainerSettings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid trainer settings: {exc}") from exc


@contextmanager
def clear_errors() -> Iterator[None]:
    """Turn expected failures into a one-line error and exit code 1 (no traceback)."""
    from mlflow.exceptions import MlflowException

    from modelstore.registry import RegistryError
    from trainer.data import DataError
    from trainer.gate import PromotionRefusedError

    try:
        # MLflow writes run links to stdout when tracking to a server; stdout is ours
        # (e.g. `--json`), so library chatter goes to stderr.
        with redirect_stdout(sys.stderr):
            yield
    except (DataError, RegistryError, PromotionRefusedError) as exc:
        raise click.ClickException(str(exc)) from exc
    except MlflowException as exc:
        raise click.ClickException(f"MLflow: {exc.message}") from exc


@click.command()
@click.option("--data", "data_path", required=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="Training data: a v1 CSV (claimflow generate writes one) or JSON Lines "
                   "(.jsonl: one claim per line, v1 or v2, optional is_anomaly/pattern keys).")
@click.option("--n-estimators", type=click.IntRange(1, 10_000), default=None,
              help="Trees in the forest. [default: 100 or TRAINER_N_ESTIMATORS]")
@click.option("--contamination", type=click.FloatRange(0, 0.5, min_open=True), default=None,
              help="Expected anomaly share; sets the threshold. [default: 0.05]")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, help="Held-out share for evaluation. [default: 0.2]")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the split and the forest. [default: 42]")
@click.option("--experiment", default=None,
              help="MLflow experiment. [default: claim-anomaly]")
@click.option("--promote", "then_promote", is_flag=True,
              help="Also make the new version the champion and export it to BentoML.")
@click.option("--feature-set", "feature_set_name",
              type=click.Choice(FEATURE_SET_NAMES), default=None,
              help="Which features the model reads [default: v1 for v1 claims, v2-velocity "
              "for v2 claims].")
@click.option("--supervised", is_flag=True,
              help="Train the supervised family (gradient-boosted classifier on labels) "
              "instead of an Isolation Forest; the champion is scored on the same holdout.")
@click.option("--labels-topic", default=None, is_flag=False, flag_value=TOPICS.labels,
              help="With --supervised: labels from this compacted topic (investigators' "
              "dispositions, joined by claim_id) instead of the file's is_anomaly. "
              "[bare flag: claims.labels]")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def train(data_path: Path, n_estimators: int | None, contamination: float | None,
          test_size: float | None, seed: int | None, experiment: str | None,
          then_promote: bool, feature_set_name: str | None, supervised: bool,
          labels_topic: str | None, as_json: bool) -> None:
    """Train an Isolation Forest on claims (CSV or JSON Lines), log it to MLflow, register a
    version.

    The feature set follows the claims' contract version (v1 -> v1, v2 -> v2-velocity: the
    claim, its codes against references learned from the training split (also against its
    provider's specialty peers), and its member's history before it, computed in file order
    as the stream does; the test split is then the file's last part, in time). The new
    version of `claim-anomaly` gets the alias `challenger`. Example:

        claimflow train --data claims.csv --promote
        claimflow train --data claims_v2.jsonl
    """
    quiet_third_parties()
    configure_logging()
    settings = load_settings()
    from trainer.model import TrainParams
    from trainer.pipeline import export_challenger, store_config, train_and_register
    from trainer.pipeline import promote as promote_version

    if labels_topic is not None and not supervised:
        raise click.UsageError("--labels-topic needs --supervised")
    if supervised:
        if n_estimators is not None or contamination is not None:
            raise click.UsageError("--n-estimators and --contamination are Isolation Forest "
                                   "options; --supervised trains a classifier")
        train_supervised_command(settings, data_path, test_size, seed, experiment,
                                 then_promote, feature_set_name, labels_topic, as_json)
        return
    params = TrainParams(
        n_estimators=n_estimators or settings.n_estimators,
        contamination=contamination or settings.contamination,
        test_size=test_size or settings.test_size,
        seed=settings.seed if seed is None else seed,
        budget_percent=settings.budget_percent,
        naive_quantile=settings.naive_quantile,
    )
    with clear_errors():
        outcome = train_and_register(data_path, params, store_config(settings, experiment),
                                     feature_set_name)
        promotion = promote_version(settings, outcome.run.version) if then_promote else None
        if promotion is None:
            export_challenger(settings, outcome.run.version, outcome.run.run_id)
    result: dict[str, Any] = {
        "run_id": outcome.run.run_id,
        "registered_model": settings.registered_model,
        "version": outcome.run.version,
        "aliases": ["challenger", "champion"] if promotion else ["challenger"],
        "rows_train": outcome.rows_train,
        "rows_test": outcome.rows_test,
        "metrics": outcome.metrics,
        "tracking_uri": settings.tracking_uri,
        "bento_tag": promotion.bento_tag if promotion else None,
        "seconds": outcome.seconds,
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"run {result['run_id']}: {settings.registered_model} version "
               f"{result['version']} @{', @'.join(result['aliases'])}")
    click.echo(f"  rows: {outcome.rows_train} train, {outcome.rows_test} test")
    for key in HEADLINE_METRICS:
        if key in outcome.metrics:
            click.echo(f"  {key:<26} {outcome.metrics[key]:.4f}")
    if promotion:
        click.echo(f"  exported to BentoML as {promotion.bento_tag}")


SUPERVISED_HEADLINES: Final = (
    "labels_used", "threshold", "pr_auc", "precision_at_budget", "recall_at_budget",
    "champion_pr_auc", "champion_precision_at_budget", "champion_recall_at_budget",
)


def train_supervised_command(settings: TrainerSettings, data_path: Path,
                             test_size: float | None, seed: int | None,
                             experiment: str | None, then_promote: bool,
                             feature_set_name: str | None, labels_topic: str | None,
                             as_json: bool) -> None:
    from trainer.pipeline import promote as promote_version
    from trainer.pipeline import store_config, train_supervised_and_register
    from trainer.supervised import SupervisedParams

    params = SupervisedParams(test_size=test_size or settings.test_size,
                              seed=settings.seed if seed is None else seed,
                              budget_percent=settings.budget_percent)
    with clear_errors():
        outcome = train_supervised_and_register(
            data_path, params, settings, store_config(settings, experiment), feature_set_name,
            labels_topic)
        promotion = promote_version(settings, outcome.run.version) if then_promote else None
    result: dict[str, Any] = {
        "run_id": outcome.run.run_id, "registered_model": settings.registered_model,
        "version": outcome.run.version, "family": "gradient-boosting",
        "aliases": ["challenger", "champion"] if promotion else ["challenger"],
        "labels_used": outcome.labels_used, "compared_with_champion": outcome.champion_version,
        "metrics": outcome.metrics, "tracking_uri": settings.tracking_uri,
        "bento_tag": promotion.bento_tag if promotion else None, "seconds": outcome.seconds,
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"run {result['run_id']}: {settings.registered_model} version "
               f"{result['version']} (gradient-boosting) @{', @'.join(result['aliases'])}")
    for key in SUPERVISED_HEADLINES:
        if key in outcome.metrics:
            click.echo(f"  {key:<30} {outcome.metrics[key]:.4f}")
    curve = sorted(k for k in outcome.metrics if k.startswith("curve_"))
    for key in curve:
        click.echo(f"  {key:<30} {outcome.metrics[key]:.4f}")
    if promotion:
        click.echo(f"  exported to BentoML as {promotion.bento_tag}")


@click.command()
@click.option("--version", "version", default=None,
              help="Registry version to promote. [default: the newest]")
@click.option("--force", is_flag=True,
              help="Promote even when the gate finds it worse than the champion.")
@click.option("--rollback", is_flag=True,
              help="Move champion back to the previous champion (alias previous-champion).")
@click.option("--strict", is_flag=True,
              help="Refuse a candidate with no comparable evidence (neither a labelled holdout "
                   "nor a labelled shadow period). [default: TRAINER_PROMOTE_STRICT]")
@click.option("--shadow-period/--no-shadow-period", default=True, show_default=True,
              help="Read the candidate's shadow period (claims.shadow joined with "
                   "claims.labels) from the broker.")
def promote(version: str | None, force: bool, rollback: bool, strict: bool,
            shadow_period: bool) -> None:
    """Make a model version the champion and export it to the BentoML model store.

    Moves the alias `champion` of `claim-anomaly` and saves that version's scikit-learn
    estimator as BentoML model `claim-anomaly:v<N>`. The gate first compares it with the
    current champion on labelled holdout metrics (precision at budget, then PR-AUC) and on
    its shadow period (claims it scored in shadow that investigators then closed: each
    model's precision, and agreement), and refuses a worse one unless --force; --strict also
    refuses one with no comparable evidence. The replaced champion keeps the alias
    `previous-champion`; --rollback returns to it. Each promotion is recorded in MLflow
    with its evidence.
    Examples:

        claimflow promote --version 3
        claimflow promote --rollback
    """
    quiet_third_parties()
    configure_logging()
    settings = load_settings()
    from trainer.pipeline import promote as promote_version
    from trainer.pipeline import rollback as roll_back

    if rollback and (version or force or strict):
        raise click.UsageError("--rollback takes neither --version nor --force nor --strict")
    with clear_errors():
        promotion = roll_back(settings) if rollback else promote_version(
            settings, version, force=force, strict=strict, shadow=shadow_period)
    if promotion.verdict is not None:
        verdict = promotion.verdict
        click.echo(f"gate: {'FORCED past a refusal' if promotion.forced else 'passed'}: "
                   f"{verdict.reason}")
    click.echo(f"{settings.registered_model} version {promotion.version} "
               f"(run {promotion.run_id}) is now @champion"
               + (f" (was version {promotion.previous}, now @previous-champion)"
                  if promotion.previous and promotion.previous != promotion.version else "")
               + f"; BentoML model {promotion.bento_tag} in {settings.bentoml_home}")


def ui_command(settings: TrainerSettings, host: str, port: int) -> list[str]:
    """The `mlflow server` command line for the trainer's store (one worker)."""
    command = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", settings.tracking_uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    if settings.uses_default_store:
        command += ["--default-artifact-root", settings.artifacts_dir.as_uri(),
                    "--no-serve-artifacts"]
    return command


@click.command("mlflow-ui")
@click.option("--host", default=None, help="Interface to bind. [default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port. [default: 5000 or TRAINER_UI_PORT]")
def mlflow_ui(host: str | None, port: int | None) -> None:
    """Run the MLflow UI against the trainer's store until Ctrl-C. Example:

        claimflow mlflow-ui --port 5000
    """
    configure_logging()
    settings = load_settings()
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        raise click.ClickException(f"MLFLOW_TRACKING_URI is a tracking server; open {uri}")
    from modelstore.registry import prepare_store

    prepare_store(uri)
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    host = host or settings.ui_host
    port = port or settings.ui_port
    env = {**os.environ, **QUIET_ENV, **UI_ENV}
    click.echo(f"MLflow UI: http://{host}:{port}  (store {uri}; Ctrl-C stops it)")
    stop_on_interrupt_or_term()
    # Its own process group: `mlflow server` runs uvicorn as a child process, and a stop must
    # reach both (signalling only `mlflow server` can leave uvicorn serving behind).
    process = subprocess.Popen(ui_command(settings, host, port), env=env,
                               start_new_session=True)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        code = stop_process_group(process, grace_s=UI_STOP_GRACE_S)
    sys.exit(code)


UI_STOP_GRACE_S: Final = 10.0


def stop_on_interrupt_or_term() -> None:
    """Ctrl-C and SIGTERM both raise KeyboardInterrupt here. SIGINT is set explicitly:
    a process started by a shell as a background job (``&`` without job control) inherits
    SIGINT as *ignored*, and Python then leaves it ignored, so the UI would not stop."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


def stop_process_group(process: subprocess.Popen[bytes], *, grace_s: float) -> int:
    """SIGTERM to the child's whole group, SIGKILL after ``grace_s``; 0 for a clean stop."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        code = process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        click.echo(f"MLflow UI did not stop within {grace_s:.0f} s: killing it", err=True)
        code = 0
    # Whatever of the group is left (uvicorn's workers, say) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code
