"""In-process stand-ins for the broker and the stream worker, for unit tests of the gateway's
HTTP logic only (integration tests use a real broker, a real ``claimflow score`` worker and a
real ``bentoml serve``).

:class:`FakeStream` is the gateway's claim producer and, behind it, a stream worker: every
claim it "produces" gets a position, and (unless ``silent``) the decision a simple visible
rule makes (investigate above 10,000) is put on the gateway's reply board as the worker's
decision would be, with ``source = StreamSource(claims, 0, offset)``. ``reads_version``
makes it dead-letter claims of the other version as the worker does when the model refuses
them; ``available = False`` makes produce fail (503).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from gateway.app import create_app, runtime
from gateway.claim_producer import Position, PublishUnavailable, claim_key
from gateway.dispositions import LabelUnavailable
from gateway.replies import ReplyBoard
from gateway.runtime import GatewayRuntime
from gateway.settings import GatewaySettings
from schemas import (
    Claim,
    ClaimV2,
    DeadLetter,
    Decision,
    Label,
    ModelRef,
    Reason,
    ScoreRefusal,
    ScoreResult,
    StreamSource,
)

FAKE_MODEL = ModelRef(name="claim-anomaly", version="7", run_id="fake-run")
INVESTIGATE_ABOVE = 10_000.0


def fake_refusal(claim: Claim | ClaimV2, reads: int) -> ScoreRefusal:
    return ScoreRefusal(claim_id=claim.claim_id, error_kind="unsupported_version",
                        error=f"the served model scores claims of schema_version {reads}; "
                        f"this claim is schema_version {claim.schema_version}",
                        model=FAKE_MODEL)


def fake_result(claim: Claim | ClaimV2) -> ScoreResult:
    score = claim.claim_amount / (claim.claim_amount + INVESTIGATE_ABOVE)
    investigate = claim.claim_amount > INVESTIGATE_ABOVE
    reasons = [
        Reason(feature="claim_amount", value=claim.claim_amount, percentile=99.9,
               direction="high",
               message=f"claim_amount {claim.claim_amount:,.0f} is above the 99.9th percentile")
    ] if investigate else []
    return ScoreResult(claim_id=claim.claim_id, anomaly_score=score, threshold=0.5,
                       decision="investigate" if investigate else "approve", model=FAKE_MODEL,
                       reasons=reasons)


def stream_decision(claim: Claim | ClaimV2, position: Position) -> Decision:
    """What the stream worker publishes for ``claim`` read at ``position`` (fake model)."""
    return Decision.from_score(
        claim, fake_result(claim), decided_at=datetime.now(UTC),
        source=StreamSource(topic=position.topic, partition=position.partition,
                            offset=position.offset))


@dataclass
class Produced:
    key: bytes
    claim: Claim | ClaimV2
    position: Position


@dataclass
class FakeStream:
    board: ReplyBoard = field(default_factory=ReplyBoard)
    available: bool = True
    silent: bool = False  # produce, but the worker never answers (a stopped worker)
    reads_version: int | None = None  # like a real model: refuse claims of other versions
    topic: str = "claims"
    produced: list[Produced] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def produce(self, claims: Sequence[Claim | ClaimV2], timeout_s: float) -> list[Position]:
        if not self.available:
            raise PublishUnavailable("fake broker is down")
        positions = []
        for claim in claims:
            position = Position(self.topic, 0, len(self.produced))
            self.produced.append(Produced(claim_key(claim), claim, position))
            positions.append(position)
            if not self.silent:
                self.answer(claim, position)
        return positions

    def answer(self, claim: Claim | ClaimV2, position: Position) -> None:
        """The worker's answer for the claim at ``position`` onto the reply board."""
        if self.reads_version not in (None, claim.schema_version):
            refusal = fake_refusal(claim, self.reads_version)
            self.board.on_dead_letter(DeadLetter.for_message(
                value=claim.to_json(), key=claim_key(claim), error_kind="unsupported_version",
                error=refusal.error, failed_at=datetime.now(UTC),
                source=StreamSource(topic=position.topic, partition=position.partition,
                                    offset=position.offset)))
            return
        decision = stream_decision(claim, position)
        self.decisions.append(decision)
        self.board.on_decision(claim.claim_id, decision.to_json())

    def answer_all(self) -> None:
        """A worker that was stopped comes back and decides what was produced meanwhile."""
        decided = {d.source.offset for d in self.decisions
                   if isinstance(d.source, StreamSource)}
        for item in self.produced:
            if item.position.offset not in decided:
                self.answer(item.claim, item.position)

    def ready(self, timeout_s: float) -> bool:
        return self.available

    def close(self) -> None:
        pass

    def claim_ids(self) -> list[str]:
        return [item.claim.claim_id for item in self.produced]


@dataclass
class FakeLabelPublisher:
    available: bool = True
    published: list[Label] = field(default_factory=list)

    def publish(self, label: Label, timeout_s: float) -> None:
        if not self.available:
            raise LabelUnavailable("fake broker is down")
        self.published.append(label)

    def close(self) -> None:
        pass


def fake_settings(home: Path, **overrides: Any) -> GatewaySettings:
    return GatewaySettings(claimflow_home=home, view_enabled=False, **overrides)


def claim_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "claim_id": "C-000001", "claim_amount": 1234.5, "num_services": 3, "patient_age": 44,
        "provider_id": 7, "days_since_last_claim": 30, "submitted_at": "2026-01-02T03:04:05Z",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


# -- a whole gateway app in process (Flask test client, fake stream and label publisher)

PROBLEM = "application/problem+json"


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    return dict(body)


NOW = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
ODD = 25_000.0  # the fake model investigates above 10,000


@dataclass
class Gateway:
    client: FlaskClient
    labels: FakeLabelPublisher
    rt: GatewayRuntime

    def submit(self, claim_id: str, amount: float = ODD) -> Decision:
        response = self.client.post("/api/v1/claims",
                                    json=claim_body(claim_id=claim_id, claim_amount=amount))
        assert response.status_code == 201, response.get_data(as_text=True)
        return Decision.model_validate_json(response.get_data())

    def label(self, claim_id: str, body: Any, **kw: Any) -> Any:
        return self.client.post(f"/api/v1/claims/{claim_id}/disposition", json=body, **kw)


def make_gateway(home: Path, **settings: Any) -> Gateway:
    labels = FakeLabelPublisher()
    stream = FakeStream()
    app = create_app(fake_settings(home, **settings), producer=stream, board=stream.board,
                     labels=labels)
    rt = runtime(app)
    rt.clock = lambda: NOW
    return Gateway(app.test_client(), labels, rt)


class OffsetsOnly:
    """The consumer calls of one ``_handle``: offsets stored after the batch."""

    def __init__(self) -> None:
        self.stored: list[Any] = []

    def store_offsets(self, offsets: list[Any]) -> None:
        self.stored.extend(offsets)
