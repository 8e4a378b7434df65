"""Suite-wide checks that keep one test from changing what the next one runs under."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

# Signals whose handlers decide how a process stops; claimflow's code sets them in commands
# that tests run in-process (producer, stack, worker). A handler left behind changes how
# every later test's subprocesses and watchdogs react (an ignored SIGINT is inherited).
GUARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


@pytest.fixture(autouse=True)
def signal_handlers_are_left_as_found() -> Iterator[None]:
    before = {sig: signal.getsignal(sig) for sig in GUARDED_SIGNALS}
    yield
    changed = {sig.name: signal.getsignal(sig) for sig in GUARDED_SIGNALS
               if signal.getsignal(sig) != before[sig]}
    for sig in GUARDED_SIGNALS:
        signal.signal(sig, before[sig])  # the next test starts clean either way
    assert not changed, f"the test left signal handlers changed: {changed}"
