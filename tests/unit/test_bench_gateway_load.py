"""The gateway benchmark's load generator counts every request it does not get a 201 for."""

from __future__ import annotations

import http.client

import pytest

from bench.gateway import Connection, Tally, load_failures, send


class ScriptedConnection(Connection):
    """Answers from a script: a status, or an exception to raise."""

    def __init__(self, outcomes: list[int | Exception]) -> None:
        super().__init__(port=0)
        self.outcomes = outcomes

    def post(self, path: str, body: bytes) -> int:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_a_request_that_raises_is_an_error_and_the_load_thread_goes_on() -> None:
    conn = ScriptedConnection([201, TimeoutError(), ConnectionResetError(),
                               http.client.BadStatusLine("x"), 503, 201])
    tally = Tally()
    for _ in range(6):
        send(conn, tally, b"{}", due=0.0)
    assert tally.ok == 2
    assert tally.errors == 4
    assert tally.failures == {"timeout": 1, "ConnectionResetError": 1, "BadStatusLine": 1}
    assert len(tally.latencies) == 2  # only 201s are timed, the rest is counted


def test_load_failures_count_unanswered_requests_and_lost_threads() -> None:
    tally = Tally()
    tally.add(201, 0.001, 0.001)
    tally.add(201, 0.001, 0.001)
    tally.fail("timeout")
    failures = load_failures(requests=5, tally=tally, threads_alive=1)
    assert failures["errors"] == 1
    assert failures["timeouts"] == 1
    assert failures["unanswered"] == 2  # a dead thread's requests are not silence
    assert failures["load_threads_lost"] == 1
    assert failures["error_rate"] == pytest.approx(3 / 5)


def test_a_clean_load_has_no_failures() -> None:
    tally = Tally()
    tally.add(201, 0.001, 0.001)
    failures = load_failures(requests=1, tally=tally, threads_alive=0)
    assert (failures["errors"], failures["unanswered"], failures["error_rate"]) == (0, 0, 0.0)
