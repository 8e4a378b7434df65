"""Read investigators' labels from the compacted ``claims.labels`` topic, start to end.

The topic is read once, from the beginning of every partition up to the end it had when
reading started (its high watermarks), without a consumer group: training takes a
snapshot, it commits nothing. Messages that are not a valid ``Label`` are counted and
skipped (the gateway validated them on the way in; a stray one must not stop training).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from schemas import ContractError
from schemas.label import Label
from trainer.data import DataError

log = logging.getLogger(__name__)

POLL_S: Final = 0.5


@dataclass
class LabelRead:
    labels: list[Label]
    invalid: int = 0


def read_labels(bootstrap: str, topic: str, timeout_s: float = 60.0) -> LabelRead:
    """The latest label of every claim on ``topic`` (a tombstone withdraws a claim's label)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "claimflow-trainer",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise DataError(f"labels topic {topic!r} does not exist on {bootstrap}")
        ends = {}
        for partition in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=timeout_s)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        return _drain(consumer, ends, time.monotonic() + timeout_s, topic)
    except KafkaException as exc:
        raise DataError(f"cannot read labels from {topic!r} on {bootstrap}: {exc}") from exc
    finally:
        consumer.close()


def _drain(consumer: object, ends: dict[int, int], deadline: float, topic: str) -> LabelRead:
    read = LabelRead(labels=[])
    # A claim's labels share a partition (the key is its claim_id), so their order holds.
    latest: dict[str, Label] = {}
    for key, label in _until_ends(consumer, dict(ends), deadline, topic, read):
        if label is None:
            latest.pop(key, None)
        else:
            latest[label.claim_id] = label
    read.labels = list(latest.values())
    if read.invalid:
        log.warning("%d message(s) on %s are not labels; skipped", read.invalid, topic)
    log.info("read %d label(s) from %s", len(read.labels), topic)
    return read


def _until_ends(consumer: object, pending: dict[int, int], deadline: float, topic: str,
                read: LabelRead) -> Iterator[tuple[str, Label | None]]:
    while pending:
        if time.monotonic() > deadline:
            raise DataError(f"reading {topic!r} timed out with partitions {sorted(pending)} "
                            "unfinished")
        message = consumer.poll(POLL_S)  # type: ignore[attr-defined]
        if message is None:
            continue
        if message.error() is not None:
            log.warning("labels topic: %s", message.error())
            continue
        partition, offset = message.partition(), message.offset()
        if partition in pending and offset + 1 >= pending[partition]:
            del pending[partition]
        key = (message.key() or b"").decode("utf-8", errors="replace")
        if message.value() is None:  # a tombstone: the claim's label was withdrawn
            yield key, None
            continue
        try:
            yield key, Label.model_validate_json(message.value())
        except (ValueError, ContractError):
            read.invalid += 1
