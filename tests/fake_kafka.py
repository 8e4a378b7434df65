"""In-memory stand-ins for the stream worker's collaborators, for tests of the scoring loop
without a broker (in the spirit of bytewax's TestingSource / TestingSink).

* :class:`FakeCluster`: the input partitions, the group's committed offsets and what
  committed transactions wrote (the read_committed view, changelog included); it also plays
  the loop's :class:`~scorer.kafka_config.ClusterCalls` (admin, changelog restore,
  committed offsets).
* :class:`FakeConsumer`: hands out the cluster's messages from per-partition positions,
  records seeks, and runs scripted rebalances inside ``consume`` as librdkafka does.
* :class:`FakeProducers`: the producer factory; each :class:`FakeProducer` keeps a
  transaction's messages and offsets apart until ``commit_transaction`` and fails a named
  step with a given :class:`KafkaError` when told to.
* :class:`FakeModelClient`: scores claims by amount; can be unavailable for a number of
  calls, answer nonsense, or refuse claims of a contract version it does not read.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import orjson
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from features.member import MemberFeatures
from schemas import Claim, ClaimV2, ModelRef, ScoreAnswer, ScoreRefusal, ScoreResult
from scorer.client import ModelClient, ModelServiceError, ModelUnavailable, ShadowAnswer
from scorer.kafka_config import ClusterCalls
from scorer.loop import ScoringLoop
from scorer.member_state import ChangelogRead
from scorer.shadow import ShadowColumns
from scorer.worker_metrics import WorkerMetrics
from scorer.worker_settings import ScorerSettings
from tests.fake_message import FakeMessage
from tests.v2_factory import v2_claim

INPUT = "claims"
GROUP = "claimflow-scorer"
CHANGELOG = f"{GROUP}.member-state"
NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: the group committed nothing yet
MODEL = ModelRef(name="claim-anomaly", version="7", run_id="run-7")

Key = tuple[str, int]


@dataclass(frozen=True)
class Record:
    """A message a committed transaction wrote."""

    topic: str
    partition: int | None
    key: bytes | None
    value: bytes


class FakeCluster:
    """Input partitions, committed offsets and committed output of one consumer group."""

    def __init__(self, partitions: int = 2, topic: str = INPUT, prefetch: bool = False
                 ) -> None:
        self.topic = topic
        # True: the loop gets read_changelog too, so it prefetches state before assignment.
        self.prefetch = prefetch
        self.reads: list[tuple[dict[int, int], str]] = []  # (start offsets, label)
        self.logs: dict[Key, list[FakeMessage]] = {(topic, p): [] for p in range(partitions)}
        self.topics: dict[str, int] = {topic: partitions}  # what the admin client sees
        self.committed: dict[Key, int] = {}
        self.records: list[Record] = []
        self.commits = 0
        self.aborts = 0
        self.restores: list[list[int]] = []

    # -- input

    def append(self, partition: int, value: bytes | None, key: bytes | None = None
               ) -> FakeMessage:
        log = self.logs[(self.topic, partition)]
        message = FakeMessage(value, _offset=len(log), _partition=partition, _key=key,
                              _topic=self.topic)
        log.append(message)
        return message

    def append_claim(self, partition: int, **overrides: Any) -> FakeMessage:
        """A valid v2 claim, keyed by its member_id as the producer keys them."""
        claim = v2_claim(**overrides)
        return self.append(partition, orjson.dumps(claim), claim["member_id"].encode())

    # -- the read_committed view

    def on(self, *topics: str) -> list[Record]:
        return [record for record in self.records if record.topic in topics]

    def decisions(self) -> dict[str, str]:
        """claim_id -> topic of every committed decision; fails on a claim decided twice."""
        decided: dict[str, str] = {}
        for record in self.on("claims.approved", "claims.investigate"):
            claim_id = orjson.loads(record.value)["claim"]["claim_id"]
            assert claim_id not in decided, f"{claim_id} decided twice"
            decided[claim_id] = record.topic
        return decided

    def commit(self, records: list[Record], offsets: Sequence[TopicPartition]) -> None:
        self.records.extend(records)
        for tp in offsets:
            self.committed[(tp.topic, tp.partition)] = tp.offset
        self.commits += 1

    # -- what the loop asks of the cluster (ClusterCalls)

    def calls(self) -> ClusterCalls:
        return ClusterCalls(make_admin=lambda: cast(Any, FakeAdmin(self)),
                            restore=self.restore, committed_offsets=self.committed_offsets,
                            read_changelog=self.read_changelog if self.prefetch else None)

    def read_changelog(self, changelog: str, start: dict[int, int], keep_tombstones: bool,
                       label: str) -> ChangelogRead:
        """A partition's offsets are its changelog records' order; OFFSET_BEGINNING is 0."""
        self.reads.append((dict(start), label))
        records: dict[int, dict[str, bytes | None]] = {p: {} for p in start}
        ends = dict.fromkeys(start, 0)
        for record in self.on(changelog):
            partition = record.partition
            if partition not in start or record.key is None:
                continue
            offset, ends[partition] = ends[partition], ends[partition] + 1
            if offset >= max(start[partition], 0):
                records[partition][record.key.decode()] = record.value
        return ChangelogRead(records, ends)

    def restore(self, changelog: str, partitions: Sequence[int]) -> dict[int, dict[str, bytes]]:
        self.restores.append(list(partitions))
        restored: dict[int, dict[str, bytes]] = {p: {} for p in partitions}
        for record in self.on(changelog):
            if record.partition in restored and record.key is not None:
                restored[record.partition][record.key.decode()] = record.value
        return restored

    def committed_offsets(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition,
                               self.committed.get((tp.topic, tp.partition), NO_OFFSET))
                for tp in partitions]


class FakeAdmin:
    """The two AdminClient calls of :func:`scorer.member_state.ensure_changelog`."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def list_topics(self, timeout: float = -1) -> SimpleNamespace:
        return SimpleNamespace(topics={
            name: SimpleNamespace(partitions=dict.fromkeys(range(count)), error=None)
            for name, count in self.cluster.topics.items()
        })

    def create_topics(self, new_topics: list[Any]) -> dict[str, Future[None]]:
        futures: dict[str, Future[None]] = {}
        for topic in new_topics:
            self.cluster.topics[topic.topic] = topic.num_partitions
            done: Future[None] = Future()
            done.set_result(None)
            futures[topic.topic] = done
        return futures


class FakeConsumer:
    """A subscribed consumer of one group member: on its first ``consume`` it is assigned
    every partition of the subscribed topics; :meth:`rebalance` scripts more."""

    def __init__(self, cluster: FakeCluster, on_idle: Callable[[], None] | None = None) -> None:
        self.cluster = cluster
        self.on_idle = on_idle  # called when consume finds nothing (a test stops the loop)
        self.positions: dict[Key, int] = {}
        self.seeks: list[tuple[str, int, int]] = []
        self.pending: deque[tuple[str, list[int]]] = deque()
        self.callbacks: dict[str, Callable[[Any, list[TopicPartition]], None]] = {}
        self.generation = 0
        self.closed = False

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None,
                  on_lost: Any = None) -> None:
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self.rebalance("assign", sorted(p for (t, p) in self.cluster.logs if t in topics))

    def rebalance(self, kind: str, partitions: list[int]) -> None:
        """``kind`` (assign, revoke, lost) happens during the next ``consume``."""
        self.pending.append((kind, partitions))

    def run_rebalances(self) -> None:
        while self.pending:
            kind, numbers = self.pending.popleft()
            partitions = [TopicPartition(self.cluster.topic, p) for p in numbers]
            self.generation += 1
            self.callbacks[kind](self, partitions)
            for p in numbers:
                key = (self.cluster.topic, p)
                if kind == "assign":
                    self.positions[key] = max(0, self.cluster.committed.get(key, 0))
                else:
                    self.positions.pop(key, None)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        self.run_rebalances()
        batch: list[FakeMessage] = []
        for key in sorted(self.positions):
            start = self.positions[key]
            taken = self.cluster.logs[key][start:start + num_messages - len(batch)]
            batch.extend(taken)
            self.positions[key] = start + len(taken)
        if not batch and self.on_idle is not None:
            self.on_idle()
        return batch

    def seek(self, tp: TopicPartition) -> None:
        key = (tp.topic, tp.partition)
        if key not in self.positions:
            raise KafkaException(KafkaError(KafkaError._STATE, f"{key} is not assigned"))
        self.seeks.append((tp.topic, tp.partition, tp.offset))
        self.positions[key] = 0 if tp.offset == OFFSET_BEGINNING else tp.offset

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for (t, p) in sorted(self.positions)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions[(tp.topic, tp.partition)])
                for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        return 0, len(self.cluster.logs[(tp.topic, tp.partition)])

    def consumer_group_metadata(self) -> str:
        return f"{GROUP} generation {self.generation}"

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """A transactional producer: what a transaction produced reaches the cluster only with
    ``commit_transaction``, together with the offsets sent to it."""

    def __init__(self, cluster: FakeCluster, failures: dict[str, deque[KafkaError]]) -> None:
        self.cluster = cluster
        self.failures = failures
        self.events: list[str] = []
        self.pending: list[Record] = []
        self.offsets: list[TopicPartition] = []
        self.group_metadata: object = None

    def fail(self, step: str) -> None:
        queued = self.failures.get(step)
        if queued:
            error = queued.popleft()
            self.events.append(f"{step} failed")
            raise KafkaException(error)

    def init_transactions(self, timeout: float = -1) -> None:
        self.fail("init_transactions")
        self.events.append("init_transactions")

    def begin_transaction(self) -> None:
        self.fail("begin_transaction")
        self.events.append("begin_transaction")

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                partition: int | None = None) -> None:
        self.fail("produce")
        assert value is not None
        self.pending.append(Record(topic, partition, key, value))

    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata: object,
                                    timeout: float = -1) -> None:
        self.fail("send_offsets_to_transaction")
        self.offsets, self.group_metadata = list(positions), group_metadata
        self.events.append("send_offsets_to_transaction")

    def commit_transaction(self, timeout: float = -1) -> None:
        self.fail("commit_transaction")
        self.cluster.commit(self.pending, self.offsets)
        self.pending, self.offsets = [], []
        self.events.append("commit_transaction")

    def abort_transaction(self, timeout: float = -1) -> None:
        self.fail("abort_transaction")
        self.pending, self.offsets = [], []
        self.cluster.aborts += 1
        self.events.append("abort_transaction")

    def poll(self, timeout: float = 0) -> int:
        self.fail("poll")
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True
              ) -> None:
        self.pending = []
        self.events.append("purge")


class FakeProducers:
    """The loop's producer factory: every producer it made, and failures they share."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.made: list[FakeProducer] = []
        self.failures: dict[str, deque[KafkaError]] = {}

    def __call__(self) -> Any:
        producer = FakeProducer(self.cluster, self.failures)
        self.made.append(producer)
        return producer

    def fail(self, step: str, error: KafkaError, times: int = 1) -> None:
        """The next ``times`` calls of ``step`` (by any producer) raise ``error``."""
        self.failures.setdefault(step, deque()).extend([error] * times)

    def events(self) -> list[str]:
        return [event for producer in self.made for event in producer.events]


def columns_of(answers: Sequence[ScoreAnswer], model: FakeModelClient) -> ShadowColumns:
    """Answers as the model service's shadow columns (None for a refusal)."""
    scored = [answer if isinstance(answer, ScoreResult) else None for answer in answers]
    return ShadowColumns(
        model=model.model, threshold=model.threshold / 10_000,
        claim_ids=[answer.claim_id for answer in answers],
        scores=[None if result is None else result.anomaly_score for result in scored],
        decisions=[None if result is None else result.decision for result in scored])


@dataclass
class FakeModelClient:
    """Scores a claim by its amount: above ``threshold`` it is investigated."""

    threshold: float = 1000.0
    unavailable: int = 0  # this many calls fail as if the service were down
    nonsense: bool = False  # answers that match no claim
    reads: int | None = None  # the contract version the model reads (None: every one)
    calls: list[tuple[list[Claim | ClaimV2], list[MemberFeatures] | None]] = field(
        default_factory=list)
    model: ModelRef = MODEL
    challenger: FakeModelClient | None = None  # scored in shadow when asked
    shadow_calls: int = 0

    def score_batch_shadow(self, claims: Sequence[Claim | ClaimV2],
                           members: Sequence[MemberFeatures] | None = None) -> ShadowAnswer:
        results = self.score_batch(claims, members)
        self.shadow_calls += 1
        if self.challenger is None:
            return ShadowAnswer(results, None)
        return ShadowAnswer(results, columns_of(self.challenger.score_batch(claims, members),
                                                self.challenger))

    def score_batch(self, claims: Sequence[Claim | ClaimV2],
                    members: Sequence[MemberFeatures] | None = None) -> list[ScoreAnswer]:
        self.calls.append((list(claims), None if members is None else list(members)))
        if self.unavailable:
            self.unavailable -= 1
            raise ModelUnavailable("connection refused (fake)")
        if self.nonsense:
            raise ModelServiceError("model service returned 1 results for 3 claims (fake)")
        return [self.answer(claim) for claim in claims]

    def answer(self, claim: Claim | ClaimV2) -> ScoreAnswer:
        if self.reads is not None and claim.schema_version != self.reads:
            return ScoreRefusal(claim_id=claim.claim_id, error_kind="unsupported_version",
                                error=f"model reads v{self.reads} claims, this one is "
                                      f"v{claim.schema_version}", model=self.model)
        amount = float(claim.claim_amount)
        return ScoreResult(claim_id=claim.claim_id, anomaly_score=min(1.0, amount / 10_000),
                           threshold=self.threshold / 10_000, model=self.model,
                           decision="investigate" if amount > self.threshold else "approve")

    def close(self) -> None:
        pass


def fast_settings(**overrides: Any) -> ScorerSettings:
    """Worker settings whose backoffs take milliseconds."""
    values: dict[str, Any] = {"kafka_bootstrap_servers": "fake:9092", "group_id": GROUP,
                              "retry_initial_s": 0.001, "retry_max_s": 0.002, **overrides}
    return ScorerSettings(**values)


@dataclass
class Harness:
    """A scoring loop wired to fakes; ``run`` processes until the input is drained."""

    cluster: FakeCluster = field(default_factory=FakeCluster)
    client: FakeModelClient = field(default_factory=FakeModelClient)
    settings: ScorerSettings = field(default_factory=fast_settings)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.consumer = FakeConsumer(self.cluster, on_idle=self.stop.set)
        self.producers = FakeProducers(self.cluster)
        self.metrics = WorkerMetrics()
        self.loop = ScoringLoop(self.settings, cast(Any, self.consumer), self.producers,
                                cast(ModelClient, self.client), self.metrics, self.stop,
                                cluster=self.cluster.calls())
        self.loop.subscribe()

    def run(self) -> None:
        """The loop until the consumer finds nothing more to hand out."""
        self.stop.clear()
        self.loop.run()

    def next_batch(self) -> None:
        """One consume and its processing, as one iteration of the loop does it."""
        self.loop.process(cast(Any, self.consumer.consume(self.settings.batch_max_size, 0)))

    def counter(self, name: str) -> float:
        value = self.metrics.registry.get_sample_value(f"claimflow_scorer_{name}")
        return 0.0 if value is None else value

    def member_state(self) -> dict[int, dict[str, Any]]:
        """The store's histories, decoded (so a restored store compares equal)."""
        store = self.loop.members
        return {p: {m: store.get(p, m) for m in members}
                for p, members in store.partitions.items()}


# -- scenarios the loop tests share

DAY = "2026-11-20"


def three_claims(cluster: FakeCluster) -> None:
    """M1 twice on partition 0 (the second one expensive), M2 once on partition 1."""
    cluster.append_claim(0, claim_id="C-1", member_id="M1", service_date=DAY)
    cluster.append_claim(0, claim_id="C-2", member_id="M1", service_date="2026-11-21",
                         lines=[{"procedure_code": "99215", "units": 1, "charge": 4800.0}])
    cluster.append_claim(1, claim_id="C-3", member_id="M2", service_date=DAY)


def abortable(code: int = KafkaError.ILLEGAL_GENERATION) -> KafkaError:
    return KafkaError(code, "the group rebalanced (fake)", txn_requires_abort=True)
