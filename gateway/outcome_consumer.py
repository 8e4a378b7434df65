"""Background consumer of the outcome view: decision topics -> :class:`OutcomeStore`.

read_committed, so aborted scorer transactions never show. Where to start is the store's
business (its positions table, written with the rows), not the group's committed offsets:
the group is used for partition assignment and commits only so lag tools can see it.

Cheap for the broker by design: a fetch and a commit per message would cost the broker more
CPU per decision than the produce itself (measured in docs/gateway.md, "Outcome view"). So
a fetch waits for data to accumulate (up to ``max_delay_ms``: the view may lag by that much,
against a page that refreshes every couple of seconds), and offsets are only stored locally
after each batch and committed by librdkafka's timer (and on close).

A message that is not a valid Decision (or, on the labels topic, Label; on the shadow topic,
ShadowScore) is logged with its
position and skipped (this is a view; the topics' producers own their dead letters).

Any other failure (the store, librdkafka, a bug) closes the consumer and starts a new one
after a backoff that doubles up to ``backoff_max_s`` (``gateway.restarting.RestartingThread``),
so the view never stops silently. Nothing is lost by restarting, since the store's positions
say where to resume. :meth:`OutcomeConsumer.fresh` tells readiness whether the view has
completed a poll recently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from claimflow.settings import BACKLOG_READER_CONFIG
from gateway.label_view import decode_label
from gateway.outcome_store import Outcome, OutcomeStore
from gateway.polled import Where, decode_poll
from gateway.restarting import RestartingThread, close_quietly
from gateway.shadow_view import decode_shadow
from schemas import ContractError, Decision

logger = logging.getLogger(__name__)

# Called after each stored poll with (inserted, duplicates, invalid).
OnStored = Callable[[int, int, int], None]


def decode_outcome(value: bytes, where: Where) -> Outcome | None:
    """The decision in ``value`` as an outcome, or None (logged) when it is not a valid one."""
    try:
        decision = Decision.from_json(value)
    except ContractError as exc:
        logger.warning("skipping %s: %s", where, exc)
        return None
    return Outcome(decision, where.topic, where.partition, where.offset, value)


class OutcomeConsumer(RestartingThread):
    """Runs in its own thread between :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        store: OutcomeStore,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str,
        on_stored: OnStored | None = None,
        batch_size: int = 500,
        max_delay_ms: int = 100,
        stale_after_s: float = 15.0,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        labels_topic: str | None = None,
        shadow_topic: str | None = None,
    ) -> None:
        super().__init__("gateway-view", "outcome view consumer", backoff_s, stale_after_s)
        self._store = store
        self._labels_topic = labels_topic
        self._shadow_topic = shadow_topic
        self._consumer_factory = consumer_factory
        self._topics = [*topics, *(t for t in (labels_topic, shadow_topic) if t)]
        self._batch_size = batch_size
        self._on_stored = on_stored
        self._config = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "client.id": "claimflow-gateway-view",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            # A fetch answers once 1 MiB is waiting or max_delay_ms has passed, not on the
            # first byte (which meant a fetch round trip per decision under steady load).
            "fetch.min.bytes": 1 << 20,
            "fetch.wait.max.ms": max_delay_ms,
            # Offsets go to librdkafka's store after each stored batch; its timer commits them
            # (and close() commits the last ones). The view's own positions live in SQLite.
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": 5000,
            "error_cb": self._on_error,
            # A restarted gateway reads every decision since its view's last position.
            **BACKLOG_READER_CONFIG,
        }
        self.last_error: str | None = None

    def _session(self) -> None:
        """One consumer from subscribe to close; returns when stopped, raises on failure."""
        consumer = self._consumer_factory(self._config)
        try:
            consumer.subscribe(self._topics, on_assign=self._on_assign)
            logger.info("outcome view reading %s", ", ".join(self._topics))
            while not self.stopping.is_set():
                messages = consumer.consume(num_messages=self._batch_size, timeout=0.2)
                self._handle(consumer, messages)
                self.polled()
        finally:
            close_quietly(consumer, "outcome view")

    def _handle(self, consumer: Consumer, messages: list[Message]) -> None:
        good = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                self._on_error(err)
        if not good:
            return
        side = (self._labels_topic, self._shadow_topic)
        outcomes = decode_poll([m for m in good if m.topic() not in side], decode_outcome)
        labels = decode_poll([m for m in good if m.topic() == self._labels_topic], decode_label)
        shadows = decode_poll([m for m in good if m.topic() == self._shadow_topic],
                              decode_shadow)
        positions = {**outcomes.positions, **labels.positions, **shadows.positions}
        invalid = outcomes.invalid + labels.invalid + shadows.invalid
        inserted = self._store.add(outcomes.items, positions, labels.items, shadows.items)
        if self._on_stored is not None:
            self._on_stored(inserted, len(outcomes.items) - inserted, invalid)
        try:
            consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()])
        except KafkaException as exc:  # a partition revoked meanwhile: its next owner reads
            logger.info("outcome view: offsets not stored: %s", exc)  # the SQLite positions

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self._store.positions()
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        logger.info("outcome view assigned %s", ", ".join(
            f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions))
        consumer.assign(partitions)

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err.str()
        level = logging.ERROR if err.fatal() else logging.WARNING
        logger.log(level, "outcome view consumer: %s", err.str())
