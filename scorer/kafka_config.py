"""The stream worker's Kafka clients: consumer and producer configuration, the short-lived
clients it opens beside them (changelog admin, state restore, committed-offset reader), and
the outcome topics named by the settings."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from scorer.calls import KAFKA_CALL_TIMEOUT_S
from scorer.member_state import ChangelogRead, read_changelog, restore_partitions
from scorer.routing import OutcomeTopics
from scorer.worker_settings import ScorerSettings


def consumer_config(settings: ScorerSettings, instance: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": settings.group_id,
        "client.id": settings.transactional_id(instance),
        # Never see claims of a producer's aborted transactions.
        "isolation.level": "read_committed",
        # Offsets move only inside the batch's transaction.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # A new group must not skip claims that are already waiting.
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(100, settings.session_timeout_ms // 3),
        "logger": logging.getLogger("scorer.kafka.consumer"),
    }
    if settings.static_membership:
        # KIP-345: the coordinator hands a returning instance its old assignment without a
        # rebalance, so a restarted worker does not wait for its dead predecessor's session
        # to expire. Same id as the producer's transactional.id: both name the instance.
        config["group.instance.id"] = settings.transactional_id(instance)
    return config


def producer_config(settings: ScorerSettings, instance: int) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": settings.transactional_id(instance),
        "transactional.id": settings.transactional_id(instance),
        "transaction.timeout.ms": settings.transaction_timeout_ms,
        "enable.idempotence": True,
        "acks": "all",
        # A batch is produced in a tight loop, then send_offsets_to_transaction takes a few
        # broker round trips: a short linger packs the batch into few produce requests that
        # still travel while the offsets are being sent (commit_transaction flushes at once).
        "linger.ms": 5,
        # The broker answers CONCURRENT_TRANSACTIONS while it still writes the previous
        # transaction's markers; the default 100 ms retry backoff then dominates each batch.
        "retry.backoff.ms": 5,
        "logger": logging.getLogger("scorer.kafka.producer"),
    }


def restore_config(settings: ScorerSettings) -> dict[str, Any]:
    """The short-lived consumer that reads member-state changelog partitions to their end."""
    return {"bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"{settings.group_id}.restore",
            "logger": logging.getLogger("scorer.kafka.restore")}


@dataclass(frozen=True)
class ClusterCalls:
    """What the scoring loop asks of the cluster besides its consumer and producer: an admin
    client (to create or check the member-state changelog), a restore of changelog partitions,
    the group's committed offsets and, for the prefetch before the first assignment, a read
    of changelog partitions from given offsets (changelog, start offsets, keep tombstones,
    log label). :func:`cluster_calls` builds the real ones; tests hand in fakes."""

    make_admin: Callable[[], AdminClient]
    restore: Callable[[str, Sequence[int]], dict[int, dict[str, bytes]]]
    committed_offsets: Callable[[list[TopicPartition]], list[TopicPartition]]
    read_changelog: Callable[[str, dict[int, int], bool, str], ChangelogRead] | None = None


def cluster_calls(settings: ScorerSettings) -> ClusterCalls:
    config = restore_config(settings)
    return ClusterCalls(
        make_admin=lambda: AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers}),
        restore=lambda changelog, partitions: restore_partitions(config, changelog, partitions),
        committed_offsets=lambda partitions: read_committed_offsets(settings, partitions),
        read_changelog=lambda changelog, start, keep, label: read_changelog(
            config, changelog, start, keep, label=label),
    )


def outcome_topics(settings: ScorerSettings) -> OutcomeTopics:
    return OutcomeTopics(
        approved=settings.approved_topic,
        investigate=settings.investigate_topic,
        deadletter=settings.deadletter_topic,
    )


def read_committed_offsets(settings: ScorerSettings, partitions: list[TopicPartition]
                           ) -> list[TopicPartition]:
    """The group's committed offsets, read by a short-lived client outside the group.

    Not through the worker's own consumer: that one is read_committed, so librdkafka asks
    for *stable* offsets, and after a broker restart that fetch timed out for minutes in a
    drill although the old transaction was already resolved (the new producer's
    init_transactions only returns once it is). A fresh client, read_uncommitted, gets the
    committed offsets without waiting; it never joins the group and commits nothing.
    """
    client = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": settings.group_id,
        "isolation.level": "read_uncommitted",
        "enable.auto.commit": False,
        "logger": logging.getLogger("scorer.kafka.consumer"),
    })
    try:
        return client.committed(partitions, timeout=KAFKA_CALL_TIMEOUT_S)
    finally:
        client.close()
