"""Metadata probes: does a broker answer at this bootstrap address?"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from broker.errors import BrokerError

if TYPE_CHECKING:
    from confluent_kafka.admin._metadata import ClusterMetadata

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1


def admin_client(bootstrap: str) -> AdminClient:
    # librdkafka logs through this logger (served on poll) instead of writing raw lines to
    # stderr for every refused connection while a broker is still starting.
    return AdminClient({"bootstrap.servers": bootstrap},
                       logger=logging.getLogger("broker.librdkafka"))


def tcp_open(bootstrap: str, timeout_s: float = 0.5) -> bool:
    """Whether the first bootstrap address accepts TCP connections."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def metadata(bootstrap: str, timeout_s: float = 5.0) -> ClusterMetadata:
    """Cluster metadata with at least one broker, or BrokerError."""
    try:
        meta = admin_client(bootstrap).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(f"no metadata from {bootstrap}: {exc.args[0]}") from exc
    if not meta.brokers:
        raise BrokerError(f"metadata from {bootstrap} lists no broker")
    return meta


def metadata_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    if not tcp_open(bootstrap):
        return False
    try:
        metadata(bootstrap, timeout_s)
    except BrokerError:
        return False
    return True


def wait_for_metadata(
    bootstrap: str,
    timeout_s: float,
    *,
    alive: Callable[[], bool] | None = None,
) -> ClusterMetadata:
    """Poll until the broker answers metadata requests; fail at the deadline or when
    ``alive()`` says the process behind it has died."""
    deadline = time.monotonic() + timeout_s
    last_error = "nothing listens yet"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BrokerError(f"the broker for {bootstrap} exited while starting")
        if tcp_open(bootstrap):
            try:
                remaining = deadline - time.monotonic()
                return metadata(bootstrap, timeout_s=min(2.0, max(0.1, remaining)))
            except BrokerError as exc:
                last_error = str(exc)
        time.sleep(POLL_INTERVAL_S)
    raise BrokerError(f"no metadata from {bootstrap} within {timeout_s:.0f} s ({last_error})")
