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

import enum
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from claimflow.logging_setup import configure_logging
from claimflow.settings import DEFAULT_BOOTSTRAP, CommonSettings

log = logging.getLogger(__name__)

STACK_ID_ENV = "CLAIMFLOW_STACK_ID"
# Children inherit these so that no library phones home and logs arrive line by line.
QUIET_ENV: Mapping[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "PYTHONUNBUFFERED": "1",
    # Progress bars redraw with "\r"; through a Procfile runner they only make noise.
    "TQDM_DISABLE": "1",
}
# `claimflow produce` sends a finite, pre-generated set; the stack streams "forever" by
# producing chunks of this many seconds' worth of claims, each with the next seed (claim ids
# carry the seed, so chunks never repeat an id).
CHUNK_SECONDS = 600
# The demo streams the realistic profile: contract v2 claims (members, providers, lines).
STREAM_CLAIM_VERSION = 2


class StackError(click.ClickException):
    """A failed preparation step, shown as "Error: ..." (exit code 1) without a traceback."""


class StackSettings(CommonSettings):
    """Settings of ``claimflow up`` / ``down`` (env prefix ``STACK_``; options override)."""

    model_config = SettingsConfigDict(env_prefix="STACK_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface the HTTP services listen on.")
    gateway_port: int = Field(default=5005, ge=1, le=65_535, description="Gateway + dashboard.")
    model_port: int = Field(default=3000, ge=1, le=65_535, description="BentoML model service.")
    mlflow_port: int = Field(default=5000, ge=1, le=65_535, description="MLflow UI.")
    rate: float = Field(default=200.0, gt=0, description="Claims per second the producer streams.")
    scorer_instances: int = Field(default=2, ge=1, le=64, description="Scorer worker processes.")
    rows: int = Field(
        default=50_000, ge=1_000, description="Rows of realistic data to train on (first run)."
    )
    seed: int = Field(default=42, ge=0, description="Seed of the training data.")
    summary_interval_s: float = Field(
        default=5.0, gt=0, description="Seconds between two live summary lines."
    )
    ready_timeout_s: float = Field(
        default=600.0, gt=0, description="How long `up --detach` waits for the services."
    )
    stop_timeout_s: float = Field(
        default=60.0, gt=0, description="How long `down` waits before it kills the stack."
    )
    stop_grace_s: float = Field(
        default=20.0, gt=0,
        description="After SIGTERM, how long the processes get to finish before SIGKILL.",
    )
    broker_wait_s: float = Field(
        default=0.0, ge=0,
        description="How long to wait for a KAFKA_BOOTSTRAP_SERVERS broker that does not "
        "answer yet (containers starting side by side) before giving up.",
    )
    keep_broker: bool = Field(
        default=False, description="Leave a local broker started by `up` running when it stops."
    )
    investigators_per_day: int = Field(
        default=0, ge=0,
        description="Also run simulated investigators (`claimflow investigate`) answering this "
        "many claims per simulated day (INVESTIGATE_DAY_S, 60 s); 0 runs none.",
    )
    learning_loop: bool = Field(
        default=False, description="Also run `claimflow learn` (labels -> supervised challenger "
        "-> shadow -> gated promotion; LEARN_* settings); needs investigators.")
    log_level: str = Field(default="INFO", description="Log level of the stack's processes.")

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "stack.json"

    @property
    def procfile(self) -> Path:
        return self.run_dir / "Procfile"

    @property
    def log_file(self) -> Path:
        """Output of a stack started with ``--detach``."""
        return self.logs_dir / "stack.log"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    def training_file(self) -> Path:
        return self.datasets_dir / f"realistic-v2-seed{self.seed}-rows{self.rows}.jsonl"


# --------------------------------------------------------------------------- pure core


@dataclass(frozen=True)
class Endpoint:
    """An HTTP service of the stack: where people go, and where readiness is probed."""

    name: str
    url: str
    probe: str

    @property
    def probe_url(self) -> str:
        return self.url.rstrip("/") + self.probe


def endpoints(settings: StackSettings, mlflow_server: str | None = None) -> list[Endpoint]:
    """The stack's URLs; ``mlflow_server`` is an external tracking server that replaces the
    local MLflow UI."""
    base = f"http://{settings.host}"
    mlflow_url = mlflow_server.rstrip("/") + "/" if mlflow_server else (
        f"{base}:{settings.mlflow_port}/")
    return [
        Endpoint("dashboard", f"{base}:{settings.gateway_port}/", "/readyz"),
        Endpoint("MLflow UI", mlflow_url, "/health"),
        Endpoint("model service", f"{base}:{settings.model_port}/", "/readyz"),
    ]


def tracking_server(tracking_uri: str | None) -> str | None:
    """The URL of an MLflow tracking server, or None for a local (file/database) store,
    which the stack shows through its own `claimflow mlflow-ui`."""
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    return None


def model_url(settings: StackSettings) -> str:
    return f"http://{settings.host}:{settings.model_port}"


def resolve_bootstrap(settings: CommonSettings, local_bootstrap: str) -> str:
    """Where the stack's Kafka is: ``KAFKA_BOOTSTRAP_SERVERS`` when it is set, else the local
    broker's own address (``KAFKA_HOST``:``KAFKA_PORT``), so that moving the local broker to
    another port needs one setting, not two."""
    if "kafka_bootstrap_servers" in settings.model_fields_set:
        return settings.kafka_bootstrap_servers
    return local_bootstrap


class BrokerPlan(enum.Enum):
    USE_RUNNING = "use the broker that answers"
    START_LOCAL = "start the local broker"
    UNREACHABLE = "nothing answers and the address is not the local broker"


def plan_broker(answers: bool, bootstrap: str, local_bootstrap: str) -> BrokerPlan:
    if answers:
        return BrokerPlan.USE_RUNNING
    if same_address(bootstrap, local_bootstrap):
        return BrokerPlan.START_LOCAL
    return BrokerPlan.UNREACHABLE


def same_address(bootstrap: str, local_bootstrap: str) -> bool:
    """Whether a (single-address) bootstrap list names the local broker."""
    loopback = {"127.0.0.1", "localhost", "::1", "[::1]"}

    def norm(address: str) -> tuple[str, str]:
        host, _, port = address.strip().rpartition(":")
        return ("loopback" if host in loopback else host), port

    addresses = [a for a in bootstrap.split(",") if a.strip()]
    return len(addresses) == 1 and norm(addresses[0]) == norm(local_bootstrap)


class ModelAction(enum.Enum):
    READY = "champion exported"
    PROMOTE = "export the champion to the BentoML store"
    TRAIN = "generate data, train and promote"


@dataclass(frozen=True)
class ModelStatus:
    """What the registry and the BentoML store hold (``model-status`` prints it as JSON)."""

    champion: str | None
    exported: bool
    claim_version: int = STREAM_CLAIM_VERSION  # the claims the champion reads
    # The champion's feature list (its run's "features" parameter); None: not known.
    features: tuple[str, ...] | None = None

    def to_json(self) -> str:
        return json.dumps({"champion": self.champion, "exported": self.exported,
                           "claim_version": self.claim_version,
                           "features": None if self.features is None else list(self.features)})

    @classmethod
    def from_json(cls, text: str) -> ModelStatus:
        data = json.loads(text)
        champion = data["champion"]
        features = data.get("features")
        return cls(champion=None if champion is None else str(champion),
                   exported=bool(data["exported"]),
                   claim_version=int(data.get("claim_version", STREAM_CLAIM_VERSION)),
                   features=None if features is None else tuple(features))

    def stale_features(self) -> bool:
        """The champion reads another feature list than this code's set for the stream's
        claims (a model from before a feature was added): serving would refuse to load it."""
        from features.sets import for_claim_version

        wanted = for_claim_version(STREAM_CLAIM_VERSION).features
        return self.features is not None and self.features != wanted


def store_is_missing(tracking_uri: str) -> bool:
    """Whether the tracking URI is a SQLite store whose file does not exist yet."""
    prefix = "sqlite:///"
    return tracking_uri.startswith(prefix) and not Path(tracking_uri[len(prefix):]).exists()


def plan_model(status: ModelStatus) -> ModelAction:
    # A champion of another claim version would refuse every streamed claim (dead letters
    # only): a home from before the demo streamed v2 claims gets a v2 champion trained.
    if status.champion is None or status.claim_version != STREAM_CLAIM_VERSION \
            or status.stale_features():
        return ModelAction.TRAIN
    return ModelAction.READY if status.exported else ModelAction.PROMOTE


@dataclass(frozen=True)
class Proc:
    """One line of the Procfile: a long-lived process and its command. With ``seed_loop``
    the command runs again and again with ``--seed`` counting up from that value, for as
    long as it succeeds."""

    name: str
    argv: tuple[str, ...]
    seed_loop: int | None = None

    @property
    def command(self) -> str:
        """The shell command (honcho runs each line with ``sh -c``). ``exec`` lets the
        process replace that shell: signals reach it directly and its exit code is the one
        reported."""
        if self.seed_loop is None:
            return "exec " + shlex.join(self.argv)
        return (f"seed={self.seed_loop}; while {shlex.join(self.argv)} --seed \"$seed\"; "
                "do seed=$((seed + 1)); done")


def stack_processes(
    settings: StackSettings,
    claimflow: str = "claimflow",
    python: str = "python",
    *,
    started_at: float | None = None,
    duration_s: float | None = None,
    stream_seed: int | None = None,
    mlflow_ui: bool = True,
) -> list[Proc]:
    """The long-lived processes of the demo, in start order (``mlflow_ui=False`` when the
    registry is an external tracking server, which has its own UI)."""
    host = settings.host
    summary = [python, "-m", "claimflow.stack", "summary",
               "--interval", f"{settings.summary_interval_s:g}"]
    if started_at is not None:
        summary += ["--started-at", f"{started_at:.3f}"]
    if duration_s is not None:
        summary += ["--duration", f"{duration_s:g}"]
    chunk_rows = max(1, round(settings.rate * CHUNK_SECONDS))
    produce = (claimflow, "produce", "--profile", "realistic", "--quiet",
               "--rows", str(chunk_rows), "--rate", f"{settings.rate:g}")
    procs = [
        Proc("model", (claimflow, "serve-model", "--host", host,
                       "--port", str(settings.model_port))),
        Proc("scorer", (claimflow, "score", "--instances", str(settings.scorer_instances),
                        "--log-level", settings.log_level)),
        Proc("gateway", (claimflow, "gateway", "--host", host,
                         "--port", str(settings.gateway_port))),
        Proc("mlflow", (claimflow, "mlflow-ui", "--host", host,
                        "--port", str(settings.mlflow_port))),
        Proc("producer", produce, seed_loop=1 if stream_seed is None else stream_seed),
        Proc("summary", tuple(summary)),
    ]
    if settings.investigators_per_day:
        procs.append(Proc("investigate", (claimflow, "investigate", "--per-day",
                                          str(settings.investigators_per_day),
                                          "--log-level", settings.log_level)))
        if settings.learning_loop:
            procs.append(Proc("learn", (claimflow, "learn", "--stay")))
    return [p for p in procs if mlflow_ui or p.name != "mlflow"]


PROCFILE_HEADER = """\
# claimflow demo stack: the long-lived processes `claimflow up` runs under honcho.
# `claimflow up` writes its own copy (ports and rate from STACK_* settings) to
# $CLAIMFLOW_HOME/run/Procfile after it has started the broker, created the topics and made
# sure a champion model exists. Running this file by hand (`honcho start`) needs those
# three steps done first; see docs/demo.md.
"""


def render_procfile(procs: Iterable[Proc], header: str = PROCFILE_HEADER) -> str:
    return header + "".join(f"{p.name}: {p.command}\n" for p in procs)


def child_env(
    base: Mapping[str, str],
    settings: StackSettings,
    *,
    bootstrap: str,
    stack_id: str,
) -> dict[str, str]:
    """The environment of every process the stack starts: the caller's, plus the shared
    settings the services must agree on (broker, state folder, where the model service is)."""
    env = dict(base)
    env.update(QUIET_ENV)
    env.update({
        STACK_ID_ENV: stack_id,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CLAIMFLOW_HOME": str(settings.home),
        "SCORER_MODEL_URL": model_url(settings),
        # The summary process reads the ports from its own StackSettings.
        "STACK_HOST": settings.host,
        "STACK_GATEWAY_PORT": str(settings.gateway_port),
        "STACK_MODEL_PORT": str(settings.model_port),
        "STACK_MLFLOW_PORT": str(settings.mlflow_port),
    })
    return env


class StackState(BaseModel):
    """``$CLAIMFLOW_HOME/run/stack.json``: what ``claimflow down`` needs to stop a stack."""

    pid: int
    stack_id: str
    started_at: float
    bootstrap: str
    broker_started: bool = False
    urls: dict[str, str] = Field(default_factory=dict)
    log_file: str | None = None


def exit_code(manager_rc: int | None) -> int:
    """``up``'s exit code from honcho's: a stop we asked for (signal, or the summary ending
    a ``--duration`` run with 0) is success; anything else is the failing process's code."""
    if manager_rc in (None, 0, 128 + signal.SIGINT, 128 + signal.SIGTERM):
        return 0
    return manager_rc if manager_rc > 0 else 1


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


def tail_hint(bootstrap: str) -> str:
    """The `claimflow tail` command line for this stack's broker (other terminals do not
    know about a local broker moved to another port)."""
    command = "claimflow tail investigate"
    if bootstrap == DEFAULT_BOOTSTRAP:
        return command
    return f"KAFKA_BOOTSTRAP_SERVERS={shlex.quote(bootstrap)} {command}"


def url_banner(items: Sequence[Endpoint]) -> str:
    width = max(len(e.name) for e in items)
    return "\n".join(f"  {e.name:<{width}}  {e.url}" for e in items)


# --------------------------------------------------------------------------- I/O shell


def claimflow_executable() -> str:
    """The ``claimflow`` script of this interpreter's environment (works without an activated
    virtualenv), falling back to the one on PATH."""
    sibling = Path(sys.executable).with_name("claimflow")
    return str(sibling) if sibling.exists() else "claimflow"


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


def option_name(env_var: str) -> str:
    """``STACK_GATEWAY_PORT`` -> ``--gateway-port``."""
    return "--" + env_var.removeprefix("STACK_").lower().replace("_", "-")


def run_step(title: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Run one preparation command, its output going straight to the terminal."""
    began = time.monotonic()
    say(f"{title}: {shlex.join(argv)}")
    result = subprocess.run(list(argv), env=dict(env), check=False)
    if result.returncode != 0:
        raise StackError(f"{title} failed (exit code {result.returncode}); see its output above")
    say(f"{title}: done in {time.monotonic() - began:.1f} s")


def say(message: str) -> None:
    """A progress line of `up` itself (its children print their own)."""
    click.echo(f"==> {message}")


def read_state(settings: StackSettings) -> StackState | None:
    try:
        return StackState.model_validate_json(settings.state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("ignoring unreadable %s", settings.state_file)
        return None


def write_state(settings: StackSettings, state: StackState) -> None:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.state_file.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(settings.state_file)


def is_stack_process(pid: int) -> bool:
    """Whether ``pid`` is alive and is a ``claimflow up`` (guards against a reused pid)."""
    import psutil

    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "up" in cmdline and any("claimflow" in part for part in cmdline)


def running_stack(settings: StackSettings) -> StackState | None:
    state = read_state(settings)
    return state if state is not None and is_stack_process(state.pid) else None


def marked_processes(stack_id: str) -> list[Any]:
    """Every live process whose environment carries this stack's id (psutil.Process list)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get(STACK_ID_ENV) == stack_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def terminate_all(procs: Sequence[Any], timeout_s: float) -> int:
    """SIGTERM, wait, SIGKILL what is left; returns how many had to be killed."""
    import psutil

    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(list(procs), timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)
    return len(alive)


def mlflow_tracking_server() -> str | None:
    """The tracking server the trainer uses (``MLFLOW_TRACKING_URI``), if it is one."""
    from trainer.settings import TrainerSettings

    return tracking_server(TrainerSettings().mlflow_tracking_uri)


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


def sweep(stack_id: str, spare: int | None = None, timeout_s: float = 10.0) -> None:
    """Stop whatever still carries this stack's marker (a grandchild that left its process
    group, say), so that nothing outlives `up`; ``spare`` is a pid to leave running."""
    leftovers = [p for p in marked_processes(stack_id) if p.pid not in (spare, os.getpid())]
    if leftovers:
        say(f"stopping {len(leftovers)} leftover process(es): "
            f"{', '.join(str(p.pid) for p in leftovers)}")
        terminate_all(leftovers, timeout_s=timeout_s)


def local_broker_pid(settings: StackSettings) -> int | None:
    from broker.local import running_pid
    from broker.settings import KafkaSettings

    return running_pid(KafkaSettings(claimflow_home=settings.home))


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


def wait_ready(
    items: Sequence[Endpoint], deadline: float, alive: Callable[[], bool]
) -> list[Endpoint]:
    """Poll until every endpoint answers, the deadline passes or ``alive()`` turns false;
    returns the endpoints still not ready."""
    import httpx

    pending = list(items)
    with httpx.Client(timeout=2.0) as client:
        while pending and time.monotonic() < deadline and alive():
            pending = [e for e in pending if not _answers(client, e)]
            if pending:
                time.sleep(0.5)
    return pending


def _answers(client: Any, endpoint: Endpoint) -> bool:
    import httpx

    try:
        return bool(client.get(endpoint.probe_url).status_code == 200)
    except httpx.HTTPError:
        return False


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


def start_detached(
    settings: StackSettings, overrides: Mapping[str, Any], duration_s: float | None
) -> int:
    running = running_stack(settings)
    if running is not None:
        raise StackError(f"a stack already runs (pid {running.pid}); `claimflow down` first")
    argv = [claimflow_executable(), "up"]
    for key, value in overrides.items():
        argv += [f"--{key.replace('_', '-')}", f"{value:g}" if isinstance(value, float)
                 else str(value)]
    if duration_s is not None:
        argv += ["--duration", f"{duration_s:g}"]
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CLAIMFLOW_STACK_LOG": str(settings.log_file)}
    with settings.log_file.open("wb") as out:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=env, start_new_session=True)
    click.echo(f"stack starting in the background (pid {child.pid}); log: {settings.log_file}")
    deadline = time.monotonic() + settings.ready_timeout_s
    urls = endpoints(settings, mlflow_tracking_server())
    pending = wait_ready(urls, deadline, alive=lambda: child.poll() is None)
    if child.poll() is not None:
        click.echo(tail_text(settings.log_file), err=True)
        raise StackError(f"the stack exited with code {child.returncode} before it was ready")
    if pending:
        raise StackError(f"not ready after {settings.ready_timeout_s:g} s: "
                         f"{', '.join(e.name for e in pending)} (see {settings.log_file}); "
                         "`claimflow down` stops it")
    click.echo("stack is up:")
    click.echo(url_banner(urls))
    click.echo("stop it with `claimflow down`")
    return 0


def tail_text(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


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


def wait_gone(pid: int, timeout_s: float) -> bool:
    import psutil

    try:
        psutil.Process(pid).wait(timeout=timeout_s)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


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
        ready = [e for e in self.pending if _answers(self.http, e)]
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
