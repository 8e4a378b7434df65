"""Read a topic once, as a snapshot: from the beginning of every partition to the end it had
when reading started (its high watermarks), without committing anything.

Training reads ``claims.labels`` this way and the promotion gate ``claims.shadow`` (which the
stream writes in transactions, so it is read ``read_committed``: an aborted batch's records
are never seen).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, Final

from claimflow.settings import BACKLOG_READER_CONFIG
from trainer.data import DataError

log = logging.getLogger(__name__)

POLL_S: Final = 0.5


def read_snapshot(bootstrap: str, topic: str, *, what: str, group: str, timeout_s: float,
                  read_committed: bool = False) -> Iterator[Any]:
    """The topic's messages up to the ends it had at the start; raises ``DataError`` when
    the topic is missing, the broker fails or the ends are not reached within
    ``timeout_s``. ``what`` names the topic in errors ("labels", "shadow")."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    config = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
              "auto.offset.reset": "earliest", "enable.partition.eof": True,
              **BACKLOG_READER_CONFIG}
    if read_committed:
        config["isolation.level"] = "read_committed"
    consumer = Consumer(config)
    try:
        info = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise DataError(f"{what} topic {topic!r} does not exist on {bootstrap}")
        ends = {}
        for partition in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=timeout_s)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        yield from _until_ends(consumer, ends, time.monotonic() + timeout_s, topic)
    except KafkaException as exc:
        raise DataError(f"cannot read {what} from {topic!r} on {bootstrap}: {exc}") from exc
    finally:
        consumer.close()


def _until_ends(consumer: Any, pending: dict[int, int], deadline: float, topic: str
                ) -> Iterator[Any]:
    """Messages until every partition is done: its message at the last offset it had was
    read, or it reported its end (partition EOF: a transaction's commit marker takes the
    last offset of a partition and is never delivered)."""
    from confluent_kafka import KafkaError

    while pending:
        if time.monotonic() > deadline:
            raise DataError(f"reading {topic!r} timed out with partitions {sorted(pending)} "
                            "unfinished")
        message = consumer.poll(POLL_S)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                pending.pop(message.partition(), None)
            else:
                log.warning("%s: %s", topic, error)
            continue
        partition = message.partition()
        if partition in pending and message.offset() + 1 >= pending[partition]:
            del pending[partition]
        yield message
