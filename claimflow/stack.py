"""``claimflow up`` / ``claimflow down``: the whole pipeline on this machine, one command.

``up`` prepares, then runs:

1. Kafka: a broker that already answers is used as it is; otherwise the local one is started
   (``claimflow kafka start``) and stopped again when the stack stops.
2. Topics: ``claimflow topics create`` (idempotent).
3. A champion model: when the registry has none, ``claimflow generate`` + ``claimflow train
   --promote``; when the champion exists but is missing from the BentoML store,
   ``claimflow promote``. A second run skips all of this.
4. The long-lived processes under honcho's process manager (Procfile semantics, one process
   group each): model service, scorer workers, gateway, MLflow UI, producer and a summary
   process that prints the URLs once they answer and a live approved / investigated /
   dead-lettered rate read from the outcome topics (read_committed).

Ctrl-C (SIGINT) or SIGTERM (what ``claimflow down`` sends) stops every process group
(SIGTERM, then SIGKILL after honcho's grace period); state under ``CLAIMFLOW_HOME`` stays.
Every process the stack starts carries ``CLAIMFLOW_STACK_ID`` in its environment, so
``claimflow down`` can find stragglers even when ``up`` itself was killed.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from claimflow.logging_setup import configure_logging
from claimflow.stack_plan import (
    STREAM_CLAIM_VERSION,
    BrokerPlan,
    ModelAction,
    ModelStatus,
    Proc,
    StackError,
    StackSettings,
    StackState,
    child_env,
    endpoints,
    exit_code,
    option_name,
    plan_broker,
    plan_model,
    render_procfile,
    resolve_bootstrap,
    stack_processes,
    store_is_missing,
    tail_hint,
    url_banner,
)
from claimflow.stack_procs import (
    claimflow_executable,
    is_stack_process,
    local_broker_pid,
    marked_processes,
    mlflow_tracking_server,
    read_state,
    running_stack,
    say,
    start_detached,
    sweep,
    terminate_all,
    wait_gone,
    write_state,
)
from claimflow.stack_summary import summary_command

# --------------------------------------------------------------------------- preparing


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def check_ports(settings: StackSettings, *, mlflow_ui: bool = True) -> None:
    wanted = [("gateway", settings.gateway_port, "STACK_GATEWAY_PORT"),
              ("model service", settings.model_port, "STACK_MODEL_PORT")]
    if mlflow_ui:
        wanted.append(("MLflow UI", settings.mlflow_port, "STACK_MLFLOW_PORT"))
    taken = [(name, port, var) for name, port, var in wanted
             if port_in_use(settings.host, port)]
    if taken:
        lines = [f"port {port} ({name}) on {settings.host} is already in use: stop what listens "
                 f"there, or pick another port with {var}=<port> or {option_name(var)} <port>"
                 for name, port, var in taken]
        raise StackError("\n".join(lines) + "\n(a stack left running? `claimflow down`)")


def run_step(title: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Run one preparation command, its output going straight to the terminal."""
    began = time.monotonic()
    say(f"{title}: {shlex.join(argv)}")
    result = subprocess.run(list(argv), env=dict(env), check=False)
    if result.returncode != 0:
        raise StackError(f"{title} failed (exit code {result.returncode}); see its output above")
    say(f"{title}: done in {time.monotonic() - began:.1f} s")


def broker_answers(bootstrap: str) -> bool:
    from broker.admin import metadata_answers

    return metadata_answers(bootstrap, timeout_s=3.0)


def wait_for_broker(bootstrap: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker_answers(bootstrap):
            return True
        time.sleep(1.0)
    return False


def local_broker_bootstrap() -> str:
    from broker.settings import KafkaSettings

    return KafkaSettings().bootstrap


def prepare_broker(
    settings: StackSettings, env: Mapping[str, str], bootstrap: str, exe: str
) -> bool:
    """Make sure a broker answers; returns whether this stack started it."""
    local = local_broker_bootstrap()
    plan = plan_broker(broker_answers(bootstrap), bootstrap, local)
    if plan is BrokerPlan.UNREACHABLE and settings.broker_wait_s > 0:
        say(f"Kafka: waiting up to {settings.broker_wait_s:g} s for {bootstrap}")
        if wait_for_broker(bootstrap, settings.broker_wait_s):
            plan = BrokerPlan.USE_RUNNING
    if plan is BrokerPlan.USE_RUNNING:
        say(f"Kafka: using the broker at {bootstrap}")
        return False
    if plan is BrokerPlan.UNREACHABLE:
        raise StackError(
            f"no Kafka broker answers at KAFKA_BOOTSTRAP_SERVERS={bootstrap}; start it, or unset "
            "KAFKA_BOOTSTRAP_SERVERS to let `claimflow up` run the local broker")
    try:
        run_step("start the local Kafka broker", [exe, "kafka", "start"], env)
    except StackError as exc:
        raise StackError(
            f"{exc.message}.\nAlternatives: point KAFKA_BOOTSTRAP_SERVERS at a running broker, "
            "or run the containerised stack (docker compose up, see docs/compose.md)") from exc
    return True


def start_model_status(env: Mapping[str, str]) -> subprocess.Popen[str]:
    """Ask a child interpreter which champion the registry has. It runs while the broker
    starts (importing MLflow alone takes seconds) and keeps MLflow and BentoML out of this
    long-lived process."""
    say("model: looking for a champion in the registry (in the background)")
    return subprocess.Popen(
        [sys.executable, "-m", "claimflow.stack", "model-status"],
        env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish_model_status(proc: subprocess.Popen[str]) -> ModelStatus:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise StackError(f"could not read the model registry:\n{err.strip()}")
    return ModelStatus.from_json(out.strip().splitlines()[-1])


def prepare_model(
    settings: StackSettings, env: Mapping[str, str], exe: str, status: ModelStatus
) -> None:
    action = plan_model(status)
    if action is ModelAction.READY:
        say(f"model: champion is version {status.champion} (training skipped)")
        return
    if action is ModelAction.PROMOTE:
        run_step("export the champion", [exe, "promote", "--version", str(status.champion)], env)
        return
    if status.champion is not None and status.claim_version != STREAM_CLAIM_VERSION:
        say(f"model: champion {status.champion} reads v{status.claim_version} claims; the demo "
            f"streams v{STREAM_CLAIM_VERSION}: training a new champion")
    elif status.champion is not None:
        say(f"model: champion {status.champion} reads other features than this version's "
            "feature set: training a new champion")
    data = settings.training_file()
    if not data.exists():
        settings.datasets_dir.mkdir(parents=True, exist_ok=True)
        run_step("generate training data", [
            exe, "generate", "--profile", "realistic", "--seed", str(settings.seed),
            "--rows", str(settings.rows), "--out", str(data)], env)
    run_step("train and promote a model", [exe, "train", "--data", str(data), "--promote"], env)


def run_processes(
    procs: Sequence[Proc], env: Mapping[str, str], cwd: Path, grace_s: float
) -> int | None:
    """Run the processes under honcho's manager until one stops or a signal arrives."""
    from honcho import manager as honcho_manager
    from honcho.manager import Manager

    # honcho sends SIGKILL this long after SIGTERM (a module constant, 5 s by default);
    # BentoML's graceful stop alone can take longer than that on a busy machine.
    honcho_manager.KILL_WAIT = grace_s
    manager = Manager()
    for proc in procs:
        manager.add_process(proc.name, proc.command, env=dict(env), cwd=str(cwd))
    manager.loop()
    rc: int | None = manager.returncode
    return rc


def stop_local_broker(exe: str, env: Mapping[str, str]) -> None:
    say("stopping the local Kafka broker (data is kept)")
    subprocess.run([exe, "kafka", "stop"], env=dict(env), check=False)


def ignore_signals_while_stopping() -> None:
    """After honcho returns, a second Ctrl-C must not cut the broker's graceful stop short."""

    def note(signum: int, _frame: object) -> None:
        say(f"{signal.Signals(signum).name}: still stopping, please wait")

    signal.signal(signal.SIGINT, note)
    signal.signal(signal.SIGTERM, note)


def raise_on_sigterm() -> None:
    """Until honcho installs its own handlers, SIGTERM unwinds like Ctrl-C (cleanup runs)."""

    def handle(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handle)


# --------------------------------------------------------------------------- commands


@click.command("up")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Claims per second to stream  [default: STACK_RATE, 200]")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Stop by itself after S seconds of running (tests, demos).")
@click.option("--gateway-port", type=click.IntRange(1, 65_535), default=None,
              help="Gateway and dashboard port  [default: STACK_GATEWAY_PORT, 5005]")
@click.option("--model-port", type=click.IntRange(1, 65_535), default=None,
              help="Model service port  [default: STACK_MODEL_PORT, 3000]")
@click.option("--mlflow-port", type=click.IntRange(1, 65_535), default=None,
              help="MLflow UI port  [default: STACK_MLFLOW_PORT, 5000]")
@click.option("--rows", type=click.IntRange(min=1_000), default=None,
              help="Training rows when no champion exists  [default: STACK_ROWS, 50000]")
@click.option("--detach", "-d", is_flag=True,
              help="Run in the background (output to $CLAIMFLOW_HOME/logs/stack.log); "
              "stop it with `claimflow down`.")
@click.option("--prepare-only", is_flag=True,
              help="Broker, topics and champion model only; start no long-lived process.")
def up(
    rate: float | None,
    duration_s: float | None,
    gateway_port: int | None,
    model_port: int | None,
    mlflow_port: int | None,
    rows: int | None,
    detach: bool,
    prepare_only: bool,
) -> None:
    """Run the whole demo: broker, topics, a champion model (trained on the first run), the
    model service, two scorer workers, the gateway and dashboard, the MLflow UI and a producer
    streaming claims at a steady rate. Ctrl-C stops everything; state is kept.

    \b
    Settings: STACK_* environment variables (ports, rate, rows, ...), KAFKA_BOOTSTRAP_SERVERS
    (an existing broker instead of the local one), CLAIMFLOW_HOME (state folder).

    \b
    Examples:
      claimflow up                      # same as `make demo`
      claimflow up --rate 50 --duration 120
      claimflow up --detach && claimflow down
    """
    overrides: dict[str, Any] = {k: v for k, v in {
        "rate": rate, "gateway_port": gateway_port, "model_port": model_port,
        "mlflow_port": mlflow_port, "rows": rows}.items() if v is not None}
    settings = StackSettings(**overrides)
    configure_logging(settings.log_level)
    if detach:
        raise SystemExit(start_detached(settings, overrides, duration_s))
    raise SystemExit(run_stack(settings, duration_s=duration_s, prepare_only=prepare_only))


def run_stack(settings: StackSettings, *, duration_s: float | None, prepare_only: bool) -> int:
    started_at = time.time()
    running = running_stack(settings)
    if running is not None:
        raise StackError(f"a stack already runs from this CLAIMFLOW_HOME (pid {running.pid}); "
                         "stop it with `claimflow down`")
    mlflow_server = mlflow_tracking_server()
    if not prepare_only:
        check_ports(settings, mlflow_ui=mlflow_server is None)
    exe = claimflow_executable()
    bootstrap = resolve_bootstrap(settings, local_broker_bootstrap())
    stack_id = uuid.uuid4().hex
    env = child_env(os.environ, settings, bootstrap=bootstrap, stack_id=stack_id)
    state = StackState(pid=os.getpid(), stack_id=stack_id, started_at=started_at,
                       bootstrap=bootstrap,
                       urls={e.name: e.url for e in endpoints(settings, mlflow_server)},
                       log_file=os.environ.get("CLAIMFLOW_STACK_LOG"))
    raise_on_sigterm()
    write_state(settings, state)
    broker_started = False
    status_proc = start_model_status(env)
    try:
        broker_started = prepare_broker(settings, env, bootstrap, exe)
        if broker_started:
            write_state(settings, state.model_copy(update={"broker_started": True}))
        run_step("create topics", [exe, "topics", "create"], env)
        prepare_model(settings, env, exe, finish_model_status(status_proc))
        if prepare_only:
            say("prepared: broker, topics and champion model are ready")
            return 0
        return serve(settings, env, exe, started_at=started_at, duration_s=duration_s,
                     mlflow_server=mlflow_server)
    except KeyboardInterrupt:
        click.echo("interrupted while preparing; cleaning up", err=True)
        return 130
    finally:
        ignore_signals_while_stopping()
        if status_proc.poll() is None:
            status_proc.kill()
            status_proc.communicate()
        keep = settings.keep_broker or prepare_only
        if broker_started and not keep:
            stop_local_broker(exe, env)
        sweep(stack_id, spare=local_broker_pid(settings) if broker_started and keep else None)
        settings.state_file.unlink(missing_ok=True)


def serve(
    settings: StackSettings,
    env: Mapping[str, str],
    exe: str,
    *,
    started_at: float,
    duration_s: float | None,
    mlflow_server: str | None,
) -> int:
    # A fresh stream seed per run (the start time in ms): claim ids carry the seed, so this
    # run's claims differ from the last run's and the dashboard, which keeps decisions by
    # claim_id, shows them.
    procs = stack_processes(settings, exe, sys.executable, started_at=started_at,
                            duration_s=duration_s, stream_seed=int(started_at * 1000),
                            mlflow_ui=mlflow_server is None)
    settings.procfile.write_text(render_procfile(procs), encoding="utf-8")
    say(f"starting {len(procs)} processes under honcho ({settings.procfile}), "
        f"{time.time() - started_at:.1f} s after start")
    click.echo(url_banner(endpoints(settings, mlflow_server)))
    click.echo("    Ctrl-C stops everything. Flagged claims, as a downstream team sees them:")
    click.echo(f"    {tail_hint(env['KAFKA_BOOTSTRAP_SERVERS'])}")
    rc = run_processes(procs, env, cwd=settings.home, grace_s=settings.stop_grace_s)
    code = exit_code(rc)
    say(f"processes stopped ({'clean' if code == 0 else f'exit code {code}'})")
    return code


@click.command("down")
def down() -> None:
    """Stop a stack started with `claimflow up --detach` (or running in another terminal) and
    any process it left behind. State under CLAIMFLOW_HOME is kept.

    \b
    Example:
      claimflow up --detach
      claimflow down
    """
    settings = StackSettings()
    configure_logging(settings.log_level)
    state = read_state(settings)
    if state is None:
        click.echo(f"no claimflow stack is running (no {settings.state_file})")
        return
    if is_stack_process(state.pid):
        click.echo(f"stopping the stack (pid {state.pid}) ...")
        os.kill(state.pid, signal.SIGTERM)
        if not wait_gone(state.pid, settings.stop_timeout_s):
            click.echo(f"the stack did not stop within {settings.stop_timeout_s:g} s; killing it")
            os.kill(state.pid, signal.SIGKILL)
            wait_gone(state.pid, 5.0)
    leftovers = marked_processes(state.stack_id)
    if leftovers:
        click.echo(f"stopping {len(leftovers)} process(es) the stack left behind")
        terminate_all(leftovers, timeout_s=10.0)
    settings.state_file.unlink(missing_ok=True)
    click.echo("stack stopped")


# --------------------------------------------------------------------------- internal
# Helpers the stack runs as child processes: `python -m claimflow.stack <command>`.


@click.group("stack-internal")
def internal() -> None:
    """Helpers `claimflow up` runs as child processes (not a public interface)."""


@internal.command("model-status")
def model_status_command() -> None:
    """Print {"champion": N | null, "exported": bool} for the registry and the BentoML store."""
    configure_logging("WARNING")
    click.echo(read_model_status().to_json())


def read_model_status() -> ModelStatus:
    from trainer.settings import TrainerSettings

    settings = TrainerSettings()
    if store_is_missing(settings.tracking_uri):
        # First run: no store, so no champion; skip seconds of MLflow import and migrations.
        return ModelStatus(champion=None, exported=False)

    from bentoml.exceptions import NotFound

    from modelstore.bento import bento_tag, bentoml_store
    from modelstore.registry import RegistryError, resolve_champion

    try:
        version, run_id = resolve_champion(settings.tracking_uri, settings.registered_model)
    except RegistryError:
        return ModelStatus(champion=None, exported=False)
    claim_version, features = inputs_of_run(settings.tracking_uri, run_id)
    with bentoml_store(settings.bentoml_home) as store:
        try:
            store.get(bento_tag(version, settings.registered_model))
        except NotFound:
            return ModelStatus(champion=version, exported=False, claim_version=claim_version,
                               features=features)
    return ModelStatus(champion=version, exported=True, claim_version=claim_version,
                       features=features)


def inputs_of_run(tracking_uri: str, run_id: str) -> tuple[int, tuple[str, ...] | None]:
    """The claim version a run's model reads (its ``claim_version`` parameter; runs from
    before contract v2 have none and read v1) and its feature list (``features``)."""
    from modelstore.registry import client_for

    params = client_for(tracking_uri).get_run(run_id).data.params
    features = params.get("features")
    return (int(params.get("claim_version", 1)),
            None if not features else tuple(features.split(",")))


internal.add_command(summary_command)


if __name__ == "__main__":
    internal()
