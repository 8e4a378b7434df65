"""Reading member-state changelog partitions to their end (``restore_partitions``), with an
in-memory consumer in place of librdkafka's: what a restore keeps, and how it asks."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

import scorer.member_state as member_state
from claimflow.settings import BACKLOG_READER_CONFIG
from scorer.member_state import restore_partitions
from tests.fake_message import FakeMessage


def record(partition: int, member: bytes | None, state: bytes | None) -> FakeMessage:
    return FakeMessage(state, _partition=partition, _key=member, _topic="g.member-state")


def end_of(partition: int) -> FakeMessage:
    return FakeMessage(None, _partition=partition, _key=None, _topic="g.member-state",
                       _error=KafkaError(KafkaError._PARTITION_EOF))


class ChangelogConsumer:
    """Hands out its records a few at a time, then each assigned partition's EOF."""

    made: list[ChangelogConsumer] = []

    def __init__(self, config: dict[str, Any], records: list[FakeMessage]) -> None:
        self.config = config
        self.records = records
        self.assigned: list[TopicPartition] = []
        self.closed = False
        ChangelogConsumer.made.append(self)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions
        numbers = {tp.partition for tp in partitions}
        self.pending = [r for r in self.records if r.partition() in numbers]
        self.pending += [end_of(p) for p in sorted(numbers)]

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        taken, self.pending = self.pending[:3], self.pending[3:]
        return taken

    def close(self) -> None:
        self.closed = True


def read(records: list[FakeMessage], partitions: list[int], monkeypatch: pytest.MonkeyPatch
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
        record(0, b"M-1", b"old"), record(0, b"M-2", b"two"), record(1, b"M-3", b"three"),
        record(0, b"M-1", b"new"), record(0, b"M-2", None), record(0, None, b"keyless"),
        record(2, b"M-9", b"not ours"),
    ]
    restored, consumer = read(records, [0, 1], monkeypatch)
    assert restored == {0: {"M-1": b"new"}, 1: {"M-3": b"three"}}
    assert [(tp.topic, tp.partition) for tp in consumer.assigned] == [
        ("g.member-state", 0), ("g.member-state", 1)]
    assert consumer.closed


def test_a_restore_reads_only_committed_state_and_does_not_wait_out_fetch_back_offs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, consumer = read([record(0, b"M-1", b"state")], [0], monkeypatch)
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
