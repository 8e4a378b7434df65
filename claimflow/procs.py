"""Ports, polling and a quiet environment for child processes: shared by the demo stack, the
benchmarks and the tests (one definition each, so a fix lands everywhere)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, Final

# Third-party telemetry off and unbuffered output for every process we start; a stuck one
# can be made to print every thread's stack (SIGABRT).
QUIET_ENV: Final = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PYTHONUNBUFFERED": "1",
    "PYTHONFAULTHANDLER": "1",
}


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports nobody listens on right now (the OS picks them, all bound at
    once so none repeats)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now."""
    return free_ports(1, host)[0]


def wait_until(check: Callable[[], Any], timeout_s: float, what: str,
               interval_s: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy, and return that; AssertionError
    naming ``what`` when the deadline passes first (tests read it as a failure)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)  # polling interval, bounded by the deadline
