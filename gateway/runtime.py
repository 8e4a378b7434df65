"""Everything a gateway app uses at run time, built once and closed once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.claim_producer import ClaimProducer
from gateway.metrics import GatewayMetrics
from gateway.outcome_consumer import OutcomeConsumer
from gateway.outcome_store import OutcomeStore
from gateway.readiness import ReadinessProbe
from gateway.replies import ReplyConsumer
from gateway.service import SubmissionService
from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from gateway.dispositions import LabelPublisher

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class GatewayRuntime:
    settings: GatewaySettings
    producer: ClaimProducer
    service: SubmissionService
    outcomes: OutcomeStore
    metrics: GatewayMetrics
    readiness: ReadinessProbe
    consumer: OutcomeConsumer | None = None
    labels: LabelPublisher | None = None
    replies: ReplyConsumer | None = None
    clock: Callable[[], datetime] = utc_now
    _closed: bool = field(default=False, init=False)

    def start(self) -> None:
        """Start the reply consumer and the outcome view's consumer (if enabled)."""
        if self.replies is not None:
            self.replies.start()
        if self.consumer is not None:
            self.consumer.start()

    def close(self) -> None:
        """Stop the consumers, flush the producer, close the stores (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.consumer is not None:
            self.consumer.stop()
        if self.replies is not None:
            self.replies.stop()
        self.producer.close()
        if self.labels is not None:
            self.labels.close()
        self.service.store.close()
        self.service.locks.close()
        self.outcomes.close()
        logger.info("gateway closed")
