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

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from claimflow.logging_setup import configure_logging
from claimflow.stack_plan import (
    STREAM_CLAIM_VERSION,
    BrokerPlan,
    Endpoint,
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
    endpoint_answers,
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

# --------------------------------------------------------------------------- pure core


@dataclass
class Counts:
    approved: int = 0
    investigated: int = 0
    deadlettered: int = 0

    def minus(self, other: Counts) -> Counts:
        return Counts(self.approved - other.approved, self.investigated - other.investigated,
                      self.deadlettered - other.deadlettered)

    def copy(self) -> Counts:
        return Counts(self.approved, self.investigated, self.deadlettered)


def summary_line(total: Counts, delta: Counts, seconds: float) -> str:
    per_s = [n / seconds if seconds > 0 else 0.0
             for n in (delta.approved, delta.investigated, delta.deadlettered)]
    return (f"approved {per_s[0]:,.1f}/s  investigated {per_s[1]:,.1f}/s  "
            f"dead-lettered {per_s[2]:,.1f}/s  |  totals {total.approved:,} / "
            f"{total.investigated:,} / {total.deadlettered:,}")


def waiting_line(pending: Sequence[Endpoint], elapsed_s: float) -> str:
    line = f"waiting for the first decision ({elapsed_s:.0f} s since start)"
    if pending:
        line += f"; not answering yet: {', '.join(e.name for e in pending)}"
    return line


# --------------------------------------------------------------------------- I/O shell


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


@internal.command("summary")
@click.option("--interval", "interval_s", type=click.FloatRange(min=0, min_open=True),
              default=5.0, show_default=True, help="Seconds between summary lines.")
@click.option("--started-at", type=float, default=None,
              help="Epoch seconds `claimflow up` started (for time-to-first-decision).")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Exit 0 after S seconds (ends a bounded `up` run).")
def summary_command(interval_s: float, started_at: float | None, duration_s: float | None) -> None:
    """Print the URLs once they answer, then a live approved / investigated / dead-lettered
    rate read from the outcome topics (read_committed)."""
    configure_logging("WARNING")
    settings = StackSettings()
    run_summary(settings, interval_s=interval_s, started_at=started_at or time.time(),
                duration_s=duration_s)


def run_summary(
    settings: StackSettings, *, interval_s: float, started_at: float, duration_s: float | None
) -> None:
    from confluent_kafka import Consumer

    from scorer.worker_settings import ScorerSettings

    scorer = ScorerSettings()
    topics = {scorer.approved_topic: "approved", scorer.investigate_topic: "investigated",
              scorer.deadletter_topic: "deadlettered"}
    stop = install_summary_stop()
    consumer = Consumer({
        "bootstrap.servers": scorer.kafka_bootstrap_servers,
        "group.id": f"claimflow-stack-summary-{uuid.uuid4().hex[:12]}",
        "isolation.level": "read_committed",
        "auto.offset.reset": "latest",
        "enable.auto.commit": False,
        "logger": logging.getLogger("claimflow.stack.librdkafka"),
    })
    consumer.subscribe(list(topics))
    loop = SummaryLoop(settings, topics, started_at=started_at, interval_s=interval_s)
    end = None if duration_s is None else time.monotonic() + duration_s
    try:
        while not stop() and (end is None or time.monotonic() < end):
            loop.count(consumer.consume(num_messages=1000, timeout=0.2))
            loop.tick()
    finally:
        consumer.close()
        loop.close()
    click.echo(f"final: {summary_line(loop.total, loop.total, time.monotonic() - loop.began)}")


def install_summary_stop() -> Callable[[], bool]:
    stopped: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        stopped.append(signum)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return lambda: bool(stopped)


class SummaryLoop:
    """Counts outcome messages, announces readiness and prints one line per interval."""

    def __init__(self, settings: StackSettings, topics: Mapping[str, str], *,
                 started_at: float, interval_s: float) -> None:
        import httpx

        self.topics = topics
        self.started_at = started_at
        self.interval_s = interval_s
        self.began = time.monotonic()
        self.total = Counts()
        self.last = Counts()
        self.last_at = self.began
        self.first_decision_reported = False
        self.endpoints = endpoints(settings, mlflow_tracking_server())
        self.pending = list(self.endpoints)
        self.next_probe = 0.0
        self.http = httpx.Client(timeout=1.0)

    def count(self, messages: Sequence[Any]) -> None:
        for msg in messages:
            if msg.error() is not None:
                continue
            field = self.topics.get(msg.topic())
            if field is None:
                continue
            setattr(self.total, field, getattr(self.total, field) + 1)
            if not self.first_decision_reported:
                self.first_decision_reported = True
                _kind, ts_ms = msg.timestamp()
                at = ts_ms / 1000 if ts_ms > 0 else time.time()
                click.echo(f"first decision {at - self.started_at:.1f} s after "
                           "`claimflow up` started")

    def tick(self) -> None:
        now = time.monotonic()
        if self.pending and now >= self.next_probe:
            self.next_probe = now + 1.0
            self.announce_ready()
        if now - self.last_at >= self.interval_s:
            if self.first_decision_reported:
                click.echo(summary_line(self.total, self.total.minus(self.last),
                                        now - self.last_at))
            else:
                click.echo(waiting_line(self.pending, time.time() - self.started_at))
            self.last, self.last_at = self.total.copy(), now

    def announce_ready(self) -> None:
        ready = [e for e in self.pending if endpoint_answers(self.http, e)]
        for endpoint in ready:
            click.echo(f"ready: {endpoint.name} {endpoint.url} "
                       f"({time.time() - self.started_at:.1f} s after start)")
        self.pending = [e for e in self.pending if e not in ready]
        if ready and not self.pending:
            click.echo("all services answer:\n" + url_banner(self.endpoints))

    def close(self) -> None:
        self.http.close()


if __name__ == "__main__":
    internal()
