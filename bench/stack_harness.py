"""Start and stop the real claimflow components for fault drills.

A :class:`Stack` owns a temporary ``CLAIMFLOW_HOME`` and every process it starts: its own
Kafka broker (``claimflow kafka start`` on free, non-default ports, so a drill may stop it
without touching anyone else's broker), the model service, scorer workers, the gateway and
producers, each a subprocess in its own session with its log in ``<home>/logs``.

Bounded and self-stopping: a watchdog interrupts the drill at ``deadline_s`` and, if that
does not end it, kills everything and exits. ``close()`` (also on Ctrl-C, SIGTERM and at
interpreter exit) stops every process it started, the broker last, and removes the home.
"""

from __future__ import annotations

import _thread
import atexit
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from claimflow.procs import QUIET_ENV as QUIET_ENV
from claimflow.procs import free_port as free_port  # re-exported for the benchmarks

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CLAIMFLOW = (sys.executable, "-c", "from claimflow.cli import main; main()")
# Settings of the components read from these env prefixes; the drill sets what it needs and
# nothing from the caller's shell may redirect a drill to another broker or service.
COMPONENT_ENV_PREFIXES = ("KAFKA_", "PRODUCER_", "TRAINER_", "MODEL_", "SCORER_", "GATEWAY_",
                          "MLFLOW_", "BENTOML_", "CLAIMFLOW_")
def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout_s).status_code == httpx.codes.OK
    except httpx.HTTPError:
        return False


class StackError(RuntimeError):
    """A component did not start or stop as it should; the message names its log."""


# --------------------------------------------------------------------------- processes


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file ("" when there is none yet)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class ManagedProcess:
    """A subprocess in its own session (so its children die with it), logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str],
                 log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._log: IO[bytes] | None = None
        # Called with the pid once the process is known to be gone (the stack's reaper
        # then forgets its process group, whose id the OS may hand out again).
        self.on_gone: Callable[[int], None] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        command = " ".join(self.argv).replace("\n", "\\n")
        self._log.write(f"\n=== start {self.name}: {command}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(self.argv, env=self.env, cwd=REPO_ROOT, stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        self.started_at = time.monotonic()
        logger.info("started %s (pid %d), log %s", self.name, self.popen.pid, self.log_path)
        return self

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise StackError(f"{self.name} was never started")
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the process and everything it started; False if already gone."""
        if not self.alive():
            return False
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL, no grace: what a crash looks like."""
        if self.signal_group(signal.SIGKILL):
            logger.info("SIGKILL %s (pid %d)", self.name, self.pid)
        self.wait(10)
        self._close_log()

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait; SIGKILL what is left after ``timeout_s``. Returns the exit code."""
        if self.popen is None:
            return None
        if self.signal_group(signal.SIGTERM):
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM for %.0f s; SIGKILL", self.name, timeout_s)
        # Children that outlived their parent are part of the group too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.wait(10)
        self._close_log()
        return self.popen.returncode

    def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None if the process still runs after ``timeout_s``."""
        if self.popen is None:
            return None
        try:
            code = self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._close_log()  # the child is gone: nothing writes to its log any more
        return code

    def dump_stacks(self) -> None:
        """Make a stuck Python component print every thread's stack to its log, then end.

        Components run with PYTHONFAULTHANDLER=1, whose SIGABRT handler dumps the stacks.
        Only for the diagnosis of a drill that already failed.
        """
        if self.alive():
            logger.error("%s seems stuck: dumping its stacks to %s", self.name, self.log_path)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGABRT)
            self.wait(10)

    def log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_path, lines)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.on_gone is not None and self.popen is not None and not self.alive():
            self.on_gone(self.popen.pid)
            self.on_gone = None


# --------------------------------------------------------------------------- the stack


@dataclass(frozen=True)
class Topics:
    """One run's topic set (uuid-prefixed by :meth:`fresh`, so drills and benchmarks on one
    broker never share data)."""

    claims: str
    approved: str
    investigate: str
    deadletter: str

    @classmethod
    def fresh(cls, label: str) -> Topics:
        prefix = f"{label}-{uuid.uuid4().hex[:8]}"
        return cls(f"{prefix}.claims", f"{prefix}.approved", f"{prefix}.investigate",
                   f"{prefix}.deadletter")

    @property
    def decisions(self) -> list[str]:
        return [self.approved, self.investigate]

    @property
    def outcomes(self) -> list[str]:
        return [self.approved, self.investigate, self.deadletter]

    @property
    def all(self) -> list[str]:
        return [self.claims, self.approved, self.investigate, self.deadletter]


class Reaper:
    """A helper process that cleans up after a harness that died without closing.

    The harness tells it, line by line on a pipe, which process groups, broker and home it
    owns. If the pipe closes without a final ``done`` (the harness was SIGKILLed, e.g. by a
    test timeout), the reaper kills those process groups, stops the broker and removes the
    home: a drill never leaves orphans behind, whatever happens to the drill itself.
    """

    def __init__(self, log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        # Own session: a Ctrl-C or a timeout aimed at the harness's group does not reach it.
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from bench.stack_harness import reap; reap()"],
            stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            start_new_session=True)

    def tell(self, line: str) -> None:
        if self._proc.stdin is None or self._proc.stdin.closed:
            return
        try:
            self._proc.stdin.write(line.encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            logger.warning("the reaper is gone; cleanup relies on close() alone")

    def done(self) -> None:
        """Everything is cleaned up: the reaper may leave."""
        self.tell("done")
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._log.close()


def reap() -> None:
    """The reaper's main loop (see :class:`Reaper`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    brokers: dict[str, dict[str, str]] = {}
    homes: set[str] = set()
    for raw in sys.stdin:
        command, _, arg = raw.strip().partition(" ")
        if command == "done":
            return
        if command == "group":
            groups.add(int(arg))
        elif command == "forget":
            groups.discard(int(arg))
        elif command == "broker":
            home, port, controller = arg.split(" ")
            brokers[home] = {"CLAIMFLOW_HOME": home, "KAFKA_PORT": port,
                             "KAFKA_CONTROLLER_PORT": controller}
        elif command == "nobroker":
            brokers.pop(arg, None)
        elif command == "home":
            homes.add(arg)
    # The pipe closed without "done": the harness died. Clean up after it.
    print(f"harness gone: killing groups {sorted(groups)}, stopping brokers {sorted(brokers)}",
          flush=True)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
                time.sleep(0.2)
    for env in brokers.values():
        full = {k: v for k, v in os.environ.items() if not k.startswith(COMPONENT_ENV_PREFIXES)}
        subprocess.run([*CLAIMFLOW, "kafka", "stop"], env={**full, **env}, cwd=REPO_ROOT,
                       timeout=120, check=False)
    for home in homes:
        shutil.rmtree(home, ignore_errors=True)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Stack:
    """The real components on this machine, in a temporary home, all stopped on close."""

    def __init__(self, *, deadline_s: float, home: Path | None = None,
                 keep_home: bool = False, label: str = "drills") -> None:
        self.deadline_s = deadline_s
        self._own_home = home is None
        self.home = home or Path(tempfile.mkdtemp(prefix=f"claimflow-{label}-"))
        self.home.mkdir(parents=True, exist_ok=True)
        self.keep_home = keep_home
        # Components write their own logs under <home>/logs; the harness keeps its own apart.
        self.logs = self.home / "harness-logs"
        self.kafka_port = free_port()
        self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.processes: list[ManagedProcess] = []
        self.broker_running = False
        self._closed = False
        self._watchdog: threading.Timer | None = None
        self._killer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._reaper: Reaper | None = None
        self._previous_sigint: signal._HANDLER = None

    # -- lifecycle

    def __enter__(self) -> Stack:
        self._reaper = Reaper(self.logs / "reaper.log")
        if self._own_home and not self.keep_home:
            self._reaper.tell(f"home {self.home}")
        self._take_sigint()
        self._watchdog = threading.Timer(self.deadline_s, self._deadline_passed)
        self._watchdog.daemon = True
        self._watchdog.start()
        atexit.register(self.close)
        return self

    def _take_sigint(self) -> None:
        """The watchdog interrupts the drill with SIGINT, so SIGINT must raise
        KeyboardInterrupt while the stack is open: a process started as a shell's background
        job (``make drills &``) inherits SIGINT ignored, and then no deadline would ever cut a
        hung drill short. The previous handler comes back on close."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)

    def _give_back_sigint(self) -> None:
        if self._previous_sigint is not None and (
                threading.current_thread() is threading.main_thread()):
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _deadline_passed(self) -> None:
        logger.error("stack deadline of %.0f s passed: interrupting the drill", self.deadline_s)
        # A last resort if the main thread cannot even unwind (stuck in C code).
        self._killer = threading.Timer(60.0, self._hard_stop)
        self._killer.daemon = True
        self._killer.start()
        # A real SIGINT aimed at the main thread also breaks blocking waits there
        # (interrupt_main() alone would only be noticed once the wait returns).
        main = threading.main_thread().ident
        if main is not None:
            signal.pthread_kill(main, signal.SIGINT)
        else:
            _thread.interrupt_main()

    def _hard_stop(self) -> None:
        logger.error("drill did not unwind after its deadline: killing everything")
        for proc in self.processes:
            proc.signal_group(signal.SIGKILL)
        self._stop_broker_quietly()
        os._exit(124)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for timer in (self._watchdog, self._killer):
            if timer is not None:
                timer.cancel()
        self._give_back_sigint()
        for proc in reversed(self.processes):
            proc.stop(timeout_s=15)
        self._stop_broker_quietly()
        if self._reaper is not None:
            self._reaper.done()
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        if self._own_home and not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)
        elif self.keep_home:
            logger.info("kept the stack's home %s", self.home)

    # -- environment and commands

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(COMPONENT_ENV_PREFIXES)}
        env.update(QUIET_ENV)
        env.update({
            "CLAIMFLOW_HOME": str(self.home),
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "BENTOML_HOME": str(self.home / "bentoml"),
        })
        env.update(extra or {})
        return env

    def cli(self, *args: str, env: Mapping[str, str] | None = None,
            timeout_s: float = 300.0, log_name: str | None = None) -> str:
        """Run ``claimflow ARGS`` to completion; its output goes to a log; raises on failure."""
        name = log_name or "-".join(args[:2])
        log_path = self.logs / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with log_path.open("ab") as log:
            log.write(f"\n=== claimflow {' '.join(args)}\n".encode())
            log.flush()
            done = subprocess.run([*CLAIMFLOW, *args], env=self.env(env), cwd=REPO_ROOT,
                                  stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s,
                                  check=False, start_new_session=True)
        text = log_path.read_text(encoding="utf-8", errors="replace")
        if done.returncode != 0:
            tail = "\n".join(text.strip().splitlines()[-15:])
            raise StackError(f"claimflow {' '.join(args)} failed ({done.returncode}); "
                             f"log {log_path}:\n{tail}")
        logger.info("claimflow %s: done in %.1f s", " ".join(args), time.monotonic() - started)
        return text

    def spawn(self, name: str, *args: str, env: Mapping[str, str] | None = None,
              argv: Sequence[str] | None = None) -> ManagedProcess:
        """Start a long-running ``claimflow ARGS`` (or ``argv``) owned by the stack."""
        if self._closed:
            raise StackError("the stack is closed")
        proc = ManagedProcess(name, argv or [*CLAIMFLOW, *args], self.env(env),
                              self.logs / f"{name}.log")
        self.processes.append(proc)
        proc.start()
        reaper = self._reaper
        if reaper is not None:
            # Its own session: the process group id is its pid.
            reaper.tell(f"group {proc.pid}")
            proc.on_gone = lambda pid: reaper.tell(f"forget {pid}")
        return proc

    # -- Kafka

    def start_broker(self, timeout_s: float = 180.0) -> float:
        """``claimflow kafka start`` on this stack's ports; returns the seconds it took."""
        started = time.monotonic()
        self.broker_running = True  # from here on, close() must try to stop it
        if self._reaper is not None:
            self._reaper.tell(f"broker {self.home} {self.kafka_port} {self.controller_port}")
        self.cli("kafka", "start", timeout_s=timeout_s, log_name="kafka")
        return time.monotonic() - started

    def broker_pid(self) -> int | None:
        """The running broker's pid, e.g. to account for its CPU."""
        from broker.local import running_pid
        from broker.settings import KafkaSettings

        return running_pid(KafkaSettings(claimflow_home=self.home, port=self.kafka_port,
                                         controller_port=self.controller_port))

    def stop_broker(self, timeout_s: float = 120.0) -> float:
        started = time.monotonic()
        self.cli("kafka", "stop", timeout_s=timeout_s, log_name="kafka")
        self.broker_running = False
        if self._reaper is not None:
            self._reaper.tell(f"nobroker {self.home}")
        return time.monotonic() - started

    def kill_broker(self, timeout_s: float = 30.0) -> float:
        """SIGKILL the broker, no shutdown: what a crash or a power cut looks like (open
        transactions, unflushed segments). Returns the seconds until the process was gone."""
        pid = self.broker_pid()
        if pid is None:
            raise StackError("no running broker to kill")
        started = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        logger.info("SIGKILL broker (pid %d)", pid)
        deadline = started + timeout_s
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                raise StackError(f"broker pid {pid} still alive {timeout_s:.0f} s after SIGKILL")
            time.sleep(0.05)  # polling for the process to vanish, bounded by the deadline
        self.broker_running = False
        if self._reaper is not None:
            self._reaper.tell(f"nobroker {self.home}")
        return time.monotonic() - started

    def _stop_broker_quietly(self) -> None:
        if not self.broker_running:
            return
        try:
            self.stop_broker()
        except (StackError, subprocess.TimeoutExpired, OSError) as exc:
            logger.error("could not stop the drill broker: %s", exc)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topics(self, topics: Topics, partitions: int = 6) -> Topics:
        admin = self.admin()
        specs = [NewTopic(topics.claims, num_partitions=partitions, replication_factor=1)]
        specs += [NewTopic(t, num_partitions=partitions, replication_factor=1)
                  for t in (topics.approved, topics.investigate)]
        specs.append(NewTopic(topics.deadletter, num_partitions=1, replication_factor=1))
        for name, future in admin.create_topics(specs).items():
            future.result(timeout=30)
            logger.debug("created topic %s", name)
        return topics

    def create_labels_topic(self, name: str) -> str:
        """A compacted topic for investigators' labels (as `claimflow topics create` makes
        claims.labels)."""
        admin = self.admin()  # kept referenced until the future is done: its handle owns it
        future = admin.create_topics([NewTopic(
            name, num_partitions=1, replication_factor=1,
            config={"cleanup.policy": "compact"})])[name]
        future.result(timeout=30)
        return name

    # -- the model

    def train_champion(self, rows: int = 20_000, seed: int = 7) -> None:
        """Generate realistic claims, train, and promote the model to champion."""
        data = self.home / "train.csv"
        self.cli("generate", "--profile", "realistic-v1", "--seed", str(seed), "--rows", str(rows),
                 "--out", str(data), "--quiet", log_name="train")
        self.cli("train", "--data", str(data), "--promote", timeout_s=600, log_name="train")

    def has_champion(self) -> bool:
        """A model exported to this home's BentoML store (by an earlier run with --home)."""
        return any((self.home / "bentoml" / "models" / "claim-anomaly").glob("*/model.yaml"))

    def start_model_service(self, port: int | None = None, name: str = "model",
                            timeout_s: float = 180.0) -> ModelService:
        port = port or free_port()
        proc = self.spawn(name, "serve-model", "--port", str(port))
        service = ModelService(proc, f"http://127.0.0.1:{port}", port)
        service.wait_ready(timeout_s)
        return service

    # -- workers, gateway, producers

    def scorer_env(self, topics: Topics, group: str, instance_prefix: str,
                   model_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "SCORER_INPUT_TOPIC": topics.claims,
            "SCORER_APPROVED_TOPIC": topics.approved,
            "SCORER_INVESTIGATE_TOPIC": topics.investigate,
            "SCORER_DEADLETTER_TOPIC": topics.deadletter,
            "SCORER_GROUP_ID": group,
            "SCORER_MODEL_URL": model_url,
            "SCORER_TRANSACTIONAL_ID_PREFIX": instance_prefix,
        }
        env.update(extra or {})
        return env

    def start_scorer(self, name: str, topics: Topics, group: str, model_url: str,
                     *, instance_prefix: str | None = None,
                     extra_env: Mapping[str, str] | None = None) -> ManagedProcess:
        """One ``claimflow score`` process; the same ``instance_prefix`` after a restart keeps
        its transactional.id, which is what fences the killed predecessor."""
        env = self.scorer_env(topics, group, instance_prefix or f"{group}-{name}", model_url,
                              extra_env)
        return self.spawn(name, "score", env=env)

    def start_gateway(self, topics: Topics, *, name: str = "gateway",
                      extra_env: Mapping[str, str] | None = None,
                      timeout_s: float = 120.0) -> Gateway:
        """The gateway on ``topics``: it produces claims to ``topics.claims`` and answers with
        the decisions a scorer on those topics publishes (start one: the gateway does not
        call the model service)."""
        port = free_port()
        env = {
            "GATEWAY_CLAIMS_TOPIC": topics.claims,
            "GATEWAY_DEADLETTER_TOPIC": topics.deadletter,
            "GATEWAY_APPROVED_TOPIC": topics.approved,
            "GATEWAY_INVESTIGATE_TOPIC": topics.investigate,
            "GATEWAY_VIEW_GROUP_ID": f"view-{uuid.uuid4().hex[:8]}",
        }
        env.update(extra_env or {})
        proc = self.spawn(name, "gateway", "--host", "127.0.0.1", "--port", str(port), env=env)
        gateway = Gateway(proc, f"http://127.0.0.1:{port}", port)
        gateway.wait_ready(timeout_s)
        return gateway

    def start_producer(self, name: str, topic: str, rows: int, *, seed: int,
                       rate: float | None = None) -> ManagedProcess:
        args = ["produce", "--profile", "realistic-v1", "--rows", str(rows), "--seed", str(seed),
                "--topic", topic, "--quiet"]
        if rate:
            args += ["--rate", str(rate)]
        return self.spawn(name, *args)


@dataclass
class ModelService:
    process: ManagedProcess
    url: str
    port: int

    def ready(self) -> bool:
        return http_ok(f"{self.url}/readyz")

    def wait_ready(self, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        while not self.ready():
            if not self.process.alive():
                raise StackError(f"model service exited ({self.process.returncode}):\n"
                                 f"{self.process.log_tail()}")
            if time.monotonic() > deadline:
                raise StackError(f"model service not ready within {timeout_s:.0f} s:\n"
                                 f"{self.process.log_tail()}")
            time.sleep(0.2)
        return time.monotonic() - started


@dataclass
class Gateway:
    process: ManagedProcess
    url: str
    port: int

    def ready(self) -> bool:
        return http_ok(f"{self.url}/readyz") or http_ok(f"{self.url}/healthz")

    def wait_ready(self, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        while not self.ready():
            if not self.process.alive():
                raise StackError(f"gateway exited ({self.process.returncode}):\n"
                                 f"{self.process.log_tail()}")
            if time.monotonic() > deadline:
                raise StackError(f"gateway not ready within {timeout_s:.0f} s:\n"
                                 f"{self.process.log_tail()}")
            time.sleep(0.2)
        return time.monotonic() - started


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so that ``with Stack(...)`` cleans up."""
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _pid_alive(pid: int) -> bool:
    """Alive and not a zombie (a killed child of ours lingers as one until reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
