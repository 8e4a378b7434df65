"""The demo stack's processes: its state file, finding every process it started (they carry
``CLAIMFLOW_STACK_ID`` in their environment) and stopping them, and ``up --detach`` (a
background run, waited for until its services answer)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from claimflow.stack_plan import (
    STACK_ID_ENV,
    Endpoint,
    StackError,
    StackSettings,
    StackState,
    endpoints,
    tracking_server,
    url_banner,
)

log = logging.getLogger(__name__)


def claimflow_executable() -> str:
    """The ``claimflow`` script of this interpreter's environment (works without an activated
    virtualenv), falling back to the one on PATH."""
    sibling = Path(sys.executable).with_name("claimflow")
    return str(sibling) if sibling.exists() else "claimflow"


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


def wait_ready(
    items: Sequence[Endpoint], deadline: float, alive: Callable[[], bool]
) -> list[Endpoint]:
    """Poll until every endpoint answers, the deadline passes or ``alive()`` turns false;
    returns the endpoints still not ready."""
    import httpx

    pending = list(items)
    with httpx.Client(timeout=2.0) as client:
        while pending and time.monotonic() < deadline and alive():
            pending = [e for e in pending if not endpoint_answers(client, e)]
            if pending:
                time.sleep(0.5)
    return pending


def endpoint_answers(client: Any, endpoint: Endpoint) -> bool:
    import httpx

    try:
        return bool(client.get(endpoint.probe_url).status_code == 200)
    except httpx.HTTPError:
        return False


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


def wait_gone(pid: int, timeout_s: float) -> bool:
    import psutil

    try:
        psutil.Process(pid).wait(timeout=timeout_s)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True
