"""Blocking client calls with bounds, and what their Kafka errors mean.

librdkafka calls block; some ignore their own timeout (measured after a broker restart:
``send_offsets_to_transaction(timeout=5)`` did not return for minutes). :class:`CallRunner`
runs each call on a helper thread that the caller waits for no longer than a bound; a
transactional step is bounded by ``TXN_STEP_DEADLINE_S`` overall. :class:`Backoff` paces
retries; :func:`kafka_error`, :func:`fatal_cause` and :func:`fencing_hint` turn a
``KafkaException`` into the error the worker classifies (:mod:`scorer.recovery`) and reports.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer

from scorer.recovery import FENCED_CODES, TxnAction

T = TypeVar("T")

# Each blocking Kafka call returns within this (a stop signal is noticed between calls; a
# commit whose transaction failed meanwhile still waits this long to flush before it says so).
KAFKA_CALL_TIMEOUT_S = 5.0
# A transactional step (send offsets, commit, abort) that has not succeeded within this is
# given up and the producer replaced. Measured after a broker restart: a producer left with a
# sequence gap answered "timed out" for minutes, and send_offsets_to_transaction(timeout=5)
# did not return at all for minutes; hence each call also runs on a helper thread that is
# waited for no longer than the step's deadline (see CallRunner).
TXN_STEP_DEADLINE_S = 30.0


class TxnStepError(Exception):
    """A transactional step failed; ``action`` says how the worker recovers."""

    def __init__(self, step: str, error: KafkaError, action: TxnAction) -> None:
        super().__init__(f"{step}: {error}")
        self.step = step
        self.error = error
        self.action = action


class CallHungError(Exception):
    """A blocking client call did not return within the time it was given."""


class CallRunner:
    """Runs blocking client calls one at a time on a daemon helper thread; the caller waits
    at most a bound. A librdkafka call that ignores its own timeout then cannot hang the
    worker: the caller gives the call (and the producer it belongs to) up, and the thread
    ends whenever the call returns. Being a daemon, it never holds up the process's exit."""

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event] | None]
        self.jobs = queue.SimpleQueue()
        threading.Thread(target=self.serve, name=name, daemon=True).start()

    def serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            call, outcome, done = job
            try:
                outcome.append((True, call()))
            except BaseException as exc:  # handed to the caller, raised there
                outcome.append((False, exc))
            done.set()
            del job, call, outcome, done  # no reference to a given-up producer lingers

    def run(self, call: Callable[[], T], timeout_s: float) -> T:
        outcome: list[tuple[bool, Any]] = []
        done = threading.Event()
        self.jobs.put((call, outcome, done))
        if not done.wait(timeout_s):
            raise CallHungError(f"no answer within {timeout_s:.0f} s")
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def close(self) -> None:
        """The thread ends after the call it may still be stuck in."""
        self.jobs.put(None)


@dataclass
class Backoff:
    """Exponential backoff, capped; reset after a success."""

    initial_s: float
    max_s: float
    failures: int = 0

    def next_delay(self) -> float:
        delay = min(self.max_s, self.initial_s * 2.0**self.failures)
        self.failures += 1
        return delay

    def reset(self) -> int:
        failures, self.failures = self.failures, 0
        return failures


def kafka_error(exc: KafkaException) -> KafkaError:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return error
    return KafkaError(KafkaError._FAIL, str(exc))


def fatal_cause(producer: Producer, error: KafkaError) -> KafkaError:
    """The cause behind a bare _FATAL ("Local: Fatal error", what produce() raises once the
    producer is in a fatal state, with the fatal flag unset): confluent-kafka raises the
    cause (e.g. _FENCED) from the next poll(), which serves librdkafka's fatal error event."""
    if error.code() != KafkaError._FATAL:
        return error
    try:
        producer.poll(0)
    except KafkaException as exc:
        return kafka_error(exc)
    return error


def fencing_hint(error: KafkaError) -> str:
    if error.code() not in FENCED_CODES:
        return ""
    return (
        " - a newer worker with this transactional.id took over (is another `claimflow score` "
        "running with the same --first-instance and SCORER_TRANSACTIONAL_ID_PREFIX?)"
    )
