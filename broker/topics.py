"""Idempotent topic creation, reusable by any component (producer, demo, tests, benchmarks).

    from broker.topics import TopicSpec, ensure_topics
    ensure_topics("127.0.0.1:9092", [TopicSpec("claims", partitions=6)])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from broker.admin import POLL_INTERVAL_S, admin_client
from broker.errors import BrokerError
from broker.settings import KafkaSettings

if TYPE_CHECKING:
    from confluent_kafka.admin._metadata import ClusterMetadata

logger = logging.getLogger(__name__)

Outcome = Literal["created", "exists"]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    # -1: the cluster's default.replication.factor (1 on the local broker, 3 on most clusters).
    replication_factor: int = -1
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicResult:
    name: str
    outcome: Outcome
    partitions: int  # as the cluster has it now, which may differ from the spec if it existed


# A label replaces the claim's earlier ones (keyed by claim_id): compaction keeps the latest
# per claim for as long as the topic exists, where time-based retention would drop them.
COMPACTED: Mapping[str, str] = {"cleanup.policy": "compact"}


def claimflow_topics(settings: KafkaSettings, partitions: int | None = None) -> list[TopicSpec]:
    """The claimflow topics, each with ``partitions`` (default: KAFKA_PARTITIONS); the labels
    topic is compacted."""
    count = partitions if partitions is not None else settings.partitions
    return [TopicSpec(name, partitions=count,
                      config=COMPACTED if name == settings.labels_topic else {})
            for name in settings.topic_names()]


def ensure_topics(
    bootstrap: str, specs: Sequence[TopicSpec], timeout_s: float = 30.0
) -> list[TopicResult]:
    """Create the topics that do not exist yet, then wait until every partition has a leader.

    Existing topics are left alone (their partition count is reported, never changed:
    adding partitions would move keys to other partitions).
    """
    if not specs:
        return []
    admin = admin_client(bootstrap)
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor,
                  config=dict(s.config)) for s in specs],
        operation_timeout=timeout_s, request_timeout=timeout_s,
    )
    outcomes: dict[str, Outcome] = {}
    for spec in specs:
        outcomes[spec.name] = _outcome(spec.name, futures[spec.name], timeout_s)
    meta = _wait_for_leaders(admin, [s.name for s in specs], timeout_s)
    results = []
    for spec in specs:
        partitions = len(meta.topics[spec.name].partitions)
        if outcomes[spec.name] == "exists" and partitions != spec.partitions:
            logger.warning("topic %s exists with %d partitions (asked for %d); left unchanged",
                           spec.name, partitions, spec.partitions)
        results.append(TopicResult(spec.name, outcomes[spec.name], partitions))
    return results


def _outcome(name: str, future: Future[None], timeout_s: float) -> Outcome:
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return "exists"
        raise BrokerError(f"could not create topic {name}: {error.str()}") from exc
    logger.info("created topic %s", name)
    return "created"


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float) -> ClusterMetadata:
    """A freshly created topic shows up in metadata before its partitions have leaders;
    producing in that window fails, so callers get the topics only once they are usable."""
    deadline = time.monotonic() + timeout_s
    while True:
        meta = admin.list_topics(timeout=timeout_s)
        missing = [n for n in names if not _ready(meta, n)]
        if not missing:
            return meta
        if time.monotonic() >= deadline:
            raise BrokerError(f"topics without leaders after {timeout_s:.0f} s: {missing}")
        time.sleep(POLL_INTERVAL_S)


def _ready(meta: ClusterMetadata, name: str) -> bool:
    topic = meta.topics.get(name)
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(p.leader >= 0 and p.error is None for p in topic.partitions.values())
