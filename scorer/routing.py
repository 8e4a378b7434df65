"""The stream worker's pure core: no Kafka, no HTTP, no clock.

``split_batch`` turns raw Kafka messages into validated claims (with where they came from)
and dead letters for everything that could not be read, plus the offsets to commit.
``route_decisions`` turns the model's verdicts into ``Decision`` messages for the outcome
topics. The I/O shell (:mod:`scorer.worker`) only moves bytes between these and Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from schemas import Claim, ContractError, DeadLetter, Decision, ScoreResult, StreamSource
from schemas.dead_letter import ErrorKind

TopicPartitionKey = tuple[str, int]
Headers = list[tuple[str, bytes | str | None]]


class RawMessage(Protocol):
    """What the core needs of a consumed message (``confluent_kafka.Message`` fits)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...


class RoutingError(RuntimeError):
    """The model's answer does not match the batch it was asked about (a bug, not bad input)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to produce inside the batch's transaction."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class OutcomeTopics:
    approved: str
    investigate: str
    deadletter: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that goes to the dead-letter topic, keyed by its original key."""

    letter: DeadLetter
    key: bytes | None

    def outgoing(self, topic: str) -> Outgoing:
        return Outgoing(topic=topic, key=self.key, value=self.letter.to_json())


@dataclass(slots=True)
class Batch:
    """A consumed batch, split into what can be scored and what goes to the dead letters."""

    claims: list[Claim] = field(default_factory=list)
    sources: list[StreamSource] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    # Next offset to consume per partition: what the transaction commits for the group.
    next_offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)
    # First offset per partition: where to rewind to when the batch cannot be finished.
    first_offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)
    consumed: int = 0


def position_of(source: StreamSource) -> str:
    """``topic[partition]@offset``, the way every log line names a message."""
    return f"{source.topic}[{source.partition}]@{source.offset}"


def classify_failure(error: ContractError) -> tuple[ErrorKind, str]:
    """Tell input that is not JSON at all from JSON that breaks the Claim contract."""
    if any(err["type"] == "json_invalid" for err in error.errors):
        return "not_json", f"not JSON: {error.errors[0]['msg']}"
    return "contract_violation", str(error)


def check_value(value: bytes | None, max_bytes: int) -> tuple[ErrorKind, str] | None:
    """Reasons to reject a message before decoding it (cheap checks first)."""
    if not value:
        return "empty", "empty message value (no claim)"
    if len(value) > max_bytes:
        return "too_large", f"message value of {len(value)} bytes exceeds {max_bytes} bytes"
    return None


def source_of(message: RawMessage) -> StreamSource:
    return StreamSource(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
    )


def reject(
    message: RawMessage, source: StreamSource, kind: ErrorKind, error: str, now: datetime
) -> Rejected:
    letter = DeadLetter.for_message(
        value=message.value(),
        key=message.key(),
        error_kind=kind,
        error=error,
        source=source,
        failed_at=now,
    )
    return Rejected(letter=letter, key=message.key())


def split_batch(messages: Iterable[RawMessage], *, max_bytes: int, now: datetime) -> Batch:
    """Decode and validate every message once; nothing is dropped: each message becomes
    either a claim to score or a dead letter, and moves its partition's offset on."""
    batch = Batch()
    next_offsets, first_offsets = batch.next_offsets, batch.first_offsets
    for message in messages:
        source = source_of(message)
        batch.consumed += 1
        tp = (source.topic, source.partition)
        if source.offset + 1 > next_offsets.get(tp, -1):
            next_offsets[tp] = source.offset + 1
        if source.offset < first_offsets.get(tp, source.offset + 1):
            first_offsets[tp] = source.offset
        value = message.value()
        failure = check_value(value, max_bytes)
        if failure is None:
            try:
                batch.claims.append(Claim.from_json(value))  # type: ignore[arg-type]
                batch.sources.append(source)
                continue
            except ContractError as exc:
                failure = classify_failure(exc)
        kind, error = failure
        batch.rejected.append(reject(message, source, kind, error, now))
    return batch


def check_results(claims: Sequence[Claim], results: Sequence[ScoreResult]) -> None:
    """The model service must answer once per claim, in order."""
    if len(results) != len(claims):
        raise RoutingError(f"model answered {len(results)} results for {len(claims)} claims")
    for claim, result in zip(claims, results, strict=True):
        if claim.claim_id != result.claim_id:
            raise RoutingError(
                f"model answered for claim_id={result.claim_id} "
                f"where claim_id={claim.claim_id} was asked"
            )


def build_decision(
    claim: Claim, result: ScoreResult, source: StreamSource, decided_at: datetime
) -> Decision:
    return Decision(
        claim=claim,
        decision=result.decision,
        anomaly_score=result.anomaly_score,
        threshold=result.threshold,
        model=result.model,
        reasons=result.reasons,
        decided_at=decided_at,
        source=source,
    )


def route_decisions(
    claims: Sequence[Claim],
    sources: Sequence[StreamSource],
    results: Sequence[ScoreResult],
    *,
    decided_at: datetime,
    topics: OutcomeTopics,
) -> list[Outgoing]:
    """One ``Decision`` per claim, keyed by claim_id, on the topic its verdict names."""
    check_results(claims, results)
    outgoing = []
    for claim, result, source in zip(claims, results, sources, strict=True):
        decision = build_decision(claim, result, source, decided_at)
        topic = topics.investigate if result.decision == "investigate" else topics.approved
        outgoing.append(
            Outgoing(topic=topic, key=claim.claim_id.encode(), value=decision.to_json())
        )
    return outgoing
