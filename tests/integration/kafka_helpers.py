"""Helpers for integration tests: start a broker container, consume until a deadline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import Consumer, Message


@contextmanager
def start_kafka_container() -> Iterator[str]:
    """Start a single-node Kafka in a container; yields its bootstrap address."""
    raise RuntimeError(
        "no broker: set CLAIMFLOW_TEST_BOOTSTRAP=host:port (the container path comes with issue 3)"
    )
    yield ""  # pragma: no cover


def consume_until(
    bootstrap: str,
    topics: list[str],
    expected: int,
    timeout_s: float = 30.0,
    *,
    read_committed: bool = True,
) -> list[Message]:
    """Read from the beginning until ``expected`` messages arrived or the deadline passed."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:12]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    consumer.subscribe(topics)
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    messages.append(msg)
    finally:
        consumer.close()
    return messages
