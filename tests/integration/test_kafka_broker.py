"""The session broker (a container, or CLAIMFLOW_TEST_BOOTSTRAP): what every component relies on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from broker.admin import admin_client
from broker.topics import TopicSpec, ensure_topics
from tests.integration.kafka_helpers import consume_until

pytestmark = pytest.mark.integration


def _deliver(producer: Producer) -> None:
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages not delivered"


def test_produce_consume_round_trip(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all",
                         "enable.idempotence": True})
    sent = [(f"claim-{i % 7}".encode(), f"value-{i}".encode()) for i in range(60)]
    for key, value in sent:
        producer.produce(topic, value=value, key=key, headers=[("pattern", b"none")])
    _deliver(producer)

    received = consume_until(kafka_bootstrap, [topic], expected=len(sent))

    assert sorted((m.key(), m.value()) for m in received) == sorted(sent)
    assert all(m.headers() == [("pattern", b"none")] for m in received)
    # Same key, same partition, in the order produced.
    for key in {k for k, _ in sent}:
        in_order = [v for k, v in sent if k == key]
        assert [m.value() for m in received if m.key() == key] == in_order
        assert len({m.partition() for m in received if m.key() == key}) == 1


def _read_to_end(bootstrap: str, topic: str, isolation: str) -> list[bytes]:
    """All values a consumer with this isolation level can read, up to the partition end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex}",
                         "isolation.level": isolation, "enable.auto.commit": False})
    partition = TopicPartition(topic, 0, 0)
    consumer.assign([partition])
    _, high = consumer.get_watermark_offsets(partition, timeout=10)
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        # read_committed stops at the last stable offset, which equals the high watermark once
        # every transaction is decided; the control markers advance the position past it.
        while consumer.position([partition])[0].offset < high and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                value = msg.value()
                if msg.error() is None and value is not None:
                    values.append(value)
    finally:
        consumer.close()
    return values


def test_transactions_committed_visible_aborted_not(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap,
                         "transactional.id": f"tx-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    for label in ("committed", "aborted", "later"):
        producer.begin_transaction()
        for i in range(5):
            producer.produce(topic, value=f"{label}-{i}".encode(), key=b"k")
        producer.flush(30)
        if label == "aborted":
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)

    committed = _read_to_end(kafka_bootstrap, topic, "read_committed")
    everything = _read_to_end(kafka_bootstrap, topic, "read_uncommitted")

    expected = [f"{label}-{i}".encode() for label in ("committed", "later") for i in range(5)]
    assert committed == expected
    # The aborted records were really written: only the isolation level hides them.
    assert [v for v in everything if v.startswith(b"aborted")] == [
        f"aborted-{i}".encode() for i in range(5)
    ]


def test_ensure_topics_is_idempotent(kafka_bootstrap: str) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    try:
        first = ensure_topics(kafka_bootstrap, [TopicSpec(name, partitions=4)])
        again = ensure_topics(kafka_bootstrap, [TopicSpec(name, partitions=2)])
        assert [(r.outcome, r.partitions) for r in first] == [("created", 4)]
        assert [(r.outcome, r.partitions) for r in again] == [("exists", 4)]
        # Usable at once: every partition has a leader, so producing does not race creation.
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for p in range(4):
            producer.produce(name, value=b"x", partition=p)
        _deliver(producer)
    finally:
        admin = admin_client(kafka_bootstrap)  # must outlive its futures
        for future in admin.delete_topics([name]).values():
            future.result(timeout=30)
