"""What every fault drill shares: the result record, the exactly-once check (pure), and the
Kafka readers that count outcomes in the read_committed view.

The drills judge the system from the outside, the way a downstream team would: they read
the outcome topics with a read_committed consumer and the scorer group's committed offsets
through the admin API; they never look inside a component.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.stack_harness import ModelService, Stack
from claimflow.settings import BACKLOG_READER_CONFIG
from schemas import ContractError, DeadLetter, Decision

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- results


@dataclass
class DrillResult:
    """One drill's verdict with the counts behind it."""

    number: int
    name: str
    passed: bool
    summary: str
    counts: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        failed = [name for name, ok in self.checks.items() if not ok]
        why = f" (failed: {', '.join(failed)})" if failed and not self.passed else ""
        err = f" error: {self.error}" if self.error else ""
        return f"drill {self.number} {self.name}: {verdict}{why} - {self.summary}{err}"


def verdict(checks: dict[str, bool]) -> bool:
    """A drill passes only when it checked something and every check held."""
    return bool(checks) and all(checks.values())


# --------------------------------------------------------------------------- exactly once


@dataclass(frozen=True)
class ExactlyOnceReport:
    expected: int
    decided: int  # decision messages read
    unique: int  # distinct claim_ids among them
    duplicates: dict[str, int]  # claim_id -> times decided, when > 1
    missing: list[str]
    unexpected: list[str]

    @property
    def ok(self) -> bool:
        return (self.decided == self.expected == self.unique and not self.duplicates
                and not self.missing and not self.unexpected)

    def tally(self) -> str:
        """``N decisions (U unique)``, as the drills' summaries say it."""
        return f"{self.decided} decisions ({self.unique} unique)"

    def full_tally(self) -> str:
        """``N decisions, U unique, D duplicated, M missing``."""
        return (f"{self.decided} decisions, {self.unique} unique, "
                f"{len(self.duplicates)} duplicated, {len(self.missing)} missing")

    def counts(self, sample: int = 10) -> dict[str, Any]:
        return {
            "expected": self.expected, "decided": self.decided, "unique": self.unique,
            "duplicates": len(self.duplicates), "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "duplicate_sample": dict(sorted(self.duplicates.items())[:sample]),
            "missing_sample": sorted(self.missing)[:sample],
            "unexpected_sample": sorted(self.unexpected)[:sample],
        }


def check_exactly_once(expected_ids: Iterable[str], decided_ids: Iterable[str]
                       ) -> ExactlyOnceReport:
    """Each expected claim decided exactly once, and nothing else decided."""
    expected = set(expected_ids)
    seen = Counter(decided_ids)
    return ExactlyOnceReport(
        expected=len(expected),
        decided=sum(seen.values()),
        unique=len(seen),
        duplicates={cid: n for cid, n in seen.items() if n > 1},
        missing=sorted(expected - seen.keys()),
        unexpected=sorted(seen.keys() - expected),
    )


# --------------------------------------------------------------------------- waiting


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.2,
               what: str = "condition") -> float:
    """Poll until ``predicate()`` holds; returns the seconds it took. TimeoutError otherwise."""
    start = time.monotonic()
    deadline = start + timeout_s
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f} s")
        time.sleep(interval_s)


# --------------------------------------------------------------------------- Kafka readers


@dataclass
class Outcomes:
    """Everything read from the outcome topics (read_committed)."""

    decisions: list[Decision] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # outputs that break their own contract
    key_mismatches: int = 0

    def decided_ids(self) -> list[str]:
        return [d.claim_id for d in self.decisions]


def reader(bootstrap: str, *, read_committed: bool = True) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap,
        # Partitions are assigned by hand: no group join, no committed offsets.
        "group.id": f"drill-reader-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "fetch.max.bytes": 64 * 1024 * 1024,
        **BACKLOG_READER_CONFIG,
    })


def partitions_of(bootstrap: str, topic: str, timeout_s: float = 15.0) -> list[int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(topic, timeout=timeout_s).topics[topic]
    if meta.error is not None:
        raise KafkaException(meta.error)
    return sorted(meta.partitions)


def end_offsets(bootstrap: str, topic: str, timeout_s: float = 15.0) -> dict[int, int]:
    consumer = reader(bootstrap)
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                  timeout=timeout_s)[1]
                for p in partitions_of(bootstrap, topic)}
    finally:
        consumer.close()


def read_to_end(bootstrap: str, topics: Sequence[str], *, timeout_s: float = 120.0,
                read_committed: bool = True) -> list[Message]:
    """Every message of ``topics`` from the beginning up to the end offsets read at the start.

    read_committed positions skip aborted records and transaction markers, so the read is
    complete when every partition's position reached its end offset. An open transaction
    (a killed producer's, before the broker aborts it) holds the position back: that is
    waited for, up to ``timeout_s``, then a TimeoutError says which partitions were stuck.
    """
    consumer = reader(bootstrap, read_committed=read_committed)
    # The end offsets come from a read_uncommitted reader: a read_committed one answers with
    # the last stable offset, which stops short of an open transaction (measured: drill 4
    # once "missed" 2,053 decisions the survivor had committed after the killed worker's
    # still-open transaction on the same partitions).
    ends = reader(bootstrap, read_committed=False)
    try:
        targets: dict[tuple[str, int], int] = {}
        for topic in topics:
            for p in partitions_of(bootstrap, topic):
                high = ends.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1]
                if high > 0:
                    targets[(topic, p)] = high
        if not targets:
            return []
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in targets])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        pending = dict(targets)
        while pending:
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error() is None:
                    messages.append(msg)
            positions = consumer.position([TopicPartition(t, p) for t, p in pending])
            for tp in positions:
                if tp.offset >= pending[(tp.topic, tp.partition)]:
                    del pending[(tp.topic, tp.partition)]
            if pending and time.monotonic() > deadline:
                stuck = ", ".join(f"{t}[{p}]" for t, p in sorted(pending))
                raise TimeoutError(f"read_committed view did not reach the end of {stuck}")
        return messages
    finally:
        consumer.close()
        ends.close()


def read_outcomes(bootstrap: str, decision_topics: Sequence[str], deadletter_topic: str,
                  *, timeout_s: float = 120.0) -> Outcomes:
    """Decode every decision and dead letter; outputs that break their contract are noted."""
    outcomes = Outcomes()
    for msg in read_to_end(bootstrap, [*decision_topics, deadletter_topic],
                           timeout_s=timeout_s):
        value = msg.value() or b""
        try:
            if msg.topic() == deadletter_topic:
                outcomes.dead_letters.append(DeadLetter.from_json(value))
                continue
            decision = Decision.from_json(value)
        except ContractError as exc:
            outcomes.invalid.append(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: {exc}")
            continue
        if (msg.key() or b"").decode("utf-8", "replace") != decision.claim_id:
            outcomes.key_mismatches += 1
        outcomes.decisions.append(decision)
    return outcomes


def input_claim_ids(bootstrap: str, topic: str, *, timeout_s: float = 120.0) -> list[str]:
    """The claim_ids in the input topic, by message key: the ground truth of what was sent."""
    return [(msg.key() or b"").decode("utf-8", "replace")
            for msg in read_to_end(bootstrap, [topic], timeout_s=timeout_s)]


class GroupProgress:
    """Watches a consumer group on one topic: committed offsets against end offsets.

    Committed offsets of the scorer group move only inside its transactions, so "committed
    up to the end offsets" means every input message has its outcome committed. (Input from
    a non-transactional producer has no control markers, so the end offset is reachable.)
    """

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.topic = topic
        self.partitions = partitions_of(bootstrap, topic)
        self._tps = [TopicPartition(topic, p) for p in self.partitions]
        # read_uncommitted: the offset fetch then answers with the committed offsets at once.
        # A read_committed client asks for stable offsets and, while the scorer has a
        # transaction with offsets open (nearly always, one per batch), waits for it: the
        # samples of a busy stream came seconds apart (drill 2 once had none for 2 s).
        self._group = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                "enable.auto.commit": False,
                                "isolation.level": "read_uncommitted"})
        self._reader = reader(bootstrap)

    def committed(self) -> int:
        """Sum of committed offsets; -1 when the coordinator cannot answer right now."""
        try:
            # committed() asks the group coordinator without joining the group.
            tps = self._group.committed(self._tps, timeout=10)
        except KafkaException as exc:
            logger.debug("committed offsets unavailable: %s", exc)
            return -1
        if any(tp.error is not None for tp in tps):
            # A partial answer (a broker going down or coming up) would read as a drop and
            # then a rise of the committed count: progress that never happened.
            logger.debug("committed offsets partly unavailable: %s",
                         [tp.error for tp in tps if tp.error is not None])
            return -1
        return sum(max(tp.offset, 0) for tp in tps)

    def per_partition(self) -> dict[int, int]:
        """Committed offset per partition (empty when the coordinator cannot answer)."""
        try:
            tps = self._group.committed(self._tps, timeout=10)
        except KafkaException as exc:
            logger.debug("committed offsets unavailable: %s", exc)
            return {}
        return {tp.partition: tp.offset for tp in tps}

    def end(self) -> int:
        """Sum of end offsets (-1 when the broker cannot answer right now)."""
        try:
            return sum(self._reader.get_watermark_offsets(tp, timeout=10)[1] for tp in self._tps)
        except KafkaException as exc:
            logger.debug("end offsets unavailable: %s", exc)
            return -1

    def caught_up(self, expected: int | None = None) -> bool:
        """Everything in the topic (and at least ``expected`` messages) is committed."""
        end = self.end()
        if end < 0 or (expected is not None and end < expected):
            return False
        return self.committed() >= end

    def close(self) -> None:
        self._group.close()
        self._reader.close()


def group_assignment(bootstrap: str, group: str) -> dict[str, list[tuple[str, int]]]:
    """Member client.id -> partitions it owns, as the group coordinator sees it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.describe_consumer_groups([group], request_timeout=10)[group]
    description = future.result(timeout=15)
    owned: dict[str, list[tuple[str, int]]] = {}
    for member in description.members:
        parts = member.assignment.topic_partitions if member.assignment else []
        owned.setdefault(member.client_id, []).extend(
            (tp.topic, tp.partition) for tp in parts)
    return owned


def throughput_windows(samples: Sequence[tuple[float, int]], window_s: float = 1.0
                       ) -> list[tuple[float, float]]:
    """(time, count) samples -> (time, rate over the last ``window_s`` or a bit more).

    The rate at sample i uses the latest earlier sample at least ``window_s`` before it;
    samples too early to have one yield nothing.
    """
    rates = []
    k = -1
    for t_i, c_i in samples:
        while k + 1 < len(samples) and samples[k + 1][0] <= t_i - window_s:
            k += 1
        if k >= 0:
            t_k, c_k = samples[k]
            rates.append((t_i, (c_i - c_k) / (t_i - t_k)))
    return rates


# --------------------------------------------------------------------------- drill context


@dataclass
class DrillContext:
    """What a drill gets: the running stack, its current model service, the seed."""

    stack: Stack
    model: ModelService
    seed: int
    smoke: bool
    _watches: dict[tuple[str, str], GroupProgress] = field(default_factory=dict)

    def progress(self, group: str, topic: str) -> GroupProgress:
        key = (group, topic)
        if key not in self._watches:
            self._watches[key] = GroupProgress(self.stack.bootstrap, group, topic)
        return self._watches[key]

    def caught_up(self, group: str, topic: str, expected: int | None = None) -> bool:
        return self.progress(group, topic).caught_up(expected)

    def close(self) -> None:
        for watch in self._watches.values():
            watch.close()
        self._watches.clear()
