"""The local single-node KRaft broker as a background process: start, stop, status.

State lives under ``CLAIMFLOW_HOME/kafka`` (data, rendered configuration, pid file) and
``CLAIMFLOW_HOME/logs`` (``kafka.log`` from log4j2, ``kafka.out`` for the JVM console).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from broker.admin import metadata_answers, wait_for_metadata
from broker.config import (
    BROKER_JVM_FLAGS,
    BROKER_MAIN,
    STORAGE_TOOL_MAIN,
    BrokerConfig,
    cluster_id,
    java_command,
    log4j2_properties,
    render_properties,
    server_properties,
)
from broker.errors import BrokerError
from broker.jars import STAMP, find_java, install_jars
from broker.logs import tail_lines
from broker.settings import KAFKA_VERSION, KafkaSettings

logger = logging.getLogger(__name__)

STOP_POLL_S = 0.1
# Detaches the broker from the caller: the shell starts java in the background and exits,
# so the broker is nobody's child (no zombie, no ResourceWarning, survives the CLI).
DETACH = 'out=$1; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'


@dataclass(frozen=True)
class StartResult:
    pid: int
    bootstrap: str
    seconds: float
    already_running: bool = False


@dataclass(frozen=True)
class StopResult:
    pid: int | None  # None: nothing was running
    graceful: bool
    seconds: float


@dataclass(frozen=True)
class Status:
    pid: int | None
    answers: bool
    bootstrap: str

    @property
    def running(self) -> bool:
        return self.pid is not None


def broker_config(settings: KafkaSettings) -> BrokerConfig:
    return BrokerConfig(listen_host=settings.host, port=settings.port,
                        controller_port=settings.controller_port,
                        controller_host=settings.host, data_dir=str(settings.data_dir))


def status(settings: KafkaSettings) -> Status:
    pid = running_pid(settings)
    answers = pid is not None and metadata_answers(settings.bootstrap)
    return Status(pid=pid, answers=answers, bootstrap=settings.bootstrap)


def start(settings: KafkaSettings) -> StartResult:
    """Start the broker unless it runs; return once it answers metadata requests."""
    began = time.monotonic()
    running = running_pid(settings)
    if running is not None:
        wait_for_metadata(settings.bootstrap, settings.start_timeout_s,
                          alive=lambda: _alive(running))
        return StartResult(running, settings.bootstrap, time.monotonic() - began, True)
    java = find_java(settings)
    libs = install_jars(settings)
    for port in (settings.port, settings.controller_port):
        _require_free_port(settings, port)
    _write_configs(settings)
    _format_storage(settings, java, libs)
    _settle_class_archive(settings, keep=False)  # left by a broker that did not stop via us
    pid = _spawn(settings, java, libs)
    try:
        wait_for_metadata(settings.bootstrap, settings.start_timeout_s,
                          alive=lambda: _alive(pid))
    except BrokerError as exc:
        _terminate(pid, settings.stop_timeout_s)
        settings.pid_file.unlink(missing_ok=True)
        _settle_class_archive(settings, keep=False)
        raise BrokerError(f"{exc}\n{_log_tail(settings)}") from exc
    seconds = time.monotonic() - began
    logger.info("Kafka %s up on %s (pid %d) in %.1f s", KAFKA_VERSION, settings.bootstrap, pid,
                seconds)
    return StartResult(pid, settings.bootstrap, seconds)


def stop(settings: KafkaSettings) -> StopResult:
    """SIGTERM (Kafka's controlled shutdown) and wait; SIGKILL only after the timeout."""
    began = time.monotonic()
    pid = running_pid(settings)
    if pid is None:
        settings.pid_file.unlink(missing_ok=True)
        return StopResult(None, True, 0.0)
    graceful = _terminate(pid, settings.stop_timeout_s)
    settings.pid_file.unlink(missing_ok=True)
    _settle_class_archive(settings, keep=graceful)
    return StopResult(pid, graceful, time.monotonic() - began)


def running_pid(settings: KafkaSettings) -> int | None:
    """The pid from the pid file if that process is alive and is this broker."""
    try:
        pid = int(settings.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not _alive(pid) or not _is_our_broker(pid, settings):
        return None
    return pid


def _write_configs(settings: KafkaSettings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    header = "Rendered by `claimflow kafka start` on every start; edit KAFKA_* settings instead."
    settings.server_properties.write_text(
        render_properties(server_properties(broker_config(settings)), header))
    settings.log4j_config.write_text(
        render_properties(log4j2_properties(settings.log_file), header))


def _format_storage(settings: KafkaSettings, java: str, libs: Path) -> None:
    """Format the KRaft data folder once; a formatted folder keeps its data and cluster id."""
    if (settings.data_dir / "meta.properties").exists():
        return
    command = java_command(
        java, libs, STORAGE_TOOL_MAIN,
        ["format", "-t", cluster_id(secrets.token_bytes(16)), "-c",
         str(settings.server_properties)],
        heap="256m", log4j_config=settings.log4j_config)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"formatting {settings.data_dir} failed:\n{result.stdout}{result.stderr}")
    logger.info("formatted %s", settings.data_dir)


def _spawn(settings: KafkaSettings, java: str, libs: Path) -> int:
    command = java_command(java, libs, BROKER_MAIN, [str(settings.server_properties)],
                           heap=settings.heap, log4j_config=settings.log4j_config,
                           jvm_flags=[*BROKER_JVM_FLAGS, *_class_archive_flags(settings, java)])
    shell = subprocess.run(["/bin/sh", "-c", DETACH, "sh", str(settings.console_file), *command],
                           capture_output=True, text=True, check=True,
                           start_new_session=True, cwd=settings.kafka_home)
    pid = int(shell.stdout.strip())
    settings.pid_file.write_text(f"{pid}\n")
    logger.info("started Kafka %s (pid %d), logs in %s", KAFKA_VERSION, pid, settings.log_file)
    return pid


def class_archive(settings: KafkaSettings, java: str) -> Path:
    """Where the broker's class-data-sharing archive for this JVM and these jars lives.

    Loading and verifying Kafka's classes is most of a start's CPU time; an archive of them
    (JDK AppCDS) halves it. It is only valid for the exact JVM and class path, hence the key.
    """
    binary = Path(java).resolve()
    info = binary.stat()
    stamp = (settings.jars_root / STAMP).read_text().strip()
    key = hashlib.sha256(f"{binary}:{info.st_size}:{info.st_mtime_ns}:{stamp}".encode())
    return settings.jars_root / "cds" / f"broker-{key.hexdigest()[:16]}.jsa"


def _class_archive_flags(settings: KafkaSettings, java: str) -> list[str]:
    archive = class_archive(settings, java)
    # Classes CDS cannot hold (old class files, ...) are skipped with a warning each; they are
    # loaded normally, so the warnings would only bury real JVM errors in kafka.out.
    quiet = "-Xlog:cds*=off"
    if archive.exists():
        return [quiet, f"-XX:SharedArchiveFile={archive}"]
    # No archive yet: this run writes one when it exits gracefully. Its own file name keeps
    # brokers of other CLAIMFLOW_HOMEs from writing the same file; `stop` adopts it.
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f"{archive.name}.{secrets.token_hex(4)}.partial")
    _archive_marker(settings).write_text(f"{partial}\n{archive}\n")
    return [quiet, f"-XX:ArchiveClassesAtExit={partial}"]


def _settle_class_archive(settings: KafkaSettings, *, keep: bool) -> None:
    """After the broker exited: adopt the archive it wrote, or drop a half-written one."""
    marker = _archive_marker(settings)
    try:
        partial_name, archive_name = marker.read_text().split()
    except (FileNotFoundError, ValueError):
        return
    partial, archive = Path(partial_name), Path(archive_name)
    if keep and partial.is_file() and partial.stat().st_size > 0 and not archive.exists():
        partial.replace(archive)
        logger.info("class-data archive for faster starts: %s", archive)
    partial.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)


def _archive_marker(settings: KafkaSettings) -> Path:
    return settings.kafka_home / "class-archive.pending"


def _require_free_port(settings: KafkaSettings, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the broker binds: connections of a previous run lingering in TIME_WAIT must not
        # count as "taken"; a listening socket still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, port))
        except OSError as exc:
            who = ("a Kafka broker already answers there (use it with "
                   f"KAFKA_BOOTSTRAP_SERVERS={settings.host}:{port})"
                   if metadata_answers(f"{settings.host}:{port}") else "another program uses it")
            raise BrokerError(
                f"port {settings.host}:{port} is taken: {who}. Pick other ports with KAFKA_PORT "
                f"and KAFKA_CONTROLLER_PORT (now {settings.port}/{settings.controller_port})."
            ) from exc


def _terminate(pid: int, timeout_s: float) -> bool:
    """True when the process exited on SIGTERM within the timeout."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(STOP_POLL_S)
    logger.warning("Kafka (pid %d) still running %.0f s after SIGTERM; killing it", pid, timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    # An exited process nobody has reaped yet still has a pid: state Z.
    return stat.rpartition(")")[2].split()[0] != "Z"


def _is_our_broker(pid: int, settings: KafkaSettings) -> bool:
    """Guards against a recycled pid: the command line must name our server.properties."""
    if not Path("/proc/self").exists():
        return True  # no /proc (macOS): the pid file is all we know
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (BROKER_MAIN.encode() in cmdline
            and str(settings.server_properties).encode() in cmdline)


def _log_tail(settings: KafkaSettings, lines: int = 30) -> str:
    parts = []
    for path in (settings.console_file, settings.log_file):
        tail = tail_lines(path, lines)
        if tail:
            parts.append(f"--- last lines of {path} ---\n" + "\n".join(tail))
    return "\n".join(parts) or f"(no log output in {settings.logs_dir})"
