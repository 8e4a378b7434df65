"""``claimflow serve-model``, ``claimflow score`` and ``claimflow tail``.

Heavy imports happen inside the commands so that ``claimflow --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from claimflow.logging_setup import configure_logging


@click.command("score")
@click.option(
    "--instances",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes sharing the consumer group (one per core is plenty).",
)
@click.option(
    "--first-instance",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Index of the first worker; worker i uses transactional.id '<prefix>-<i>'. Give each "
    "`claimflow score` command of one host its own range.",
)
@click.option("--log-level", default="INFO", show_default=True, help="Python log level.")
def score(instances: int, first_instance: int, log_level: str) -> None:
    """Score claims from Kafka exactly once: claims -> claims.approved / claims.investigate,
    unreadable input -> claims.deadletter. Settings: SCORER_* environment variables.

    \b
    Example:
      claimflow score --instances 2
      SCORER_MODEL_URL=http://127.0.0.1:3000 SCORER_METRICS_PORT=9464 claimflow score
    """
    from scorer.supervisor import run_workers
    from scorer.worker_settings import ScorerSettings

    configure_logging(log_level)
    settings = ScorerSettings()
    code = run_workers(
        settings, instances=instances, first_instance=first_instance, log_level=log_level
    )
    if code:
        click.echo("claimflow score: stopped on an error (see the log above)", err=True)
    raise SystemExit(code)


@click.command("tail")
@click.argument("outcome", type=click.Choice(["investigate", "approved", "deadletter"]))
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message, not the newest.")
@click.option("--json", "as_json", is_flag=True, help="Print each message's raw JSON.")
@click.option("--max-messages", type=click.IntRange(1), default=None, help="Stop after N messages.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0), default=None,
              help="Stop after S seconds.")
@click.option("--log-level", default="WARNING", show_default=True, help="Python log level.")
def tail(
    outcome: str,
    from_beginning: bool,
    as_json: bool,
    max_messages: int | None,
    timeout_s: float | None,
    log_level: str,
) -> None:
    """Print decisions (or dead letters) as a downstream consumer sees them: committed only,
    each validated against its contract. Invalid messages are reported on stderr.

    \b
    Example:
      claimflow tail investigate
      claimflow tail deadletter --from-beginning --max-messages 10
      claimflow tail approved --json --timeout 5 | jq .anomaly_score
    """
    from scorer.tail import run_tail
    from scorer.worker_settings import OutcomeName, ScorerSettings

    configure_logging(log_level)
    summary = run_tail(
        ScorerSettings(),
        cast(OutcomeName, outcome),  # click.Choice checked it
        from_beginning=from_beginning,
        as_json=as_json,
        max_messages=max_messages,
        timeout_s=timeout_s,
        emit=click.echo,
        report=lambda line: click.echo(line, err=True),
    )
    if summary.invalid:
        click.echo(f"{summary.invalid} invalid message(s) reported", err=True)


# --- claimflow serve-model (model service) ----------------------------------------------

SERVICE_TARGET = "scorer.service:ClaimAnomalyService"
SERVICE_NAME = "claim_anomaly"  # @bentoml.service(name=...) in scorer/service.py


def serve_argv(host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command line (the venv's own ``bentoml`` when there is one)."""
    import sys
    from pathlib import Path

    local = Path(sys.executable).with_name("bentoml")
    project_root = Path(__file__).resolve().parent.parent
    return [
        str(local) if local.exists() else "bentoml", "serve", SERVICE_TARGET,
        "--host", host, "--port", str(port), "--working-dir", str(project_root),
    ]


def serve_env(base: dict[str, str], home: str, bentoml_home: str, workers: int,
              access_log: bool = False) -> dict[str, str]:
    """``base`` plus what the service process must see: absolute state folders (the
    service builds its own settings from them), no telemetry, the worker count."""
    env = dict(base)
    env.update(
        CLAIMFLOW_HOME=home,
        BENTOML_HOME=bentoml_home,
        BENTOML_DO_NOT_TRACK="true",
        DO_NOT_TRACK="true",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    option = f"services.{SERVICE_NAME}.workers={workers}"
    if not access_log:
        option += f" services.{SERVICE_NAME}.logging.access.enabled=false"
    earlier = base.get("BENTOML_CONFIG_OPTIONS")
    env["BENTOML_CONFIG_OPTIONS"] = f"{earlier} {option}" if earlier else option
    return env


@click.command("serve-model")
@click.option("--port", type=click.IntRange(1, 65_535), default=None,
              help="Port to listen on [default: MODEL_PORT or 3000].")
@click.option("--host", default=None, help="Interface to bind [default: MODEL_HOST or 127.0.0.1].")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="BentoML worker processes [default: MODEL_WORKERS or 1].")
def serve_model(port: int | None, host: str | None, workers: int | None) -> None:
    """Run the BentoML model service: scores claims with the registry champion of
    claim-anomaly, reloads a new champion without restarting. Settings: MODEL_* variables.

    \b
    Endpoints: POST /score_batch, /score, /reload; GET /livez, /readyz, /metrics, /docs.json
    Example:
      claimflow serve-model --port 3000
      curl -s -XPOST localhost:3000/reload
    """
    import os

    from scorer.model_settings import ModelSettings

    settings = ModelSettings()
    host = host or settings.host
    port = port or settings.port
    settings.bentoml_home.mkdir(parents=True, exist_ok=True)
    argv = serve_argv(host, port)
    env = serve_env(dict(os.environ), str(settings.home), str(settings.bentoml_home),
                    workers or settings.workers, settings.access_log)
    click.echo(f"model service on http://{host}:{port} (BentoML store {settings.bentoml_home})")
    # exec: signals (Ctrl-C, SIGTERM from a process manager) reach BentoML directly and no
    # wrapper process is left behind.
    os.execvpe(argv[0], argv, env)  # noqa: S606 - fixed argv, no shell


@click.command("score-file")
@click.option("--data", "data_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Claims as JSON Lines, in stream order (label keys are ignored).")
@click.option("--out", "out_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write one answer per claim (JSON Lines).")
@click.option("--model", "tag", default=None,
              help="A BentoML model tag to use instead of the registry champion.")
def score_file(data_path: Path, out_path: Path, tag: str | None) -> None:
    """Decide a file of claims offline, exactly as the stream would: the same member
    history, features and champion model, without a broker. Each output line has
    claim_id, anomaly_score (higher is more unusual), threshold, decision, reasons, model.

    \b
    Example:
      claimflow score-file --data data/claims.jsonl --out scored.jsonl
    """
    from scorer.holder import ModelHolder
    from scorer.model_settings import ModelSettings
    from scoring.model import ModelLoadError, PinnedSource
    from scoring.score_file import ScoreFileError
    from scoring.score_file import score_file as run

    configure_logging("WARNING")
    settings = ModelSettings()
    holder = ModelHolder(settings, PinnedSource(tag) if tag else None)
    try:
        model = holder.refresh()
        with out_path.open("wb") as out:
            counts = run(model, data_path, out)
    except (ModelLoadError, ScoreFileError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"scored {sum(counts.values()):,} claims with {model.ref.name} "
               f"v{model.ref.version} -> {out_path}: {counts['investigate']:,} investigate, "
               f"{counts['approve']:,} approve, {counts['refused']:,} refused")
