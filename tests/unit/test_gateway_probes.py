"""Probes and the consumers' resilience: /readyz and /metrics are cached (they are open and
a check costs a broker request), the view's and the reply consumer restart after a failure
and readiness says when either is stale."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app, runtime
from gateway.outcome_consumer import OutcomeConsumer
from gateway.outcome_store import OutcomeStore
from gateway.readiness import ReadinessProbe
from gateway.replies import ReplyBoard, ReplyConsumer
from schemas import Claim, Decision, ModelRef, StreamSource
from tests.fake_message import FakeMessage
from tests.unit.gateway_fakes import FakeStream, claim_body, fake_settings

TOPIC = "claims.approved"


@dataclass
class CountingStream(FakeStream):
    ready_calls: int = 0

    def ready(self, timeout_s: float) -> bool:
        self.ready_calls += 1
        return self.available


def test_readyz_checks_the_broker_once_per_cache_period(tmp_path: Path) -> None:
    """Each hit used to cost a Kafka metadata request (and a model-service call, when the
    gateway still called the model service)."""
    stream = CountingStream()
    app = create_app(fake_settings(tmp_path, ready_cache_s=300), producer=stream,
                     board=stream.board)
    client = app.test_client()
    for _ in range(20):
        assert client.get("/readyz").status_code == 200
    assert stream.ready_calls == 1
    runtime(app).close()


def test_readyz_answers_from_a_fresh_check_after_the_cache_period() -> None:
    stream = CountingStream()
    now = [0.0]
    probe = ReadinessProbe(stream, {}, cache_s=2.0, monotonic=lambda: now[0])
    assert probe.check().ready
    stream.available = False
    now[0] = 1.0
    assert probe.check().ready  # cached
    now[0] = 2.5
    result = probe.check()
    assert not result.ready
    assert result.checks == {"broker": False}


@dataclass
class StubView:
    is_fresh: bool

    def fresh(self) -> bool:
        return self.is_fresh


def test_readiness_says_when_the_outcome_view_is_stale_without_waiting_for_the_cache() -> None:
    view, replies = StubView(True), StubView(True)
    probe = ReadinessProbe(FakeStream(), {"replies": replies, "outcome_view": view},
                           cache_s=300)
    assert probe.check().checks == {"broker": True, "replies": True, "outcome_view": True}
    view.is_fresh = False
    result = probe.check()
    assert not result.ready
    assert result.checks["outcome_view"] is False
    view.is_fresh, replies.is_fresh = True, False
    assert probe.check().checks["replies"] is False


# -- the outcome view's consumer -------------------------------------------------------------


@dataclass
class FakeConsumer:
    """Hands out the topic's messages from the position the store resumes at."""

    log: list[FakeMessage]
    sessions: list[FakeConsumer]
    position: int = 0
    closed: bool = False
    stored: list[Any] = field(default_factory=list)

    def subscribe(self, topics: list[str], on_assign: Callable[..., None]) -> None:
        self.sessions.append(self)

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        batch = self.log[self.position:self.position + num_messages]
        self.position += len(batch)
        return batch

    def store_offsets(self, offsets: list[Any]) -> None:
        self.stored.extend(offsets)

    def close(self) -> None:
        self.closed = True


def decision_json(claim_id: str) -> bytes:
    claim = Claim.from_json(json.dumps(claim_body(claim_id=claim_id)).encode())
    return Decision(claim=claim, decision="approve", anomaly_score=0.1, threshold=0.5,
                    model=ModelRef(name="claim-anomaly", version="1"), reasons=[],
                    decided_at=datetime(2026, 1, 1, tzinfo=UTC),
                    source=StreamSource(topic="claims", partition=0, offset=0)).to_json()


def test_the_view_consumer_restarts_after_a_failure_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed session is followed by a new one that resumes where the store left off."""
    store = OutcomeStore(tmp_path / "o.db")
    real_add, failures = store.add, [1]

    def add_failing_once(*args: Any) -> int:
        if failures:
            failures.pop()
            raise RuntimeError("disk I/O error")
        return real_add(*args)

    monkeypatch.setattr(store, "add", add_failing_once)
    log = [FakeMessage(decision_json(f"V-{i}"), _offset=i, _topic=TOPIC) for i in range(3)]
    sessions: list[FakeConsumer] = []
    all_stored = threading.Event()
    view = OutcomeConsumer(store, "unused:9092", [TOPIC], "g", backoff_s=(0.01, 0.05),
                           stale_after_s=300,
                           on_stored=lambda *_: all_stored.set(),
                           consumer_factory=lambda _config: FakeConsumer(  # type: ignore[arg-type,return-value]
                               log, sessions))
    view.start()
    try:
        assert all_stored.wait(20), "the view never stored anything after the failure"
        assert [store.get(f"V-{i}") is not None for i in range(3)] == [True] * 3
        assert view.restarts == 1
        assert sessions[0].closed
    finally:
        view.stop()
    assert not view.fresh()
    store.close()


@dataclass
class FakeReplyConsumer:
    """Fails its first ``assign``; afterwards hands out one decision keyed by claim_id."""

    failures: list[int]
    sent: bool = False
    closed: bool = False

    def list_topics(self, timeout: float) -> Any:
        class Meta:
            topics = {TOPIC: type("T", (), {"error": None, "partitions": {0: None}})()}
        return Meta()

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return (0, 0)

    def assign(self, partitions: list[Any]) -> None:
        if self.failures:
            self.failures.pop()
            raise RuntimeError("broker went away")

    def poll(self, timeout: float) -> Any:
        if self.sent:
            return None
        self.sent = True
        return FakeMessage(decision_json("R-1"), _key=b"R-1", _topic=TOPIC)

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        return []

    def close(self) -> None:
        self.closed = True


def test_the_reply_consumer_restarts_after_a_failure_and_answers(tmp_path: Path) -> None:
    board = ReplyBoard()
    watch = board.watch(["R-1"])["R-1"]
    failures = [1]
    replies = ReplyConsumer(board, "unused:9092", [TOPIC], "claims.deadletter",
                            backoff_s=(0.01, 0.05), stale_after_s=300,
                            consumer_factory=lambda _config: FakeReplyConsumer(  # type: ignore[arg-type,return-value]
                                failures))
    replies.start()
    try:
        assert watch.wake.wait(20), "no answer after the restart"
        assert watch.decision == decision_json("R-1")
        assert replies.restarts == 1
        assert replies.fresh()
    finally:
        replies.stop()
    assert not replies.fresh()
