"""The Kafka shell: an idempotent producer that streams encoded claims and counts outcomes.

Throughput comes from librdkafka's batching (linger, large batches, lz4) and from keeping
Python out of the way: records are encoded beforehand, ``produce`` is called in a tight loop,
``poll(0)`` runs once per chunk, and only failed deliveries call back into Python
(``delivery.report.only.error``), so confirmed = handed over - failed - still queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producer.encoding import EncodedClaims
from producer.settings import ProducerSettings
from producer.throttle import TokenBucket, burst_for_rate, chunk_for_rate

logger = logging.getLogger(__name__)

MAX_LOGGED_FAILURES: Final = 10
QUEUE_FULL_WAIT_S: Final = 0.05
MAX_WAIT_STEP_S: Final = 0.1  # longest blocking call, so a signal is handled promptly
AFTER_ABORT_FLUSH_S: Final = 5.0
METADATA_RETRY_S: Final = 0.2
THROTTLED_LINGER_MS: Final = 5

AckedProgress = Callable[[int], None]  # called with the number of confirmed claims so far


class KafkaUnavailableError(RuntimeError):
    """The broker cannot be reached, or the topic does not exist."""


@dataclass
class DeliveryTracker:
    """Counts failed deliveries (the only ones reported) and remembers a fatal error."""

    failed: int = 0
    failures: list[str] = field(default_factory=list)
    fatal: str | None = None

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        self.failed += 1
        if self.failed <= MAX_LOGGED_FAILURES:
            key = msg.key()
            claim_id = key.decode(errors="replace") if isinstance(key, bytes) else key
            text = f"{msg.topic()}[{msg.partition()}] claim_id {claim_id}: {err.str()}"
            self.failures.append(text)
            logger.error("delivery failed: %s", text)

    def on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err.str()
            logger.error("fatal producer error: %s", err.str())
        else:
            logger.warning("kafka: %s", err.str())


@dataclass(frozen=True)
class SendReport:
    topic: str
    total: int  # records that were to be sent
    enqueued: int  # handed to librdkafka
    failed: int  # delivery reported an error (or purged after a second interrupt)
    unconfirmed: int  # still without an answer when the flush gave up
    elapsed_s: float
    interrupted: bool
    fatal_error: str | None

    @property
    def sent(self) -> int:
        """Claims the broker acknowledged (acks=all)."""
        return self.enqueued - self.failed - self.unconfirmed

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.sent == self.total and self.fatal_error is None


def producer_config(settings: ProducerSettings, tracker: DeliveryTracker,
                    *, throttled: bool = False) -> dict[str, Any]:
    # A throttled stream fills no big batches anyway: waiting for one only adds latency.
    linger_ms = min(settings.linger_ms, THROTTLED_LINGER_MS) if throttled else settings.linger_ms
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": "claimflow-producer",
        "enable.idempotence": True,  # no duplicates or reordering on retries
        "acks": "all",
        "linger.ms": linger_ms,
        "batch.size": settings.batch_size,
        "compression.type": settings.compression,
        "queue.buffering.max.messages": settings.queue_max_messages,
        "queue.buffering.max.kbytes": 2_097_151,  # librdkafka's maximum: let the count bind
        "delivery.timeout.ms": settings.delivery_timeout_ms,
        "delivery.report.only.error": True,
        "on_delivery": tracker.on_delivery,
        "error_cb": tracker.on_error,
        "logger": logging.getLogger("producer.librdkafka"),
    }


def connect(settings: ProducerSettings, topic: str, tracker: DeliveryTracker,
            *, throttled: bool = False) -> Producer:
    """A producer whose broker answers and whose topic exists (topics are never auto-created:
    ``claimflow topics create`` owns their partitioning)."""
    producer = Producer(producer_config(settings, tracker, throttled=throttled))
    deadline = time.monotonic() + settings.metadata_timeout_s
    while True:
        reason = topic_problem(producer, topic, settings)
        if reason is None:
            return producer
        # A topic created a moment ago may not be in every broker's metadata yet.
        if time.monotonic() >= deadline:
            raise KafkaUnavailableError(
                f"topic {topic!r} is not available on {settings.kafka_bootstrap_servers} "
                f"({reason}); create it with `claimflow topics create`"
            )
        time.sleep(METADATA_RETRY_S)


def topic_problem(producer: Producer, topic: str, settings: ProducerSettings) -> str | None:
    """Why ``topic`` cannot be written to, or None if it can."""
    try:
        metadata = producer.list_topics(topic, timeout=settings.metadata_timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers} within "
            f"{settings.metadata_timeout_s:g} s ({exc.args[0].str()}); is the broker running "
            "(`claimflow kafka start`)?"
        ) from exc
    found = metadata.topics.get(topic)
    if found is None:
        return "not found"
    if found.error is not None:
        return str(found.error.str())
    return None


def enqueue(producer: Producer, topic: str, claims: EncodedClaims, start: int, end: int) -> None:
    """Hand records ``start:end`` to librdkafka; waits for room when its queue is full."""
    produce, poll = producer.produce, producer.poll
    keys, values, headers = claims.keys, claims.values, claims.headers
    for i in range(start, end):
        while True:
            try:
                produce(topic, values[i], keys[i], headers=headers[i] if headers else None)
                break
            except BufferError:
                poll(QUEUE_FULL_WAIT_S)


def wait_for_tokens(producer: Producer, bucket: TokenBucket, n: int, stop: threading.Event,
                    clock: Callable[[], float]) -> bool:
    """Block until ``n`` tokens are there (serving delivery reports meanwhile); False if
    ``stop`` was set first."""
    while not stop.is_set():
        delay = bucket.take(n, clock())
        if delay <= 0:
            return True
        producer.poll(min(delay, MAX_WAIT_STEP_S))
    return False


def send(
    producer: Producer,
    topic: str,
    claims: EncodedClaims,
    tracker: DeliveryTracker,
    stop: threading.Event,
    *,
    rate: float | None = None,
    progress: AckedProgress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Enqueue every record (at ``rate`` claims/s if given) until done, ``stop`` is set or a
    fatal error occurs; returns how many were handed to librdkafka."""
    chunk = chunk_for_rate(rate)
    bucket = TokenBucket.full(rate, burst_for_rate(rate), clock()) if rate else None
    enqueued = 0
    while enqueued < len(claims) and not stop.is_set() and tracker.fatal is None:
        end = min(enqueued + chunk, len(claims))
        if bucket and not wait_for_tokens(producer, bucket, end - enqueued, stop, clock):
            break
        try:
            enqueue(producer, topic, claims, enqueued, end)
        except KafkaException as exc:
            tracker.fatal = exc.args[0].str()
            logger.error("producing to %s failed: %s", topic, tracker.fatal)
            break
        enqueued = end
        producer.poll(0)
        if progress:
            progress(enqueued - len(producer) - tracker.failed)
    return enqueued


def drain(
    producer: Producer,
    timeout_s: float,
    abort: threading.Event,
    tracker: DeliveryTracker,
    enqueued: int,
    progress: AckedProgress | None = None,
) -> int:
    """Wait until every enqueued record is acknowledged or failed; returns how many are still
    unanswered. ``abort`` (a second Ctrl-C) purges what is not yet on its way to the broker."""
    deadline = time.monotonic() + timeout_s
    while len(producer) > 0 and time.monotonic() < deadline and not abort.is_set():
        producer.flush(MAX_WAIT_STEP_S)
        if progress:
            progress(enqueued - len(producer) - tracker.failed)
    if len(producer) > 0 and abort.is_set():
        producer.purge(in_queue=True, in_flight=False)
        producer.flush(AFTER_ABORT_FLUSH_S)
    return len(producer)


def produce_claims(
    producer: Producer,
    topic: str,
    claims: EncodedClaims,
    tracker: DeliveryTracker,
    *,
    stop: threading.Event,
    abort: threading.Event,
    flush_timeout_s: float,
    rate: float | None = None,
    progress: AckedProgress | None = None,
) -> SendReport:
    """Send, then flush; ``stop`` (first Ctrl-C) ends sending but still flushes."""
    started = time.monotonic()
    enqueued = send(producer, topic, claims, tracker, stop, rate=rate, progress=progress)
    unconfirmed = drain(producer, flush_timeout_s, abort, tracker, enqueued, progress)
    report = SendReport(
        topic=topic,
        total=len(claims),
        enqueued=enqueued,
        failed=tracker.failed,
        unconfirmed=unconfirmed,
        elapsed_s=time.monotonic() - started,
        interrupted=stop.is_set(),
        fatal_error=tracker.fatal,
    )
    logger.info("produced to %s: sent %d, failed %d, unconfirmed %d in %.2f s", topic,
                report.sent, report.failed, report.unconfirmed, report.elapsed_s)
    return report
