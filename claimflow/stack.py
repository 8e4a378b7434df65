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

This module holds the commands and the run itself; the rest lives beside it:
:mod:`claimflow.stack_plan` (settings and the pure plan: processes, Procfile, endpoints),
:mod:`claimflow.stack_prepare` (ports, broker, topics, champion model),
:mod:`claimflow.stack_procs` (state file, finding and stopping the stack's processes,
``--detach``) and :mod:`claimflow.stack_summary` (the live summary process).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from claimflow.logging_setup import configure_logging
from claimflow.stack_plan import (
    Proc,
    StackError,
    StackSettings,
    StackState,
    child_env,
    endpoints,
    exit_code,
    render_procfile,
    resolve_bootstrap,
    stack_processes,
    tail_hint,
    url_banner,
)
from claimflow.stack_prepare import (
    check_ports,
    finish_model_status,
    local_broker_bootstrap,
    prepare_broker,
    prepare_model,
    read_model_status,
    run_step,
    start_model_status,
    stop_local_broker,
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

# --------------------------------------------------------------------------- running


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


internal.add_command(summary_command)


if __name__ == "__main__":
    internal()
