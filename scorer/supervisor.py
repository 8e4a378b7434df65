"""``claimflow score --instances N``: worker processes under a small supervisor.

One instance runs in this process. More run as child processes (``multiprocessing``,
spawn), each with its own worker index: a stop signal (SIGTERM, SIGINT) is passed on to
every child, which finishes its batch in flight and exits; when one child exits on its own
(fatal error, killed) the others are stopped too and the command exits non-zero, so the
process manager sees it.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType

from claimflow.logging_setup import LOG_FORMAT, configure_logging
from scorer.worker import run_worker
from scorer.worker_settings import ScorerSettings

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A worker finishes its batch in flight in well under this; a stuck one is killed (its open
# transaction is then aborted by the broker: nothing is lost).
CHILD_STOP_TIMEOUT_S = 60.0


def install_stop_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            name = signal.Signals(signum).name
            logger.info("%s: finishing the batch in flight, then stopping", name)
        stop.set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)


def worker_process(settings: ScorerSettings, instance: int, log_level: str, parent: int) -> None:
    """Entry point of one child process of ``claimflow score --instances N``."""
    configure_logging(log_level)
    # Several workers write to one terminal or log file: say which one speaks.
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT.replace(
            "%(name)s", f"[worker {instance}] %(name)s")))
    stop = threading.Event()
    install_stop_handlers(stop)
    code = run_worker(settings, instance, stop=stop, parent_pid=parent)
    # The parent repeats SIGTERM until its children are gone; while the interpreter shuts
    # down, Python's default action would turn that into exit code -15.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    raise SystemExit(code)


def run_workers(
    settings: ScorerSettings, *, instances: int, first_instance: int, log_level: str
) -> int:
    """Run ``instances`` workers (child processes when more than one); 0 only when every
    worker stopped cleanly."""
    stop = threading.Event()
    if instances == 1:
        install_stop_handlers(stop)
        return run_worker(settings, first_instance, stop=stop)
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=worker_process,
            args=(settings, first_instance + i, log_level, os.getpid()),
            name=f"scorer-{first_instance + i}",
        )
        for i in range(instances)
    ]
    # Children inherit ignored stop signals: a Ctrl-C or SIGTERM that arrives while a child
    # is still importing cannot kill it half-way. Each child installs its own handlers once
    # it can stop cleanly, and supervise() repeats SIGTERM until every child has exited.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    for child in children:
        child.start()
    install_stop_handlers(stop)
    return supervise(children, stop)


def supervise(
    children: Sequence[multiprocessing.process.BaseProcess], stop: threading.Event
) -> int:
    """Wait until a stop signal or until any child ends, then stop the others; 0 only when
    every child stopped cleanly."""
    while not stop.wait(0.5):
        if any(child.exitcode is not None for child in children):
            break
    deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
    while alive := [child for child in children if child.is_alive()]:
        if time.monotonic() > deadline:
            logger.error("workers still running after %.0f s: killing them", CHILD_STOP_TIMEOUT_S)
            for child in alive:
                child.kill()
        else:
            for child in alive:
                if child.pid is not None:
                    os.kill(child.pid, signal.SIGTERM)
        multiprocessing.connection.wait([child.sentinel for child in alive], timeout=0.5)
    failed = [child for child in children if child.exitcode != 0]
    for child in failed:
        logger.error("%s exited with code %s", child.name, child.exitcode)
    return 1 if failed else 0
