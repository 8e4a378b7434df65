"""Producing submitted claims to the claims topic, confirmed or failed.

The gateway no longer decides claims: it hands them to the stream, where the worker decides
them with the same features, member state and model as every other claim. A claim is keyed
as the producer keys it (:func:`claim_key`: a v2 claim by member_id, so that one member's
claims share a partition and its state; a v1 claim by claim_id).

An idempotent producer (acks=all, no duplicates from internal retries). ``produce`` returns
the position of every claim only when the broker acknowledged it, or raises
:class:`PublishUnavailable` after ``timeout_s``; ``message.timeout.ms`` is the same budget,
so librdkafka gives up on an unconfirmed claim instead of delivering it long after its
client got a 503. A background thread serves delivery reports so that many request threads
can wait at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas import Claim, ClaimV2

logger = logging.getLogger(__name__)


class PublishUnavailable(Exception):  # noqa: N818 - an availability condition, like ModelUnavailable
    """The broker did not confirm delivery in time (down, unreachable, topic missing)."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a produced claim landed: what the stream's decision or dead letter names."""

    topic: str
    partition: int
    offset: int


def claim_key(claim: Claim | ClaimV2) -> bytes:
    """The producer's key: member_id for v2 (per-member state), claim_id for v1."""
    return (claim.member_id if isinstance(claim, ClaimV2) else claim.claim_id).encode()


class ClaimProducer(Protocol):
    def produce(self, claims: Sequence[Claim | ClaimV2], timeout_s: float) -> list[Position]:
        """Deliver every claim (in order) or raise :class:`PublishUnavailable`."""

    def ready(self, timeout_s: float) -> bool:
        """True when the broker answers and the topics the gateway needs exist."""

    def close(self) -> None: ...


@dataclass
class _Delivery:
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    position: Position | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.error = err.str()
        else:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None
            assert partition is not None
            assert offset is not None
            self.position = Position(topic, partition, offset)
        self.done.set()


class KafkaClaimProducer:
    """Thread-safe; :meth:`close` flushes what is still queued."""

    def __init__(self, bootstrap: str, claims_topic: str, needed_topics: Sequence[str],
                 timeout_s: float, client_id: str = "gateway") -> None:
        self._topic = claims_topic
        self._needed = [claims_topic, *needed_topics]
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "client.id": f"claimflow-{client_id}",
            "enable.idempotence": True,
            "acks": "all",
            # One claim per request: wait for nobody (librdkafka's default lingers 5 ms).
            "linger.ms": 0,
            "message.timeout.ms": int(timeout_s * 1000),
            "error_cb": self._on_error,
        })
        self._fatal: str | None = None
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="gateway-producer", daemon=True)
        self._poller.start()

    def produce(self, claims: Sequence[Claim | ClaimV2], timeout_s: float) -> list[Position]:
        deliveries = []
        try:
            for claim in claims:
                delivery = _Delivery()
                self._producer.produce(self._topic, key=claim_key(claim), value=claim.to_json(),
                                       on_delivery=delivery)
                deliveries.append((claim.claim_id, delivery))
        except (BufferError, KafkaException) as exc:
            raise PublishUnavailable(f"cannot enqueue claim: {exc}") from exc
        positions = []
        # librdkafka reports every message within message.timeout.ms; the margin covers the
        # poll interval of the delivery thread.
        for claim_id, delivery in deliveries:
            if not delivery.done.wait(timeout_s + 1.0):
                raise PublishUnavailable(f"no delivery report for {claim_id}")
            if delivery.error is not None or delivery.position is None:
                raise PublishUnavailable(
                    f"{self._topic}: delivery of {claim_id} failed: {delivery.error}")
            positions.append(delivery.position)
        return positions

    def ready(self, timeout_s: float) -> bool:
        if self._fatal is not None:
            return False
        try:
            metadata = self._producer.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        return all(
            topic in metadata.topics and metadata.topics[topic].error is None
            for topic in self._needed
        )

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=5)
        remaining = self._producer.flush(10)
        if remaining:
            logger.warning("%d claims still unconfirmed at shutdown", remaining)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            # The producer is unusable from now on; readiness fails so the gateway gets restarted.
            self._fatal = err.str()
            logger.error("kafka producer fatal error (restart the gateway): %s", err.str())
        else:
            # Broker-down errors are transient and also surface as failed deliveries.
            logger.warning("kafka producer: %s", err.str())
