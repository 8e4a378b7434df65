"""The stream worker's shell, the parts that need no broker: settings, client configs,
backoff and log formats."""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from typing import Any

import pytest

from scorer.calls import Backoff, CallHungError, CallRunner
from scorer.kafka_config import consumer_config, producer_config
from scorer.loop import describe_batch
from scorer.routing import split_batch
from scorer.supervisor import install_stop_handlers, supervise
from scorer.worker_settings import ScorerSettings
from tests.unit.test_routing import NOW, FakeMessage, claim_bytes


def test_settings_read_the_scorer_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORER_INPUT_TOPIC", "claims-x")
    monkeypatch.setenv("SCORER_BATCH_MAX_SIZE", "64")
    monkeypatch.setenv("SCORER_TRANSACTIONAL_ID_PREFIX", "cf")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:1")
    settings = ScorerSettings()
    assert settings.input_topic == "claims-x"
    assert settings.batch_max_size == 64
    assert settings.kafka_bootstrap_servers == "broker:1"
    assert settings.transactional_id(3) == "cf-3"
    assert settings.group_id == "claimflow-scorer"
    assert settings.outcome_topic("deadletter") == "claims.deadletter"


def test_settings_reject_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORER_BATCH_MAX_SIZE", "0")
    with pytest.raises(ValueError, match="batch_max_size"):
        ScorerSettings()


def test_consumer_reads_committed_and_never_commits_on_its_own() -> None:
    config = consumer_config(ScorerSettings(group_id="g"), 0)
    assert config["isolation.level"] == "read_committed"
    assert config["enable.auto.commit"] is False
    assert config["group.id"] == "g"
    assert config["auto.offset.reset"] == "earliest"


def test_each_instance_has_its_own_stable_transactional_id() -> None:
    settings = ScorerSettings(transactional_id_prefix="cf-host")
    ids = [producer_config(settings, i)["transactional.id"] for i in range(3)]
    assert ids == ["cf-host-0", "cf-host-1", "cf-host-2"]
    assert producer_config(settings, 1)["transactional.id"] == "cf-host-1"


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(initial_s=0.1, max_s=0.5)
    delays = [backoff.next_delay() for _ in range(5)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert backoff.reset() == 5
    assert backoff.next_delay() == pytest.approx(0.1)


def test_batches_are_described_by_their_offset_ranges() -> None:
    batch = split_batch(
        [
            FakeMessage(claim_bytes(), _offset=10, _partition=0),
            FakeMessage(b"bad", _offset=12, _partition=0),
            FakeMessage(claim_bytes(), _offset=3, _partition=2),
        ],
        max_bytes=4096,
        now=NOW,
    )
    assert describe_batch(batch) == "claims[0]@10..12, claims[2]@3..3"


def test_dead_letters_of_the_largest_allowed_claims_fit_the_broker_default() -> None:
    with pytest.raises(ValueError, match="max_claim_bytes"):
        ScorerSettings(max_claim_bytes=2_000_000)
    largest = ScorerSettings(max_claim_bytes=512_000).max_claim_bytes
    assert largest * 4 / 3 + 2_000 < 1_000_000


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
