"""Reading member-state changelog partitions to their end (``restore_partitions``), with an
in-memory consumer in place of librdkafka's: what a restore keeps, and how it asks."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

import scorer.member_state as member_state
from claimflow.settings import BACKLOG_READER_CONFIG
from scorer.member_state import ChangelogRead, catch_up, read_changelog, restore_partitions
from tests.fake_message import FakeMessage


def record(partition: int, member: bytes | None, state: bytes | None, offset: int = 0
           ) -> FakeMessage:
    return FakeMessage(state, _partition=partition, _key=member, _topic="g.member-state",
                       _offset=offset)


def end_of(partition: int, offset: int = -1001) -> FakeMessage:
    return FakeMessage(None, _partition=partition, _key=None, _topic="g.member-state",
                       _error=KafkaError(KafkaError._PARTITION_EOF), _offset=offset)


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
        """From each partition's start offset (or its beginning); EOF at the end offset."""
        self.assigned = partitions
        start = {tp.partition: max(tp.offset, 0) for tp in partitions}
        self.pending = [r for r in self.records if r.partition() in start
                        and (r.offset() or 0) >= start[r.partition() or 0]]
        ends = {p: max([(r.offset() or 0) + 1 for r in self.records if r.partition() == p],
                       default=start[p]) for p in start}
        self.pending += [end_of(p, ends[p]) for p in sorted(start)]

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


def test_a_read_from_offsets_keeps_tombstones_and_says_where_it_ended(
        monkeypatch: pytest.MonkeyPatch) -> None:
    records = [record(0, b"M-1", b"old", 0), record(0, b"M-2", b"two", 1),
               record(0, b"M-1", b"new", 2), record(0, b"M-2", None, 3),
               record(1, b"M-3", b"three", 0)]
    ChangelogConsumer.made.clear()
    monkeypatch.setattr(member_state, "Consumer",
                        lambda config: ChangelogConsumer(config, records))
    read = read_changelog({"bootstrap.servers": "x", "group.id": "g.restore"},
                          "g.member-state", {0: 2, 1: OFFSET_BEGINNING}, keep_tombstones=True)
    assert read.records == {0: {"M-1": b"new", "M-2": None}, 1: {"M-3": b"three"}}
    assert read.next_offsets == {0: 4, 1: 1}
    assert [(tp.partition, tp.offset) for tp in ChangelogConsumer.made[0].assigned] == [
        (0, 2), (1, OFFSET_BEGINNING)]


def test_catching_up_applies_what_was_written_since_the_prefetch_to_the_assigned_only() -> None:
    prefetched = ChangelogRead({0: {"M-1": b"old", "M-2": b"two"}, 1: {"M-3": b"three"}},
                               {0: 2, 1: 1})
    asked: list[dict[int, int]] = []

    def since(start: dict[int, int]) -> ChangelogRead:
        asked.append(start)
        return ChangelogRead({0: {"M-1": b"new", "M-2": None, "M-4": b"four"}}, {0: 5})

    assert catch_up(prefetched, [0], since) == {0: {"M-1": b"new", "M-4": b"four"}}
    assert asked == [{0: 2}]  # partition 1 was not assigned: not read, not restored
