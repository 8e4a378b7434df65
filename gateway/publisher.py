"""Publishing the gateway's decisions to the outcome topics, confirmed or failed.

An idempotent producer (acks=all, no duplicates from internal retries). ``publish`` returns
only when the broker acknowledged every message, or raises :class:`PublishUnavailable`
after ``timeout_s``; ``message.timeout.ms`` is set to the same budget, so librdkafka gives
up on an unconfirmed message instead of delivering it long after the client got its 503.
A background thread serves delivery reports so that many request threads can wait at once
(a ``flush()`` per request would make every request wait for all the others).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas import Decision

logger = logging.getLogger(__name__)


class PublishUnavailable(Exception):  # noqa: N818 - mirrors scorer.client.ModelUnavailable
    """The broker did not confirm delivery in time (down, unreachable, topic missing)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    decision: Decision


class DecisionPublisher(Protocol):
    def publish(self, items: Sequence[Outgoing], timeout_s: float) -> None:
        """Deliver every item or raise :class:`PublishUnavailable`."""

    def ready(self, timeout_s: float) -> bool:
        """True when the broker answers and the outcome topics exist."""

    def close(self) -> None: ...


@dataclass
class _Delivery:
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    position: str = ""

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.error = err.str()
        else:
            self.position = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        self.done.set()


class KafkaDecisionPublisher:
    """Thread-safe; :meth:`close` flushes what is still queued."""

    def __init__(
        self, bootstrap: str, topics: Sequence[str], timeout_s: float, client_id: str = "gateway"
    ) -> None:
        self._topics = list(topics)
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
        self._poller = threading.Thread(target=self._poll, name="gateway-publisher", daemon=True)
        self._poller.start()

    def publish(self, items: Sequence[Outgoing], timeout_s: float) -> None:
        deliveries = []
        try:
            for item in items:
                delivery = _Delivery()
                self._producer.produce(
                    item.topic, key=item.decision.claim_id.encode(),
                    value=item.decision.to_json(), on_delivery=delivery,
                )
                deliveries.append((item, delivery))
        except (BufferError, KafkaException) as exc:
            raise PublishUnavailable(f"cannot enqueue decision: {exc}") from exc
        # librdkafka reports every message within message.timeout.ms; the margin covers the
        # poll interval of the delivery thread.
        for item, delivery in deliveries:
            if not delivery.done.wait(timeout_s + 1.0):
                raise PublishUnavailable(f"no delivery report for {item.decision.claim_id}")
            if delivery.error is not None:
                raise PublishUnavailable(
                    f"{item.topic}: delivery of {item.decision.claim_id} failed: {delivery.error}"
                )
            logger.debug("published claim_id=%s to %s", item.decision.claim_id, delivery.position)

    def ready(self, timeout_s: float) -> bool:
        if self._fatal is not None:
            return False
        try:
            metadata = self._producer.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        return all(
            topic in metadata.topics and metadata.topics[topic].error is None
            for topic in self._topics
        )

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=5)
        remaining = self._producer.flush(10)
        if remaining:
            logger.warning("%d decisions still unconfirmed at shutdown", remaining)

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
