"""``claimflow score --instances N``: the supervisor of worker processes (real child
processes, spawned; no broker)."""

from __future__ import annotations

import multiprocessing
import signal
import threading
from typing import Any

from scorer.supervisor import install_stop_handlers, supervise


def exit_with(code: int) -> None:
    """Child target: a worker that fails at once."""
    raise SystemExit(code)


def wait_for_sigterm(ready: Any) -> None:
    """Child target: a worker that stops cleanly on SIGTERM."""
    stop = threading.Event()
    install_stop_handlers(stop)
    ready.set()
    stop.wait(60)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as worker_process does before exiting
    raise SystemExit(0 if stop.is_set() else 9)


def test_supervisor_stops_the_others_when_one_worker_fails() -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    children = [context.Process(target=exit_with, args=(3,)),
                context.Process(target=wait_for_sigterm, args=(ready,))]
    for child in children:
        child.start()
    assert ready.wait(60)
    assert supervise(children, threading.Event()) == 1
    assert [child.exitcode for child in children] == [3, 0]


def test_supervisor_passes_a_stop_on_and_reports_a_clean_exit() -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    children = [context.Process(target=wait_for_sigterm, args=(ready,))]
    children[0].start()
    assert ready.wait(60)
    stop = threading.Event()
    stop.set()
    assert supervise(children, stop) == 0
    assert children[0].exitcode == 0
