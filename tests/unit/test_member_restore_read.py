"""Reading member-state changelog partitions to their end (``restore_partitions``), with an
in-memory consumer in place of librdkafka's: what a restore keeps, and how it asks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

import scorer.member_state as member_state
from claimflow.settings import BACKLOG_READER_CONFIG
from scorer.member_state import restore_partitions


@dataclass
class Record:
    """A changelog message as the restore reads it (librdkafka's ``Message`` methods)."""

    on_partition: int
    member: bytes | None
    state: bytes | None
    eof: bool = False

    def error(self) -> KafkaError | None:
        return KafkaError(KafkaError._PARTITION_EOF) if self.eof else None

    def partition(self) -> int:
        return self.on_partition

    def key(self) -> bytes | None:
        return self.member

    def value(self) -> bytes | None:
        return self.state


class ChangelogConsumer:
    """Hands out its records a few at a time, then each assigned partition's EOF."""

    made: list[ChangelogConsumer] = []

    def __init__(self, config: dict[str, Any], records: list[Record]) -> None:
        self.config = config
        self.records = records
        self.assigned: list[TopicPartition] = []
        self.closed = False
        ChangelogConsumer.made.append(self)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions
        numbers = {tp.partition for tp in partitions}
        self.pending = [r for r in self.records if r.on_partition in numbers]
        self.pending += [Record(p, None, None, eof=True) for p in sorted(numbers)]

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        taken, self.pending = self.pending[:3], self.pending[3:]
        return taken

    def close(self) -> None:
        self.closed = True


def read(records: list[Record], partitions: list[int], monkeypatch: pytest.MonkeyPatch
         ) -> tuple[dict[int, dict[str, bytes]], ChangelogConsumer]:
    ChangelogConsumer.made.clear()
    monkeypatch.setattr(member_state, "Consumer",
                        lambda config: ChangelogConsumer(config, records))
    restored = restore_partitions({"bootstrap.servers": "x", "group.id": "g.restore"},
                                  "g.member-state", partitions)
    return restored, ChangelogConsumer.made[0]


def test_a_restore_keeps_each_members_latest_record_and_forgets_tombstoned_members(
        monkeypatch: pytest.MonkeyPatch) -> None:
    records = [
        Record(0, b"M-1", b"old"), Record(0, b"M-2", b"two"), Record(1, b"M-3", b"three"),
        Record(0, b"M-1", b"new"), Record(0, b"M-2", None), Record(0, None, b"keyless"),
        Record(2, b"M-9", b"not ours"),
    ]
    restored, consumer = read(records, [0, 1], monkeypatch)
    assert restored == {0: {"M-1": b"new"}, 1: {"M-3": b"three"}}
    assert [(tp.topic, tp.partition) for tp in consumer.assigned] == [
        ("g.member-state", 0), ("g.member-state", 1)]
    assert consumer.closed


def test_a_restore_reads_only_committed_state_and_does_not_wait_out_fetch_back_offs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, consumer = read([Record(0, b"M-1", b"state")], [0], monkeypatch)
    # A batch whose transaction never committed left no state.
    assert consumer.config["isolation.level"] == "read_committed"
    assert consumer.config["enable.partition.eof"] is True
    assert consumer.config["enable.auto.commit"] is False
    # librdkafka's default 1 s back-off after a full fetch queue was most of a 1M-member
    # restore's time (docs/member-stage.md).
    assert consumer.config.items() >= BACKLOG_READER_CONFIG.items()
    assert BACKLOG_READER_CONFIG["fetch.queue.backoff.ms"] <= 10


def test_nothing_to_restore_opens_no_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    ChangelogConsumer.made.clear()
    monkeypatch.setattr(member_state, "Consumer",
                        lambda config: ChangelogConsumer(config, []))
    assert restore_partitions({"bootstrap.servers": "x"}, "g.member-state", []) == {}
    assert ChangelogConsumer.made == []
