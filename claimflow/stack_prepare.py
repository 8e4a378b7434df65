"""What ``claimflow up`` does before it starts the long-lived processes: free ports, a
broker that answers (the running one, or the local one started), topics, and a champion
model (asked of the registry in a child interpreter, trained or exported only when needed).
Each step runs a ``claimflow`` command with its output going straight to the terminal."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from claimflow.stack_plan import (
    STREAM_CLAIM_VERSION,
    BrokerPlan,
    ModelAction,
    ModelStatus,
    StackError,
    StackSettings,
    option_name,
    plan_broker,
    plan_model,
    store_is_missing,
)
from claimflow.stack_procs import (
    say,
)


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


def stop_local_broker(exe: str, env: Mapping[str, str]) -> None:
    say("stopping the local Kafka broker (data is kept)")
    subprocess.run([exe, "kafka", "stop"], env=dict(env), check=False)


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
