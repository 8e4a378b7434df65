"""`claimflow up` / `down`: settings, the decisions (broker, model), the Procfile, the
child environment, the state file and the straggler sweep. No services needed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import psutil
import pytest
from click.testing import CliRunner
from honcho.environ import parse_procfile

from claimflow import stack, stack_plan, stack_prepare, stack_procs, stack_summary
from claimflow.cli import COMMANDS, cli
from claimflow.procs import free_port
from claimflow.settings import CommonSettings
from claimflow.stack_plan import (
    BrokerPlan,
    ModelAction,
    ModelStatus,
    Proc,
    StackError,
    StackSettings,
    StackState,
)
from claimflow.stack_summary import (
    Counts,
)
from features.sets import for_claim_version

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith(("STACK_", "KAFKA_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CLAIMFLOW_HOME", str(tmp_path / "home"))


def test_settings_defaults_and_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = StackSettings()
    assert (defaults.gateway_port, defaults.model_port, defaults.mlflow_port) == (5005, 3000, 5000)
    assert defaults.rate == 200.0
    assert defaults.scorer_instances == 2
    monkeypatch.setenv("STACK_RATE", "50")
    monkeypatch.setenv("STACK_GATEWAY_PORT", "6005")
    settings = StackSettings()
    assert settings.rate == 50.0
    assert settings.gateway_port == 6005
    with pytest.raises(ValueError, match="frozen"):
        settings.rate = 1.0  # type: ignore[misc]


def test_settings_reject_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK_RATE", "0")
    with pytest.raises(ValueError, match="rate"):
        StackSettings()


def test_state_paths_live_under_claimflow_home(tmp_path: Path) -> None:
    settings = StackSettings()
    assert settings.state_file == tmp_path / "home" / "run" / "stack.json"
    assert settings.procfile.parent == settings.run_dir
    assert settings.training_file().parent == tmp_path / "home" / "datasets"


def test_bootstrap_is_the_local_broker_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert stack_plan.resolve_bootstrap(CommonSettings(), "127.0.0.1:19092") == "127.0.0.1:19092"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker.example:9092")
    assert stack_plan.resolve_bootstrap(CommonSettings(), "127.0.0.1:19092") == (
        "broker.example:9092")


@pytest.mark.parametrize(
    ("answers", "bootstrap", "plan"),
    [
        (True, "127.0.0.1:9092", BrokerPlan.USE_RUNNING),
        (True, "elsewhere:9092", BrokerPlan.USE_RUNNING),
        (False, "127.0.0.1:9092", BrokerPlan.START_LOCAL),
        (False, "localhost:9092", BrokerPlan.START_LOCAL),
        (False, "127.0.0.1:9999", BrokerPlan.UNREACHABLE),
        (False, "elsewhere:9092", BrokerPlan.UNREACHABLE),
        (False, "127.0.0.1:9092,127.0.0.1:9094", BrokerPlan.UNREACHABLE),
    ],
)
def test_broker_plan(answers: bool, bootstrap: str, plan: BrokerPlan) -> None:
    assert stack_plan.plan_broker(answers, bootstrap, "127.0.0.1:9092") is plan


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (ModelStatus(champion=None, exported=False), ModelAction.TRAIN),
        (ModelStatus(champion="3", exported=False), ModelAction.PROMOTE),
        (ModelStatus(champion="3", exported=True), ModelAction.READY),
        # A champion from before the demo streamed v2 claims would refuse them all.
        (ModelStatus(champion="3", exported=True, claim_version=1), ModelAction.TRAIN),
        (ModelStatus(champion="3", exported=False, claim_version=1), ModelAction.TRAIN),
        # A champion from before a feature was added: the service would refuse to load it.
        (ModelStatus(champion="3", exported=True, features=("log_amount",)), ModelAction.TRAIN),
        (ModelStatus(champion="3", exported=True,
                     features=tuple(for_claim_version(2).features)), ModelAction.READY),
    ],
)
def test_model_plan_trains_without_a_champion_of_the_streamed_version(
        status: ModelStatus, action: ModelAction) -> None:
    assert stack_plan.plan_model(status) is action
    assert ModelStatus.from_json(status.to_json()) == status


def test_model_status_reads_the_last_line_of_the_helper_output() -> None:
    assert ModelStatus.from_json('{"champion": 7, "exported": true}') == ModelStatus("7", True)


def processes(**kwargs: object) -> dict[str, Proc]:
    procs = stack_plan.stack_processes(StackSettings(), "/venv/bin/claimflow", "/venv/bin/python",
                                  **kwargs)  # type: ignore[arg-type]
    return {p.name: p for p in procs}


def test_the_stack_runs_every_long_lived_part() -> None:
    procs = processes()
    assert list(procs) == ["model", "scorer", "gateway", "mlflow", "producer", "summary"]
    assert procs["scorer"].argv[1:4] == ("score", "--instances", "2")
    assert procs["model"].argv[-2:] == ("--port", "3000")
    assert procs["gateway"].argv[-2:] == ("--port", "5005")
    assert procs["mlflow"].argv[-2:] == ("--port", "5000")
    assert procs["producer"].argv[-4:] == ("--rows", "120000", "--rate", "200")
    assert procs["summary"].argv[:4] == ("/venv/bin/python", "-m", "claimflow.stack", "summary")


def test_simulated_investigators_run_only_when_asked_for() -> None:
    settings = StackSettings(investigators_per_day=30)
    procs = {p.name: p for p in stack_plan.stack_processes(settings, "claimflow", "python")}
    argv = procs["investigate"].argv
    assert argv[1:4] == ("investigate", "--per-day", "30")
    with click.Context(cli) as ctx:
        command = cli.get_command(ctx, argv[1])
        assert command is not None
        command.make_context(argv[1], list(argv[2:]))
    assert "investigate" not in processes()


def test_the_learning_loop_runs_with_investigators_only_when_asked_for() -> None:
    settings = StackSettings(investigators_per_day=30, learning_loop=True)
    procs = {p.name: p for p in stack_plan.stack_processes(settings, "claimflow", "python")}
    argv = procs["learn"].argv
    assert argv[1:] == ("learn", "--stay", "--rounds", "5")
    with click.Context(cli) as ctx:
        command = cli.get_command(ctx, argv[1])
        assert command is not None
        command.make_context(argv[1], list(argv[2:]))
    no_team = StackSettings(learning_loop=True)
    assert "learn" not in {p.name for p in stack_plan.stack_processes(no_team, "claimflow", "x")}
    assert "learn" not in {p.name for p in stack_plan.stack_processes(
        StackSettings(investigators_per_day=30), "claimflow", "x")}


def test_run_options_reach_the_processes() -> None:
    procs = processes(started_at=1700000000.5, duration_s=42.0, stream_seed=7)
    summary = procs["summary"].argv
    assert summary[summary.index("--duration") + 1] == "42"
    assert summary[summary.index("--started-at") + 1] == "1700000000.500"
    assert procs["producer"].seed_loop == 7


def test_the_producer_streams_chunk_after_chunk_with_fresh_seeds(tmp_path: Path) -> None:
    """The shell loop honcho runs: each chunk gets the next seed; a failure ends it."""
    calls = tmp_path / "calls"
    fake = tmp_path / "produce"
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n"
                    f"[ $(wc -l < {calls}) -lt 3 ]\n", encoding="utf-8")
    fake.chmod(0o755)
    proc = Proc("producer", (str(fake), "--rows", "10"), seed_loop=41)
    result = subprocess.run(proc.command, shell=True, check=False)
    assert result.returncode == 0  # the loop ended because the third chunk "failed"
    assert calls.read_text(encoding="utf-8").splitlines() == [
        "--rows 10 --seed 41", "--rows 10 --seed 42", "--rows 10 --seed 43"]


def test_procfile_round_trips_through_honchos_parser() -> None:
    procs = list(processes(stream_seed=5).values())
    parsed = parse_procfile(stack_plan.render_procfile(procs))
    assert dict(parsed.processes) == {p.name: p.command for p in procs}


def test_commands_are_shell_quoted() -> None:
    proc = Proc("x", ("/path with space/claimflow", "up"))
    assert proc.command == "exec '/path with space/claimflow' up"


def test_committed_procfile_matches_the_defaults() -> None:
    expected = stack_plan.render_procfile(
        stack_plan.stack_processes(StackSettings(), "claimflow", "python"))
    assert (ROOT / "Procfile").read_text(encoding="utf-8") == expected


@pytest.mark.parametrize("name", ["model", "scorer", "gateway", "mlflow", "producer", "summary"])
def test_every_procfile_command_parses_with_the_real_cli(name: str) -> None:
    """Option names and values are checked by the commands themselves (parsed, not run)."""
    argv = processes(started_at=1.0, duration_s=5.0, stream_seed=1)[name].argv
    if name == "summary":
        group, args = stack.internal, list(argv[3:])
    else:
        group, args = cli, list(argv[1:])
        assert args[0] in COMMANDS
        if name == "producer":
            args += ["--seed", "123"]  # what the seed loop appends
    with click.Context(group) as ctx:
        command = group.get_command(ctx, args[0])
        assert command is not None
        command.make_context(args[0], args[1:])


def test_child_env_carries_the_shared_settings_and_the_marker() -> None:
    settings = StackSettings(model_port=3999, gateway_port=5999)
    env = stack_plan.child_env({"PATH": "/bin", "HOME": "/root"}, settings,
                          bootstrap="127.0.0.1:19092", stack_id="abc")
    assert env["PATH"] == "/bin"
    assert env[stack_plan.STACK_ID_ENV] == "abc"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
    assert env["CLAIMFLOW_HOME"] == str(settings.home)
    assert env["SCORER_MODEL_URL"] == "http://127.0.0.1:3999"
    assert "GATEWAY_MODEL_URL" not in env  # the gateway does not call the model service
    assert env["STACK_GATEWAY_PORT"] == "5999"
    for key in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "BENTOML_DO_NOT_TRACK"):
        assert env[key] == "true"


def test_endpoints_follow_the_ports() -> None:
    urls = {e.name: e.probe_url for e in stack_plan.endpoints(StackSettings(model_port=3999))}
    assert urls["model service"] == "http://127.0.0.1:3999/readyz"
    assert urls["dashboard"] == "http://127.0.0.1:5005/readyz"
    assert urls["MLflow UI"] == "http://127.0.0.1:5000/health"


@pytest.mark.parametrize(
    ("honcho_rc", "code"),
    [(None, 0), (0, 0), (130, 0), (143, 0), (1, 1), (2, 2), (-9, 1)],
)
def test_exit_code(honcho_rc: int | None, code: int) -> None:
    assert stack_plan.exit_code(honcho_rc) == code


def test_summary_line() -> None:
    line = stack_summary.summary_line(Counts(1000, 50, 2), Counts(190, 10, 1), 1.0 * 5)
    assert line == ("approved 38.0/s  investigated 2.0/s  dead-lettered 0.2/s  |  "
                    "totals 1,000 / 50 / 2")


def test_option_name() -> None:
    assert stack_plan.option_name("STACK_GATEWAY_PORT") == "--gateway-port"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_taken_port_is_a_clear_error(busy_port: int) -> None:
    with pytest.raises(StackError, match=rf"port {busy_port} \(gateway\).*STACK_GATEWAY_PORT"):
        stack_prepare.check_ports(StackSettings(gateway_port=busy_port, model_port=free_port(),
                                        mlflow_port=free_port()))


def test_state_file_round_trip() -> None:
    settings = StackSettings()
    assert stack_procs.read_state(settings) is None
    state = StackState(pid=123, stack_id="s", started_at=1.0, bootstrap="b:1",
                       urls={"dashboard": "http://x/"})
    stack_procs.write_state(settings, state)
    assert stack_procs.read_state(settings) == state
    settings.state_file.write_text("not json", encoding="utf-8")
    assert stack_procs.read_state(settings) is None


def test_down_without_a_stack_says_so() -> None:
    result = CliRunner().invoke(stack.down, [])
    assert result.exit_code == 0, result.output
    assert "no claimflow stack is running" in result.output


@pytest.fixture
def marked_sleeper() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    stack_id = uuid.uuid4().hex
    env = {**os.environ, stack_plan.STACK_ID_ENV: stack_id}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    yield proc, stack_id
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_down_stops_stragglers_of_a_dead_stack(
    marked_sleeper: tuple[subprocess.Popen[bytes], str],
) -> None:
    """`up` was SIGKILLed: its pid is gone but a child carrying the marker survives."""
    proc, stack_id = marked_sleeper
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    settings = StackSettings()
    stack_procs.write_state(settings, StackState(pid=dead.pid, stack_id=stack_id, started_at=1.0,
                                           bootstrap="127.0.0.1:1"))
    deadline = time.monotonic() + 10
    while not stack_procs.marked_processes(stack_id) and time.monotonic() < deadline:
        time.sleep(0.05)  # the child may not have exec'd yet
    result = CliRunner().invoke(stack.down, [])
    assert result.exit_code == 0, result.output
    assert "stopping 1 process(es) the stack left behind" in result.output
    proc.wait(timeout=10)  # psutil reaped it already; this only proves it ended
    assert not psutil.pid_exists(proc.pid)
    assert not settings.state_file.exists()
    assert stack_procs.marked_processes(stack_id) == []


def test_a_reused_pid_is_not_mistaken_for_a_stack() -> None:
    assert not stack_procs.is_stack_process(os.getpid())  # pytest, not `claimflow up`


def test_up_help_lists_the_options() -> None:
    result = CliRunner().invoke(stack.up, ["--help"])
    assert result.exit_code == 0
    for option in ("--rate", "--duration", "--detach", "--prepare-only", "--gateway-port"):
        assert option in result.output


def test_model_status_json_is_one_line() -> None:
    assert json.loads(ModelStatus("1", True).to_json()) == {"champion": "1", "exported": True,
                                                           "claim_version": 2, "features": None}
    status = ModelStatus("1", True, features=("a", "b"))
    assert ModelStatus.from_json(status.to_json()) == status


@pytest.mark.parametrize(
    ("uri", "server"),
    [
        (None, None),
        ("sqlite:////tmp/x/mlflow.db", None),
        ("http://mlflow:5000", "http://mlflow:5000"),
        ("https://mlflow.example", "https://mlflow.example"),
    ],
)
def test_an_external_tracking_server_replaces_the_local_mlflow_ui(
    uri: str | None, server: str | None
) -> None:
    assert stack_plan.tracking_server(uri) == server
    names = [p.name for p in stack_plan.stack_processes(StackSettings(), mlflow_ui=server is None)]
    assert ("mlflow" in names) is (server is None)
    urls = {e.name: e.url for e in stack_plan.endpoints(StackSettings(), server)}
    assert urls["MLflow UI"] == (server + "/" if server else "http://127.0.0.1:5000/")


def test_waiting_line_names_what_is_not_ready() -> None:
    pending = stack_plan.endpoints(StackSettings())[2:]
    assert stack_summary.waiting_line(pending, 12.3) == (
        "waiting for the first decision (12 s since start); not answering yet: model service")
    assert stack_summary.waiting_line([], 5) == "waiting for the first decision (5 s since start)"


def test_tail_hint_names_a_moved_broker() -> None:
    assert stack_plan.tail_hint("127.0.0.1:9092") == "claimflow tail investigate"
    assert stack_plan.tail_hint("127.0.0.1:19092") == (
        "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 claimflow tail investigate")


def test_a_missing_sqlite_store_has_no_champion(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    assert stack_plan.store_is_missing(f"sqlite:///{db}")
    db.write_bytes(b"")
    assert not stack_plan.store_is_missing(f"sqlite:///{db}")
    assert not stack_plan.store_is_missing("http://mlflow:5000")


def test_model_status_helper_on_a_fresh_home(tmp_path: Path) -> None:
    """The child `up` asks before it trains: a new CLAIMFLOW_HOME has no champion."""
    env = {**os.environ, "CLAIMFLOW_HOME": str(tmp_path / "fresh")}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-m", "claimflow.stack", "model-status"],
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    status = ModelStatus.from_json(result.stdout)
    assert status == ModelStatus(champion=None, exported=False)
    assert stack_plan.plan_model(status) is ModelAction.TRAIN
