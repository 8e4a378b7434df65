"""Bounded blocking calls and backoff (scorer/calls.py)."""

from __future__ import annotations

import threading
import time

import pytest

from scorer.calls import Backoff, CallHungError, CallRunner


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(initial_s=0.1, max_s=0.5)
    delays = [backoff.next_delay() for _ in range(5)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert backoff.reset() == 5
    assert backoff.next_delay() == pytest.approx(0.1)


def test_call_runner_returns_results_and_raises_errors_of_the_call() -> None:
    calls = CallRunner("test-calls")
    assert calls.run(lambda: 42, timeout_s=10) == 42
    with pytest.raises(ZeroDivisionError):
        calls.run(lambda: 1 / 0, timeout_s=10)
    calls.close()


def test_call_runner_gives_up_on_a_call_that_does_not_return() -> None:
    # What librdkafka's send_offsets_to_transaction did after a broker restart: it ignored
    # its own timeout for minutes. The caller must get control back anyway.
    release, finished = threading.Event(), threading.Event()

    def hangs() -> str:
        release.wait(30)
        finished.set()
        return "late"

    calls = CallRunner("test-calls")
    started = time.monotonic()
    with pytest.raises(CallHungError, match="no answer within"):
        calls.run(hangs, timeout_s=0.2)
    assert time.monotonic() - started < 5
    calls.close()
    release.set()  # the given-up call ends on its own, its thread with it
    assert finished.wait(10)
