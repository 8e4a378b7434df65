"""`claimflow up` end to end, the way `make demo` runs it: its own broker on free ports, a
temp CLAIMFLOW_HOME, training on the first run, decisions flowing to the dashboard and to
`claimflow tail investigate`; then Ctrl-C (SIGINT) and no process of the stack left behind.

Runs the real parts (Kafka from the cached jars, MLflow, BentoML, the gateway) and never
touches the shared development broker on 9092/9093.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import psutil
import pytest

from claimflow import stack_plan, stack_procs
from claimflow.procs import free_ports, wait_until

pytestmark = pytest.mark.integration

# Settings of the components are read from these prefixes; none may leak in from the shell
# running the tests (it could point the stack at another broker or service).
COMPONENT_PREFIXES = ("KAFKA_", "PRODUCER_", "TRAINER_", "MODEL_", "SCORER_", "GATEWAY_",
                      "STACK_", "MLFLOW_", "BENTOML_", "CLAIMFLOW_")
CLAIMFLOW = str(Path(sys.executable).with_name("claimflow"))
SAFETY_DURATION_S = 420  # the stack stops by itself even if this test dies
FLOW_DEADLINE_S = 360  # generous: a busy 2-core machine needs minutes, a quiet one ~1


@dataclass
class Demo:
    home: Path
    env: dict[str, str]
    gateway_port: int
    bootstrap: str
    proc: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    lines: list[str] = field(default_factory=list)
    seen: dict[int, float] = field(default_factory=dict)  # pid -> create_time

    def start(self, *args: str) -> None:
        self.proc = subprocess.Popen([CLAIMFLOW, "up", *args], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        with (self.home / "test-demo.log").open("ab") as log, stream:
            for raw in iter(stream.readline, b""):
                log.write(raw)
                log.flush()
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def record_processes(self, stack_id: str | None) -> None:
        """Remember every process of the stack seen so far (the tree under `up`, and the
        broker, which runs in its own session and carries the stack's marker)."""
        assert self.proc is not None
        try:
            procs = [psutil.Process(self.proc.pid),
                     *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        if stack_id:
            procs += stack_procs.marked_processes(stack_id)
        for p in procs:
            try:
                self.seen[p.pid] = p.create_time()
            except psutil.NoSuchProcess:
                continue

    def survivors(self) -> list[str]:
        alive = []
        for pid, created in self.seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(p.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                continue
        return alive

    def stack_id(self) -> str | None:
        state = stack_procs.read_state(self.settings())
        return state.stack_id if state else None

    def settings(self) -> stack_plan.StackSettings:
        return stack_plan.StackSettings(claimflow_home=self.home)

    def kill_everything(self) -> None:
        """Last resort after a failed test: nothing may outlive it."""
        stack_id = self.stack_id()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        leftovers = [psutil.Process(pid) for pid in self.seen if psutil.pid_exists(pid)]
        if stack_id:
            leftovers += stack_procs.marked_processes(stack_id)
        stack_procs.terminate_all(leftovers, timeout_s=10)
        subprocess.run([CLAIMFLOW, "kafka", "stop"], env=self.env, check=False,
                       capture_output=True, timeout=90)
        if self.reader is not None:
            self.reader.join(timeout=10)  # EOF once every writer of the pipe is gone


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    home = tmp_path / "home"
    home.mkdir()
    kafka, controller, gateway, model, mlflow = free_ports(5)
    env = {k: v for k, v in os.environ.items() if not k.startswith(COMPONENT_PREFIXES)}
    env.update({
        "CLAIMFLOW_HOME": str(home),
        "KAFKA_PORT": str(kafka),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "STACK_GATEWAY_PORT": str(gateway),
        "STACK_MODEL_PORT": str(model),
        "STACK_MLFLOW_PORT": str(mlflow),
        "STACK_ROWS": "5000",
        "STACK_RATE": "200",
        "STACK_SUMMARY_INTERVAL_S": "2",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "BENTOML_DO_NOT_TRACK": "true",
    })
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the stack's own broker, on the free port
    d = Demo(home=home, env=env, gateway_port=gateway, bootstrap=f"127.0.0.1:{kafka}")
    try:
        yield d
    finally:
        d.kill_everything()


def wait_for_flow(demo: Demo, deadline: float) -> dict[str, int]:
    """Poll the dashboard's stats until both decisions have arrived."""
    url = f"http://127.0.0.1:{demo.gateway_port}/api/v1/stats"
    totals: dict[str, int] = {}
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline and demo.running():
            demo.record_processes(demo.stack_id())
            try:
                totals = client.get(url).json()["totals"]
            except (httpx.HTTPError, ValueError, KeyError):
                totals = {}
            if totals.get("approve", 0) > 0 and totals.get("investigate", 0) > 0:
                return totals
            time.sleep(1.0)
    pytest.fail(f"no decisions on the dashboard (last stats {totals}); output:\n"
                f"{demo.output[-6000:]}")


@pytest.mark.timeout(900)  # bounded by its own deadlines; a busy machine needs minutes
def test_make_demo_streams_decisions_and_ctrl_c_leaves_nothing_behind(demo: Demo) -> None:
    began = time.monotonic()
    demo.start("--duration", str(SAFETY_DURATION_S))
    totals = wait_for_flow(demo, began + FLOW_DEADLINE_S)
    flowing_after = time.monotonic() - began
    stack_id = demo.stack_id()
    assert stack_id is not None
    demo.record_processes(stack_id)

    tail = subprocess.run(
        [CLAIMFLOW, "tail", "investigate", "--from-beginning", "--max-messages", "1",
         "--timeout", "60"],
        env={**demo.env, "KAFKA_BOOTSTRAP_SERVERS": demo.bootstrap},
        capture_output=True, text=True, timeout=120, check=False)
    assert tail.returncode == 0, tail.stderr
    assert "C-" in tail.stdout, f"no flagged claim printed: {tail.stdout!r} {tail.stderr!r}"

    # The live summary and the URLs were printed. The summary's first line comes one interval
    # (5 s) after the first decision: with a ready champion the flow can be checked sooner.
    assert "first decision" in demo.output
    wait_until(lambda: "dead-lettered" in demo.output, 60,
               f"the live summary line in the demo's output:\n{demo.output[-3000:]}")
    assert "approved" in demo.output
    assert f"http://127.0.0.1:{demo.gateway_port}/" in demo.output
    demo.record_processes(stack_id)
    assert len(demo.seen) >= 8, demo.seen  # up, honcho helpers, 6 services, workers, broker

    assert demo.proc is not None
    demo.proc.send_signal(signal.SIGINT)  # what Ctrl-C does
    assert demo.proc.wait(timeout=90) == 0, demo.output[-4000:]
    assert demo.survivors() == []
    assert stack_procs.marked_processes(stack_id) == []
    assert not demo.settings().state_file.exists()
    assert "stopping the local Kafka broker" in demo.output
    print(f"\ndecisions flowing {flowing_after:.1f} s after `claimflow up` ({totals}); "
          f"{len(demo.seen)} processes, none left")

    # State is kept: what the next `up` asks before it would train finds the champion and
    # its export, so the next run skips training (the decision itself: test_stack.py).
    status = subprocess.run([sys.executable, "-m", "claimflow.stack", "model-status"],
                            env=demo.env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert status.returncode == 0, status.stderr
    assert stack_plan.plan_model(stack_plan.ModelStatus.from_json(status.stdout.strip())) is (
        stack_plan.ModelAction.READY)
