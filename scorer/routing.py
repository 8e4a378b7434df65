"""The stream worker's pure core: no Kafka, no HTTP, no clock.

``split_batch`` turns raw Kafka messages into validated claims (with where they came from)
and dead letters for everything that could not be read, plus the offsets to commit.
``route_decisions`` turns the model's verdicts into ``Decision`` messages for the outcome
topics. The I/O shell (:mod:`scorer.loop`) only moves bytes between these and Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, NamedTuple, Protocol

from pydantic import TypeAdapter
from pydantic_core import to_json

from schemas import (
    SCHEMA_VERSION,
    Claim,
    ClaimV2,
    ContractError,
    DeadLetter,
    Decision,
    ModelRef,
    Reason,
    ScoreAnswer,
    ScoreRefusal,
    ScoreResult,
    StreamSource,
    parse_claim,
)
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


class Position(NamedTuple):
    """Where a message was read: a plain tuple, cheap enough to keep one per claim."""

    topic: str
    partition: int
    offset: int

    def source(self) -> StreamSource:
        return StreamSource(topic=self.topic, partition=self.partition, offset=self.offset)

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class RoutingError(RuntimeError):
    """The model's answer does not match the batch it was asked about (a bug, not bad input)."""


class Outgoing(NamedTuple):
    """One message to produce inside the batch's transaction (a tuple: one per claim, and
    a frozen dataclass costs twice as much to build)."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int = -1  # -1: the producer's partitioner chooses (by key)


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

    claims: list[Claim | ClaimV2] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    # The message each claim was read from: a refused claim is dead-lettered with its
    # original bytes and key (a v2 claim's key is its member_id, not its claim_id).
    messages: list[RawMessage] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    # Next offset to consume per partition: what the transaction commits for the group.
    next_offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)
    # First offset per partition: where to rewind to when the batch cannot be finished.
    first_offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)
    consumed: int = 0


def position_of(source: StreamSource | Position) -> str:
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
        return "too_large", (
            f"message value of {len(value)} bytes exceeds {max_bytes} bytes "
            f"(the dead letter keeps the first {max_bytes} bytes)"
        )
    return None


def position_of_message(message: RawMessage) -> Position:
    return Position(message.topic() or "", message.partition() or 0, message.offset() or 0)


def reject(
    message: RawMessage,
    position: Position,
    kind: ErrorKind,
    error: str,
    now: datetime,
    max_bytes: int,
) -> Rejected:
    value = message.value()
    if kind == "too_large" and value is not None:
        # Base64 makes a dead letter a third larger than what it keeps: keeping all of a huge
        # message could exceed the broker's message size, fail every transaction that
        # carries it and block the partition for good.
        value = value[:max_bytes]
    letter = DeadLetter.for_message(
        value=value,
        key=message.key(),
        error_kind=kind,
        error=error,
        source=position.source(),
        failed_at=now,
    )
    return Rejected(letter=letter, key=message.key())


def split_batch(messages: Iterable[RawMessage], *, max_bytes: int, now: datetime) -> Batch:
    """Decode and validate every message once; nothing is dropped: each message becomes
    either a claim to score or a dead letter, and moves its partition's offset on."""
    batch = Batch()
    next_offsets, first_offsets = batch.next_offsets, batch.first_offsets
    for message in messages:
        position = position_of_message(message)
        topic, partition, offset = position
        batch.consumed += 1
        tp = (topic, partition)
        if offset + 1 > next_offsets.get(tp, -1):
            next_offsets[tp] = offset + 1
        if offset < first_offsets.get(tp, offset + 1):
            first_offsets[tp] = offset
        value = message.value()
        failure = check_value(value, max_bytes)
        if failure is None:
            try:
                batch.claims.append(parse_claim(value))  # type: ignore[arg-type]
                batch.positions.append(position)
                batch.messages.append(message)
                continue
            except ContractError as exc:
                failure = classify_failure(exc)
        kind, error = failure
        batch.rejected.append(reject(message, position, kind, error, now, max_bytes))
    return batch


def check_results(
    claims: Sequence[Claim | ClaimV2], results: Sequence[ScoreResult | ScoreRefusal]
) -> None:
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
    claim: Claim | ClaimV2, result: ScoreResult, position: Position, decided_at: datetime
) -> Decision:
    """The Decision as the contract builds it (the reference :func:`DecisionEncoder` must
    match byte for byte)."""
    return Decision.from_score(claim, result, decided_at=decided_at, source=position.source())


_REASONS: Final = TypeAdapter(list[Reason])
_MODEL_REF: Final = TypeAdapter(ModelRef)
# The fields DecisionEncoder writes, in Decision's order; a unit test fails when the
# contract gains, loses or reorders a field, so the fast path cannot drift from it.
ENCODED_DECISION_FIELDS: Final = (
    "schema_version", "claim", "decision", "anomaly_score", "threshold", "model", "reasons",
    "decided_at", "source",
)


class DecisionEncoder:
    """Writes ``build_decision(...).to_json()`` without building and re-validating a
    Decision per claim (the hot path: a few instead of ~10 microseconds). Every value comes
    from an already validated Claim or ScoreResult and is written by pydantic's own
    serializers; what a batch shares (time, model, topic) is serialized once."""

    def __init__(self, decided_at: datetime) -> None:
        self.decided_at_json = to_json(decided_at)
        self._models: dict[tuple[str, str, str | None], bytes] = {}
        self._topics: dict[str, bytes] = {}

    def model_json(self, model: ModelRef) -> bytes:
        key = (model.name, model.version, model.run_id)
        cached = self._models.get(key)
        if cached is None:
            cached = self._models[key] = _MODEL_REF.dump_json(model)
        return cached

    def topic_json(self, topic: str) -> bytes:
        cached = self._topics.get(topic)
        if cached is None:
            cached = self._topics[topic] = to_json(topic)
        return cached

    def encode(self, claim: Claim | ClaimV2, result: ScoreResult, position: Position) -> bytes:
        reasons = _REASONS.dump_json(result.reasons) if result.reasons else b"[]"
        return b"".join((
            b'{"schema_version":', b"%d" % SCHEMA_VERSION,
            b',"claim":', claim.to_json(),
            b',"decision":"', result.decision.encode(),
            b'","anomaly_score":', to_json(result.anomaly_score),
            b',"threshold":', to_json(result.threshold),
            b',"model":', self.model_json(result.model),
            b',"reasons":', reasons,
            b',"decided_at":', self.decided_at_json,
            b',"source":{"kind":"stream","topic":', self.topic_json(position.topic),
            b',"partition":', b"%d" % position.partition,
            b',"offset":', b"%d" % position.offset,
            b"}}",
        ))


def route_decisions(
    claims: Sequence[Claim | ClaimV2],
    positions: Sequence[Position],
    results: Sequence[ScoreResult],
    *,
    decided_at: datetime,
    topics: OutcomeTopics,
) -> list[Outgoing]:
    """One ``Decision`` per claim, keyed by claim_id, on the topic its verdict names."""
    check_results(claims, results)
    encode = DecisionEncoder(decided_at).encode
    approved, investigate = topics.approved, topics.investigate
    return [
        Outgoing(
            topic=investigate if result.decision == "investigate" else approved,
            key=claim.claim_id.encode(),
            value=encode(claim, result, position),
        )
        for claim, result, position in zip(claims, results, positions, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class Routed:
    """A scored batch: decisions for the outcome topics, and the claims the model refused."""

    outgoing: list[Outgoing]
    refused: list[Rejected]


def route_batch(
    batch: Batch,
    answers: Sequence[ScoreAnswer],
    *,
    decided_at: datetime,
    topics: OutcomeTopics,
    max_bytes: int,
) -> Routed:
    """Decisions for the scored claims; a dead letter (``unsupported_version``) for each
    claim the served model refused because it reads another contract version."""
    check_results(batch.claims, answers)
    if not any(isinstance(answer, ScoreRefusal) for answer in answers):  # the usual batch
        results: Sequence[ScoreResult] = answers  # type: ignore[assignment]
        outgoing = route_decisions(
            batch.claims, batch.positions, results, decided_at=decided_at, topics=topics
        )
        return Routed(outgoing, [])
    scored: list[tuple[Claim | ClaimV2, ScoreResult, Position]] = []
    refused: list[Rejected] = []
    for claim, answer, position, message in zip(
        batch.claims, answers, batch.positions, batch.messages, strict=True
    ):
        if isinstance(answer, ScoreRefusal):
            refused.append(reject(message, position, answer.error_kind,
                                  f"{answer.error} (model {answer.model.name} "
                                  f"v{answer.model.version})", decided_at, max_bytes))
        else:
            scored.append((claim, answer, position))
    outgoing = route_decisions(
        [c for c, _, _ in scored], [p for _, _, p in scored], [r for _, r, _ in scored],
        decided_at=decided_at, topics=topics,
    )
    return Routed(outgoing, refused)
