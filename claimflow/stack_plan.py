"""The demo stack's settings and plan, pure: what `claimflow up` runs (the processes and
their Procfile), where its services answer, and what to do about the broker and the model
(the I/O that asks happens in :mod:`claimflow.stack`)."""

from __future__ import annotations

import enum
import json
import shlex
import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from claimflow.settings import DEFAULT_BOOTSTRAP, CommonSettings

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
    learn_rounds: int = Field(
        default=5, ge=1, description="With the learning loop: challengers it trains at most "
        "(after a refusal the next waits for twice the labels).")
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
            procs.append(Proc("learn", (claimflow, "learn", "--stay", "--rounds",
                                        str(settings.learn_rounds))))
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


def option_name(env_var: str) -> str:
    """``STACK_GATEWAY_PORT`` -> ``--gateway-port``."""
    return "--" + env_var.removeprefix("STACK_").lower().replace("_", "-")
