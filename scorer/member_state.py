"""The stream's member stage: per-member history, exactly once, restored from Kafka.

Claims of one member share a partition (v2 claims are keyed by ``member_id``), so a worker
keeps the history of the members of the partitions it owns, in memory, and writes every change
to a compacted changelog topic (``claims.member-state``, one partition per claims partition)
INSIDE the batch's transaction, beside the decisions and the consumed offsets. A kill -9,
a rebalance or a broker restart therefore never separates state from offsets: a worker that is
given a partition reads that partition's changelog to its end (read_committed: only
committed batches) and continues from the committed offset with exactly the state that
offset implies. Nothing is kept on local disk; a new host restores from Kafka.

* :class:`MemberStore`: the owned partitions' histories. Restored records stay bytes until a
  member's claim needs them, so a restore costs one read of the changelog, not a decode of
  every member.
* :func:`member_step`: the pure batch step: each v2 claim's features from the history before
  it (claims of one member in the same batch see each other in offset order) and the new
  histories, kept apart until the transaction commits. A claim whose claim_id the member's
  history holds already is set aside (:func:`features.member.repeat_of`): not scored, not
  remembered again, and it becomes a dead letter (``duplicate_claim_id`` for the same claim
  sent again, ``claim_id_conflict`` for another claim under a used id), so every claim read
  still ends in exactly one outcome or one dead letter. Because the claim ids live in the
  member's changelog record, this holds across restarts and rebalances like the history.
* :func:`restore_partitions`: reads changelog partitions to their end;
  :class:`StatePrefetch` and :func:`catch_up` read them before the first assignment and
  then only what was written since.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from claimflow.settings import BACKLOG_READER_CONFIG
from features.member import (
    MemberFeatures,
    MemberHistory,
    Repeat,
    decode_history,
    encode_history,
    step_histories,
)
from schemas import ClaimV2
from scorer.routing import Batch, Outgoing, Position, reject

logger = logging.getLogger(__name__)

MemberKey = tuple[int, str]  # (claims partition, member_id)
RESTORE_BATCH: Final = 10_000
RESTORE_CONSUMER_CONFIG: Final = {
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
    "enable.partition.eof": True,
    "auto.offset.reset": "earliest",
    **BACKLOG_READER_CONFIG,  # most of a restore's time went to fetch back-offs without it
}
CHANGELOG_CONFIG: Final = {
    "cleanup.policy": "compact",
    # Small segments and an eager cleaner keep the changelog near one record per member,
    # which is what a restore reads.
    "segment.bytes": str(64 * 1024 * 1024),
    "min.cleanable.dirty.ratio": "0.2",
}


class StateError(RuntimeError):
    """The changelog cannot be used (wrong partition count, unreadable)."""


class MissingTopicError(StateError):
    """The claims topic does not exist (yet)."""


@dataclass
class MemberStore:
    """Member histories of the owned partitions (decoded on first use)."""

    partitions: dict[int, dict[str, MemberHistory | bytes]] = field(default_factory=dict)

    def get(self, partition: int, member: str) -> MemberHistory:
        members = self.partitions.setdefault(partition, {})
        held = members.get(member)
        if held is None:
            return MemberHistory()
        if isinstance(held, bytes):
            held = members[member] = decode_history(held)
        return held

    def apply(self, updates: dict[MemberKey, MemberHistory]) -> None:
        """Make a committed batch's histories current."""
        for (partition, member), history in updates.items():
            self.partitions.setdefault(partition, {})[member] = history

    def load(self, partition: int, records: dict[str, bytes]) -> None:
        self.partitions[partition] = dict(records)

    def drop(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)

    def members(self, partition: int) -> int:
        return len(self.partitions.get(partition, {}))


@dataclass(frozen=True)
class MemberStep:
    """A batch's member features (one per claim, in order), its new histories and the
    claims set aside as repeats of a claim_id (by index in the batch)."""

    features: list[MemberFeatures]
    updates: dict[MemberKey, MemberHistory]
    repeats: dict[int, Repeat] = field(default_factory=dict)

    def any_history(self) -> bool:
        return bool(self.updates)

    def changelog(self, topic: str) -> list[Outgoing]:
        """One record per changed member (its latest state), on the changelog partition of
        its claims partition."""
        return [Outgoing(topic=topic, key=member.encode(), value=encode_history(history),
                         partition=partition)
                for (partition, member), history in self.updates.items()]


def member_step(store: MemberStore, claims: Sequence[Any], positions: Sequence[Position]
                ) -> MemberStep:
    """Features of every v2 claim from its member's history before it
    (:func:`features.member.step_histories`, which score-file runs too); pure apart from
    decoding the store's lazily kept bytes. The store itself is not changed."""
    keys = [(position.partition, claim.member_id) if isinstance(claim, ClaimV2) else None
            for claim, position in zip(claims, positions, strict=True)]
    step = step_histories(claims, keys, lambda key: store.get(*key))
    return MemberStep(step.features, step.updates, step.repeats)


def set_aside_repeats(batch: Batch, step: MemberStep, *, now: datetime, max_bytes: int
                      ) -> tuple[Batch, list[MemberFeatures]]:
    """The batch without its repeated claim_ids (each one a dead letter in ``rejected``), and
    the member features of the claims left, in order."""
    if not step.repeats:
        return batch, step.features
    kept = Batch(rejected=list(batch.rejected), next_offsets=batch.next_offsets,
                 first_offsets=batch.first_offsets, consumed=batch.consumed)
    features: list[MemberFeatures] = []
    for index, (claim, position, message) in enumerate(
            zip(batch.claims, batch.positions, batch.messages, strict=True)):
        repeat = step.repeats.get(index)
        if repeat is not None:
            kept.rejected.append(reject(message, position, repeat.kind, repeat.reason, now,
                                        max_bytes))
            continue
        kept.claims.append(claim)
        kept.positions.append(position)
        kept.messages.append(message)
        features.append(step.features[index])
    return kept, features


# --------------------------------------------------------------------------- Kafka side


def ensure_changelog(admin: AdminClient, claims_topic: str, changelog: str,
                     timeout_s: float = 30.0) -> int:
    """Create the changelog with the claims topic's partition count, or check it has it.
    Returns the partition count."""
    metadata = admin.list_topics(timeout=timeout_s)
    claims = metadata.topics.get(claims_topic)
    if claims is None or claims.error is not None:
        raise MissingTopicError(f"claims topic {claims_topic!r} does not exist yet")
    wanted = len(claims.partitions)
    existing = metadata.topics.get(changelog)
    if existing is None or existing.error is not None:
        futures = admin.create_topics([NewTopic(changelog, num_partitions=wanted,
                                                replication_factor=-1,
                                                config=CHANGELOG_CONFIG)])
        try:
            futures[changelog].result(timeout_s)
            logger.info("created changelog %s (%d partitions, compacted)", changelog, wanted)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StateError(f"cannot create changelog {changelog}: {exc}") from exc
        return wanted
    if len(existing.partitions) != wanted:
        raise StateError(
            f"changelog {changelog} has {len(existing.partitions)} partitions, claims topic "
            f"{claims_topic} has {wanted}: state partitions must match the claims partitions "
            "(delete the changelog only together with the consumer group's offsets)"
        )
    return wanted


def restore_partitions(config: dict[str, Any], changelog: str, partitions: Sequence[int],
                       timeout_s: float = 300.0) -> dict[int, dict[str, bytes]]:
    """Each changelog partition's latest record per member, read to its end.

    read_committed: a batch whose transaction never committed left no state. The end is
    the last stable offset (librdkafka reports partition EOF there in this mode).
    """
    read = read_changelog(config, changelog, dict.fromkeys(partitions, OFFSET_BEGINNING),
                          timeout_s=timeout_s, label="restored")
    return read.records  # type: ignore[return-value]  # no tombstones kept: bytes only


@dataclass(frozen=True)
class ChangelogRead:
    """What a read of changelog partitions found: each partition's latest record per member
    and the offset each partition's read ended at (the next one to read). With
    ``keep_tombstones`` a member deleted in the range read is there as None."""

    records: dict[int, dict[str, bytes | None]]
    next_offsets: dict[int, int]


def read_changelog(config: dict[str, Any], changelog: str, start: dict[int, int],
                   keep_tombstones: bool = False, timeout_s: float = 300.0,
                   label: str = "read") -> ChangelogRead:
    """Changelog partitions from ``start`` (partition -> offset, or ``OFFSET_BEGINNING``)
    to their end (the last stable offset: read_committed, so a batch whose transaction
    never committed left no state). ``label`` starts the log line."""
    if not start:
        return ChangelogRead({}, {})
    started = time.monotonic()
    consumer = Consumer({**config, **RESTORE_CONSUMER_CONFIG})
    records: dict[int, dict[str, bytes | None]] = {p: {} for p in start}
    next_offsets = {p: max(offset, 0) for p, offset in start.items()}
    try:
        consumer.assign([TopicPartition(changelog, p, offset) for p, offset in start.items()])
        pending = set(start)
        while pending:
            if time.monotonic() - started > timeout_s:
                raise StateError(f"restoring {changelog} partitions {sorted(pending)} took "
                                 f"over {timeout_s:.0f} s")
            for message in consumer.consume(RESTORE_BATCH, 1.0):
                partition = message.partition() or 0
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(partition)
                        end = message.offset()
                        if end is not None and end >= 0:
                            next_offsets[partition] = end
                        continue
                    if error.fatal():
                        raise StateError(f"restoring {changelog}: {error}")
                    logger.warning("restoring %s: %s", changelog, error)
                    continue
                next_offsets[partition] = (message.offset() or 0) + 1
                key, value = message.key(), message.value()
                if key is None:
                    continue
                members = records[partition]
                if value is not None:
                    members[key.decode()] = value
                elif keep_tombstones:  # a tombstone: the member's state was deleted
                    members[key.decode()] = None
                else:
                    members.pop(key.decode(), None)
    finally:
        consumer.close()
    logger.info("%s %s partitions %s: %d members in %.2f s", label, changelog,
                ",".join(map(str, start)), sum(map(len, records.values())),
                time.monotonic() - started)
    return ChangelogRead(records, next_offsets)


class StatePrefetch:
    """Every changelog partition read in a thread of its own before the first assignment.

    A dynamic group member waits seconds for its first assignment: a replacement for a
    killed worker waits until the dead member's session expires. The read of the changelog,
    most of a restore, fits in that wait. On the assignment :meth:`take` hands over what was
    read, and the worker reads only what was written to its partitions since
    (:func:`catch_up`), so its state is the same as a full restore at that moment.
    """

    def __init__(self, read: Callable[[dict[int, int]], ChangelogRead], partitions: int
                 ) -> None:
        self._read = read
        self._partitions = partitions
        self._result: ChangelogRead | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="member-state-prefetch",
                                        daemon=True)

    def start(self) -> StatePrefetch:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._result = self._read(dict.fromkeys(range(self._partitions), OFFSET_BEGINNING))
        except Exception as exc:  # reported by take(); the worker restores
            self._error = exc

    def take(self) -> ChangelogRead | None:
        """What was read (waiting for the read to end); None when it failed (logged): the
        caller restores the partitions the usual way."""
        self._thread.join()
        if self._error is not None:
            logger.warning("member state prefetch failed (%s); restoring on assignment",
                           self._error)
            return None
        return self._result


def catch_up(prefetched: ChangelogRead, partitions: Sequence[int],
             read_since: Callable[[dict[int, int]], ChangelogRead]
             ) -> dict[int, dict[str, bytes]]:
    """The assigned partitions' state: what the prefetch read, updated by what was written
    to them since (``read_since`` reads from the prefetch's end, tombstones kept). The
    prefetched records of other partitions are left behind."""
    since = read_since({p: prefetched.next_offsets[p] for p in partitions})
    restored: dict[int, dict[str, bytes]] = {}
    for partition in partitions:
        members = prefetched.records[partition]
        for key, value in since.records.get(partition, {}).items():
            if value is None:
                members.pop(key, None)
            else:
                members[key] = value
        restored[partition] = members  # type: ignore[assignment]  # the prefetch keeps no tombstones
    return restored
