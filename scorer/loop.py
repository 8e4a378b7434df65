"""The scoring loop of ``claimflow score``: consume -> member step -> score -> produce ->
commit, one Kafka transaction per batch.

One loop iteration is one batch and one Kafka transaction:

1. ``consume`` up to ``batch_max_size`` messages: what is already there, or, when nothing
   is, what arrives within ``batch_max_wait_ms``;
2. split them into claims and dead letters (:func:`scorer.routing.split_batch`);
3. the member step (:func:`scorer.member_state.member_step`): each v2 claim's member
   features from its member's history, and the batch's new histories, kept apart from the
   store; a claim_id the member's history holds already is set aside as a dead letter
   (decided once);
4. one model-service call for all claims of the batch, with their member features;
5. produce decisions, dead letters, shadow records (one ``ShadowScore`` per decided claim
   when the model service scores a challenger in shadow: :mod:`scorer.shadow`) and the
   changed members' changelog records, add the batch's offsets to the transaction, commit;
   only then the store takes the new histories.

On assignment a partition's member state is restored from the changelog; on revocation
(or loss) it is dropped.

:class:`ScoringLoop` is handed its collaborators: the consumer, a producer factory, the
model client and the cluster calls (:class:`scorer.kafka_config.ClusterCalls`). The
process wires the real ones (:func:`scorer.worker.run_worker`); tests/fake_kafka.py has
in-memory fakes.

Invariant that makes rebalances safe: ``consume`` (where librdkafka runs the rebalance
callbacks) is only called with no transaction open and no message held, so a revoked
partition never has uncommitted work in this process.

Failures (Kafka errors are classified by :func:`scorer.recovery.classify_txn_error`):
- model service unavailable: nothing is produced; the consumer is rewound to the batch's
  first offsets and the batch is retried after an exponential backoff (capped);
- broker or coordinator away: the transactional call is retried, each call bounded by
  ``KAFKA_CALL_TIMEOUT_S`` and the step by ``TXN_STEP_DEADLINE_S``;
- abortable transaction error: abort, rewind to the committed offsets, carry on;
- the producer's epoch or sequence numbers are off (messages that timed out while the
  broker was away, a transaction the coordinator expired meanwhile), an abort that fails, a
  step past its deadline: the producer is replaced by a new one with the same
  transactional.id (its ``init_transactions`` bumps the epoch and aborts whatever the old
  one left open), then the consumer is rewound to the committed offsets;
- fenced by a newer worker with the same transactional.id, a configuration or permission
  error, the producer replaced ``MAX_RECREATES_WITHOUT_COMMIT`` times in a row, or an answer
  the model service should never give: :class:`FatalWorkerError`, exit code 1.

Decisions become visible only through committed transactions, and after every failure the
consumer goes back to the offsets committed with them: nothing is lost or doubled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from features.member import MemberFeatures
from schemas import ScoreAnswer, ScoreRefusal
from scorer.calls import (
    KAFKA_CALL_TIMEOUT_S,
    TXN_STEP_DEADLINE_S,
    Backoff,
    CallHungError,
    CallRunner,
    TxnStepError,
    fatal_cause,
    fencing_hint,
    kafka_error,
)
from scorer.client import ModelClient, ModelServiceError, ModelUnavailable, ShadowAnswer
from scorer.kafka_config import ClusterCalls, outcome_topics
from scorer.member_state import (
    MemberStore,
    MissingTopicError,
    StatePrefetch,
    catch_up,
    ensure_changelog,
    member_step,
    set_aside_repeats,
)
from scorer.recovery import TxnAction, classify_txn_error, is_unreachable
from scorer.routing import (
    Batch,
    Outgoing,
    Rejected,
    RoutingError,
    position_of,
    route_batch,
    split_batch,
)
from scorer.shadow import ShadowMismatchError, shadow_records
from scorer.worker_metrics import WorkerMetrics
from scorer.worker_settings import ScorerSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Replacing the producer again and again without one commit in between is no longer a
# broker coming back but something a restart of this process will not fix either.
MAX_RECREATES_WITHOUT_COMMIT = 5


class FatalWorkerError(RuntimeError):
    """The worker cannot go on; nothing of the batch in flight was committed."""


def describe_partitions(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "none"


def describe_batch(batch: Batch) -> str:
    """``claims[0]@10..19, claims[3]@7..7``: the offsets a batch spans."""
    return ", ".join(
        f"{topic}[{partition}]@{first}..{batch.next_offsets[(topic, partition)] - 1}"
        for (topic, partition), first in sorted(batch.first_offsets.items())
    )


# --------------------------------------------------------------------------- the loop


class ScoringLoop:
    """Consume -> member step -> score -> produce -> commit, one transaction per batch."""

    def __init__(
        self,
        settings: ScorerSettings,
        consumer: Consumer,
        make_producer: Callable[[], Producer],
        client: ModelClient,
        metrics: WorkerMetrics,
        stop: threading.Event,
        parent_pid: int | None = None,
        *,
        cluster: ClusterCalls,
        after_batch: Callable[[], object] | None = None,
    ) -> None:
        self.settings = settings
        # Run after each consumed batch (the process's garbage collection policy,
        # scorer.collector; nothing in tests).
        self.after_batch = after_batch
        self.consumer = consumer
        self.make_producer = make_producer
        self.client = client
        self.cluster = cluster
        self.metrics = metrics
        self.stop = stop
        self.parent_pid = parent_pid
        self.topics = outcome_topics(settings)
        self.backoff = Backoff(settings.retry_initial_s, settings.retry_max_s)
        self.next_housekeeping = 0.0
        self.txn_timeout_s = settings.transaction_timeout_ms / 1000
        # When the transaction in flight began (None: none is open); tells an expired
        # transaction from a newer worker when the producer is fenced.
        self.txn_began: float | None = None
        self.recreates_without_commit = 0
        self.recreate_pause = Backoff(settings.retry_initial_s, settings.retry_max_s)
        self.producer, self.calls = self.new_producer()
        self.members = MemberStore()
        self.changelog = settings.changelog_topic
        self.prefetch: StatePrefetch | None = None

    def subscribe(self) -> None:
        partitions = self.ensure_changelog()
        read = self.cluster.read_changelog
        if (self.settings.state_prefetch and not self.settings.static_membership
                and read is not None):
            # Read the state while the group decides the assignment (on_assign takes it).
            changelog = self.changelog
            self.prefetch = StatePrefetch(
                lambda start: read(changelog, start, False, "prefetched"), partitions).start()
        self.consumer.subscribe(
            [self.settings.input_topic],
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            on_lost=self.on_lost,
        )

    def run(self) -> None:
        max_size, max_wait_s = self.settings.batch_max_size, self.settings.batch_max_wait_ms / 1000
        while not self.stop.is_set():
            # Whatever arrived while the last batch was processed forms the next one at once
            # (under load that is a full batch); only an idle worker waits for a batch to fill.
            messages = self.consumer.consume(max_size, 0) or self.consumer.consume(
                max_size, max_wait_s
            )
            usable = self.usable(messages)
            if usable:
                self.process(usable)
                if self.after_batch is not None:
                    self.after_batch()
            self.housekeeping()

    # -- rebalances: nothing is in flight when librdkafka calls these (see module docstring)

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("assigned %s", describe_partitions(partitions))
        # The partitions' member state, as of their committed offsets, before any claim.
        numbers = [tp.partition for tp in partitions]
        prefetch, self.prefetch = self.prefetch, None  # the first assignment only
        started = time.monotonic()
        prefetched = prefetch.take() if prefetch is not None else None
        read = self.cluster.read_changelog
        if (prefetched is None or read is None
                or not set(numbers) <= prefetched.next_offsets.keys()):
            restored = self.cluster.restore(self.changelog, numbers)
        else:
            changelog = self.changelog
            restored = catch_up(prefetched, numbers,
                                lambda start: read(changelog, start, True, "caught up"))
            logger.info("restored %s partitions %s: %d members in %.2f s after the assignment "
                        "(read before it, then caught up)", self.changelog,
                        ",".join(map(str, numbers)), sum(map(len, restored.values())),
                        time.monotonic() - started)
        for partition, records in restored.items():
            self.members.load(partition, records)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("revoked %s", describe_partitions(partitions))
        self.forget_lag(partitions)
        self.members.drop(tp.partition for tp in partitions)

    def ensure_changelog(self) -> int:
        """The member-state changelog exists with the claims topic's partition count (the
        count is returned); waits (with backoff) while the claims topic itself does not
        exist yet."""
        admin = self.cluster.make_admin()
        pause = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            try:
                return ensure_changelog(admin, self.settings.input_topic, self.changelog)
            except (MissingTopicError, KafkaException) as exc:
                if self.stop.is_set():
                    raise FatalWorkerError(f"stopped before the changelog was ready: {exc}"
                                           ) from exc
                delay = pause.next_delay()
                logger.warning("member state: %s; retrying in %.1fs", exc, delay)
                self.stop.wait(delay)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.warning(
            "lost %s: the group moved on without this worker; its next commit is fenced",
            describe_partitions(partitions),
        )
        self.forget_lag(partitions)
        self.members.drop(tp.partition for tp in partitions)

    # -- one batch

    def usable(self, messages: list[Message]) -> list[Message]:
        if all(message.error() is None for message in messages):
            return messages
        usable = []
        for message in messages:
            error = message.error()
            if error is None:
                usable.append(message)
            elif error.fatal():
                raise FatalWorkerError(f"consumer: {error}")
            else:
                logger.warning("consumer: %s", error)
        return usable

    def process(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        now, max_bytes = datetime.now(UTC), self.settings.max_claim_bytes
        batch = split_batch(messages, max_bytes=max_bytes, now=now)
        step = member_step(self.members, batch.claims, batch.positions)
        batch, features = set_aside_repeats(batch, step, now=now, max_bytes=max_bytes)
        answer = self.score(batch, features if step.any_history() else None)
        if answer is None:
            return
        results = answer.results
        decided_at = datetime.now(UTC)
        try:
            routed = route_batch(
                batch,
                results,
                decided_at=decided_at,
                topics=self.topics,
                max_bytes=self.settings.max_claim_bytes,
            )
        except RoutingError as exc:
            raise FatalWorkerError(f"batch {describe_batch(batch)}: {exc}") from exc
        rejected = [*batch.rejected, *routed.refused]
        outgoing = routed.outgoing
        decided = len(outgoing)
        outgoing.extend(letter.outgoing(self.topics.deadletter) for letter in rejected)
        shadows, missing = self.shadow_outgoing(batch, answer, decided_at, decided)
        outgoing.extend(shadows)
        outgoing.extend(step.changelog(self.changelog))
        if self.commit(outgoing, batch):
            self.members.apply(step.updates)
            self.metrics.committed(batch, results, len(rejected), started)
            self.metrics.shadow_committed(len(shadows), missing)
            self.log_rejected(rejected)
            self.log_committed(batch, results)

    def shadow_outgoing(self, batch: Batch, answer: ShadowAnswer, decided_at: datetime,
                        decided: int) -> tuple[list[Outgoing], dict[str, int]]:
        """The batch's ShadowScore records, and the decided claims left without one by
        reason (counted once the batch commits). The challenger never holds routing back:
        when its answers are missing or do not fit, the champion decides alone."""
        if not self.settings.shadow or not decided:
            return [], {}
        if answer.unreadable is not None:
            logger.warning("batch %s: no shadow records: the challenger's answer is "
                           "unreadable (%s)", describe_batch(batch), answer.unreadable)
            return [], {"mismatch": decided}
        if answer.shadow is None:
            return [], {"no_challenger": decided}
        try:
            records = shadow_records(batch.claims, batch.positions, answer.results,
                                     answer.shadow, decided_at=decided_at,
                                     topic=self.settings.shadow_topic)
        except ShadowMismatchError as exc:
            logger.warning("batch %s: no shadow records: %s", describe_batch(batch), exc)
            return [], {"mismatch": decided}
        refused = {"challenger_refused": records.refused} if records.refused else {}
        return records.outgoing, refused

    def score(self, batch: Batch, members: list[MemberFeatures] | None
              ) -> ShadowAnswer | None:
        """The model's verdicts (and the challenger's, when shadow answers are asked for),
        or None when the batch was rewound to be retried."""
        if not batch.claims:
            return ShadowAnswer([], None)
        started = time.perf_counter()
        try:
            if self.settings.shadow:
                results = self.client.score_batch_shadow(batch.claims, members)
            else:
                results = ShadowAnswer(self.client.score_batch(batch.claims, members), None)
        except ModelUnavailable as exc:
            self.hold(batch, exc)
            return None
        except ModelServiceError as exc:
            raise FatalWorkerError(f"model service: {exc}") from exc
        self.metrics.model_latency.observe(time.perf_counter() - started)
        failures = self.backoff.reset()
        if failures:
            logger.info("model service is back after %d failed attempts; resuming", failures)
        return results

    def hold(self, batch: Batch, exc: ModelUnavailable) -> None:
        """Nothing was produced: rewind to the batch's start and retry after a backoff."""
        delay = self.backoff.next_delay()
        self.metrics.model_failures.inc()
        logger.warning(
            "model service unavailable (%s); batch %s (%d claims) not committed, retry %d in %.2fs",
            exc,
            describe_batch(batch),
            len(batch.claims),
            self.backoff.failures,
            delay,
        )
        self.seek(batch.first_offsets)
        # Wakes up at once on SIGTERM/SIGINT: the batch is already rewound, nothing is lost.
        self.stop.wait(delay)

    # -- the transaction

    def commit(self, outgoing: list[Outgoing], batch: Batch) -> bool:
        """Produce and commit the batch atomically; False when it was not committed and the
        consumer was rewound to the committed offsets."""
        try:
            self.transact(outgoing, batch)
        except TxnStepError as failure:
            step, error, action = failure.step, failure.error, failure.action
        except KafkaException as exc:  # begin_transaction or produce, outside any step
            error = self.fatal_cause(kafka_error(exc))
            step, action = "transaction", self.classify(error)
        else:
            self.txn_began = None
            if self.recreates_without_commit:
                self.recreates_without_commit = 0
                self.recreate_pause.reset()
            return True
        # Recovery runs outside the except blocks: no traceback keeps the old producer alive.
        if action is TxnAction.FATAL:
            raise FatalWorkerError(f"{step}: {error}{fencing_hint(error)}")
        logger.warning(
            "transaction for batch %s not committed (%s: %s): %s, then rewinding to the "
            "committed offsets",
            describe_batch(batch),
            step,
            error,
            "aborting" if action is TxnAction.ABORT else "replacing the producer",
        )
        self.metrics.aborted.inc()
        if action is TxnAction.ABORT and not self.abort():
            action = TxnAction.RECREATE
        if action is not TxnAction.ABORT:
            self.recreate_producer(f"{step}: {error}")
        self.rewind_to_committed()
        return False

    def transact(self, outgoing: list[Outgoing], batch: Batch) -> None:
        producer = self.producer
        self.txn_began = time.monotonic()
        producer.begin_transaction()
        self.produce_all(outgoing)
        offsets = [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in batch.next_offsets.items()
        ]
        group = self.consumer.consumer_group_metadata()
        self.step(
            "send_offsets_to_transaction",
            lambda: producer.send_offsets_to_transaction(offsets, group, KAFKA_CALL_TIMEOUT_S),
        )
        self.step("commit_transaction", lambda: producer.commit_transaction(KAFKA_CALL_TIMEOUT_S))
        producer.poll(0)

    def produce_all(self, outgoing: list[Outgoing]) -> None:
        produce = self.producer.produce
        for message in outgoing:
            try:
                produce(message.topic, message.value, message.key, message.partition)
            except BufferError:
                # The local queue is full: let deliveries drain, then retry this one.
                self.producer.poll(0.1)
                produce(message.topic, message.value, message.key, message.partition)

    def classify(self, error: KafkaError) -> TxnAction:
        age = None if self.txn_began is None else time.monotonic() - self.txn_began
        return classify_txn_error(error, txn_age_s=age, txn_timeout_s=self.txn_timeout_s)

    def fatal_cause(self, error: KafkaError) -> KafkaError:
        return fatal_cause(self.producer, error)

    def step(self, what: str, call: Callable[[], T], deadline_s: float = TXN_STEP_DEADLINE_S
             ) -> T:
        """One transactional call, repeated while the broker is away or busy, at most until
        ``deadline_s``; any other failure (or the deadline) raises :class:`TxnStepError`."""
        deadline = time.monotonic() + deadline_s
        pause = Backoff(0.1, 2.0)
        while True:
            try:
                return self.calls.run(call, max(1.0, deadline - time.monotonic()))
            except CallHungError as hung:
                raise TxnStepError(
                    f"{what} ({hung})", KafkaError(KafkaError._TIMED_OUT, str(hung)),
                    TxnAction.RECREATE,
                ) from None
            except KafkaException as exc:
                error = self.fatal_cause(kafka_error(exc))
                action = self.classify(error)
                if action is not TxnAction.RETRY:
                    raise TxnStepError(what, error, action) from exc
                if self.stop.is_set():
                    raise FatalWorkerError(
                        f"{what} failed while shutting down ({error}); the broker aborts the "
                        "open transaction after transaction.timeout.ms"
                    ) from exc
                if time.monotonic() >= deadline:
                    raise TxnStepError(
                        f"{what} (no success within {deadline_s:.0f} s)", error,
                        TxnAction.RECREATE,
                    ) from exc
                logger.warning("%s: %s; retrying", what, error)
                self.stop.wait(pause.next_delay())

    def abort(self) -> bool:
        """Abort the transaction in flight; False when the producer must be replaced."""
        producer = self.producer
        try:
            self.step("abort_transaction", lambda: producer.abort_transaction(KAFKA_CALL_TIMEOUT_S))
        except TxnStepError as failure:
            if failure.action is TxnAction.FATAL:
                raise FatalWorkerError(
                    f"{failure}{fencing_hint(failure.error)}"
                ) from failure
            logger.warning("abort failed (%s)", failure)
            return False
        self.txn_began = None
        return True

    # -- the producer's life cycle

    def new_producer(self) -> tuple[Producer, CallRunner]:
        """A producer with this worker's transactional.id, its transactions initialized (and
        the helper thread its blocking calls run on): fences any earlier producer with that
        id (an earlier process, or this one's previous producer) and aborts the transaction
        it left open, so nothing waits for the transaction timeout. Waits for the broker as
        long as it takes (or until a stop signal)."""
        pause = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            producer, calls = self.make_producer(), CallRunner("kafka-producer-calls")
            try:
                self.init_transactions(producer, calls, pause)
            except CallHungError as hung:
                logger.warning("init_transactions: %s; starting over with a new producer", hung)
                calls.close()
                continue
            return producer, calls

    def init_transactions(self, producer: Producer, calls: CallRunner, pause: Backoff) -> None:
        while True:
            try:
                calls.run(lambda: producer.init_transactions(KAFKA_CALL_TIMEOUT_S),
                          TXN_STEP_DEADLINE_S)
                return
            except KafkaException as exc:
                error = kafka_error(exc)
                if not is_unreachable(error):
                    raise FatalWorkerError(
                        f"init_transactions: {error}{fencing_hint(error)}"
                    ) from exc
                if self.stop.is_set():
                    raise FatalWorkerError(
                        f"stopped while waiting for the transaction coordinator ({error})"
                    ) from exc
                delay = pause.next_delay()
                logger.warning("init_transactions: %s; retrying in %.1fs", error, delay)
                self.stop.wait(delay)

    def recreate_producer(self, reason: str) -> None:
        """Replace the producer by a new one with the same transactional.id."""
        self.recreates_without_commit += 1
        if self.recreates_without_commit > MAX_RECREATES_WITHOUT_COMMIT:
            raise FatalWorkerError(
                f"producer replaced {MAX_RECREATES_WITHOUT_COMMIT} times without a commit; "
                f"last failure: {reason}"
            )
        if self.recreates_without_commit > 1:
            # Failing again right after a replacement: do not hammer the broker.
            self.stop.wait(self.recreate_pause.next_delay())
        logger.warning(
            "replacing the producer (%s); attempt %d", reason, self.recreates_without_commit
        )
        old, started = self.producer, time.monotonic()
        with contextlib.suppress(KafkaException, RuntimeError):
            # Whatever it still holds belongs to a transaction that is never committed.
            old.purge(in_queue=True, in_flight=True, blocking=False)
            old.poll(0)
        self.calls.close()
        # Dropping the last reference destroys the old handle (rd_kafka_destroy), unless a
        # call that hung still holds it: then it goes when that call returns (fenced).
        del old, self.producer, self.calls
        self.producer, self.calls = self.new_producer()
        self.txn_began = None
        logger.info(
            "new producer ready after %.1f s (epoch bumped, the old transaction aborted)",
            time.monotonic() - started,
        )

    def rewind_to_committed(self) -> None:
        """Go back to the offsets the group committed: the batch in flight is read again."""
        pause = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            assignment = self.consumer.assignment()
            try:
                committed = self.cluster.committed_offsets(assignment)
                break
            except KafkaException as exc:
                error = kafka_error(exc)
                if not is_unreachable(error):
                    raise FatalWorkerError(f"cannot read the committed offsets: {error}") from exc
                if self.stop.is_set():
                    raise FatalWorkerError(
                        f"stopped while reading the committed offsets ({error}); nothing of "
                        "the batch in flight was committed"
                    ) from exc
                delay = pause.next_delay()
                logger.warning("committed offsets: %s; retrying in %.1fs", error, delay)
                self.stop.wait(delay)
        self.seek({(tp.topic, tp.partition): tp.offset for tp in committed})

    def seek(self, offsets: dict[tuple[str, int], int]) -> None:
        for (topic, partition), offset in offsets.items():
            # No committed offset yet: start over, as auto.offset.reset=earliest would.
            target = offset if offset >= 0 else OFFSET_BEGINNING
            try:
                self.consumer.seek(TopicPartition(topic, partition, target))
            except KafkaException as exc:
                raise FatalWorkerError(
                    f"cannot rewind {topic}[{partition}] to {target}: {kafka_error(exc)}"
                ) from exc

    # -- logs and lag

    def log_rejected(self, letters: Sequence[Rejected]) -> None:
        for rejected in letters:
            letter = rejected.letter
            logger.warning(
                "%s key=%r -> %s: %s: %s",
                position_of(letter.source),
                rejected.key,
                self.topics.deadletter,
                letter.error_kind,
                letter.error,
            )

    def log_committed(self, batch: Batch, results: Sequence[ScoreAnswer]) -> None:
        if not logger.isEnabledFor(logging.DEBUG):
            return
        logger.debug("committed batch %s: %d messages", describe_batch(batch), batch.consumed)
        for position, result in zip(batch.positions, results, strict=True):
            if isinstance(result, ScoreRefusal):
                continue  # logged as a dead letter
            logger.debug(
                "%s claim_id=%s -> %s (score %.4f)",
                position,
                result.claim_id,
                result.decision,
                result.anomaly_score,
            )

    def housekeeping(self) -> None:
        now = time.monotonic()
        if now < self.next_housekeeping:
            return
        self.next_housekeeping = now + self.settings.lag_interval_s
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            logger.warning("parent process %d is gone; stopping", self.parent_pid)
            self.stop.set()
        self.update_lag()

    def update_lag(self) -> None:
        try:
            positions = self.consumer.position(self.consumer.assignment())
            for tp in positions:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(high - tp.offset)
        except KafkaException as exc:
            logger.debug("lag not updated: %s", kafka_error(exc))

    def forget_lag(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(tp.topic, str(tp.partition))
