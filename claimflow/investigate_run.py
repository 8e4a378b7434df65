"""``claimflow investigate``: a simulated team of investigators working the queue.

The shell around :mod:`claimflow.investigate`. One consumer (read_committed, no consumer
group offsets: it assigns every partition and starts from the beginning) reads three topics:

- ``claims.labels`` first, to its end, so claims that already have a label (a person's, or an
  earlier run's) are never answered again; then on, to notice labels written meanwhile;
- ``claims.investigate``: the queue. Decisions submitted through the gateway are left to
  people: their claims never passed the claims topic, so no ground truth exists for them;
- ``claims``: the ground truth. The scorer does not copy the producer's ``is_anomaly`` /
  ``pattern`` headers onto its decisions, so the team joins by claim_id: it keeps the truth
  of every claim that carries those headers (about 100 bytes per claim in memory).

A due decision whose claim has not been read yet waits; once the consumer has read the
claims topic to its end (checked against the high watermarks) and the truth is still
missing, the claim was produced without labels and the team skips it (counted, logged).

Labels go to ``claims.labels`` keyed by claim_id through an idempotent producer and are
flushed before the next poll. A restart re-reads everything (a demo tool: each claim is
validated to learn its claim_id, ~60k claims/s on this 2-core machine) and answers only
unlabelled claims.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from claimflow.investigate import (
    INVESTIGATOR,
    Backlog,
    DailyCapacity,
    Truth,
    answer,
    plan,
    truth_from_headers,
)
from claimflow.logging_setup import configure_logging
from claimflow.settings import BACKLOG_READER_CONFIG, TOPICS, CommonSettings
from schemas import ContractError, Decision, Label, parse_claim

logger = logging.getLogger(__name__)

CATCH_UP_CHECK_S = 1.0
LABELS_READ_TIMEOUT_S = 120.0


class InvestigateSettings(CommonSettings):
    """The simulated team (``claimflow investigate``); options override them."""

    model_config = SettingsConfigDict(env_prefix="INVESTIGATE_", frozen=True, extra="ignore")

    per_day: int = Field(default=50, ge=0, le=10_000_000,
                         description="Claims the team answers per simulated day.")
    delay_days: float = Field(
        default=0.5, ge=0, le=365,
        description="Simulated days between a claim's decision and its answer.")
    day_s: float = Field(default=60.0, gt=0, le=86_400,
                         description="Wall-clock seconds of one simulated day.")
    claims_topic: str = Field(default=TOPICS.claims,
                              description="Claims with ground-truth headers (is_anomaly, pattern).")
    investigate_topic: str = Field(default=TOPICS.investigate,
                                   description="The queue: decisions to investigate.")
    labels_topic: str = Field(default=TOPICS.labels,
                              description="Where the labels go (compacted, keyed by claim_id).")
    summary_interval_s: float = Field(default=10.0, gt=0,
                                      description="Seconds between two progress lines.")


@dataclass
class TeamCounts:
    answered: int = 0
    fraud: int = 0
    legitimate: int = 0
    skipped_no_truth: int = 0
    skipped_gateway: int = 0
    invalid: int = 0

    def line(self, backlog: int) -> str:
        return (f"answered {self.answered} (fraud {self.fraud}, legitimate {self.legitimate}), "
                f"waiting {backlog}, skipped {self.skipped_no_truth} without ground truth and "
                f"{self.skipped_gateway} gateway claims, {self.invalid} invalid messages")


class Team:
    """Runs until :meth:`stop` (or ``max_labels`` written)."""

    def __init__(self, settings: InvestigateSettings, *, clock: Callable[[], float] = time.time,
                 max_labels: int | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.max_labels = max_labels
        self.capacity = DailyCapacity(settings.per_day, settings.day_s, start=clock())
        self.backlog = Backlog(settings.delay_days * settings.day_s)
        self.truth: dict[str, Truth] = {}
        self._distinct: dict[Truth, Truth] = {}
        self.closed: set[str] = set()
        self.waiting: list[Decision] = []  # due, truth not read yet
        self.counts = TeamCounts()
        self._stop = threading.Event()
        bootstrap = settings.kafka_bootstrap_servers
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            # Required by librdkafka; nothing is committed under it (partitions are assigned).
            "group.id": f"claimflow-investigate-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "client.id": "claimflow-investigate",
            **BACKLOG_READER_CONFIG,  # it starts with the queue's whole history
        })
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "client.id": "claimflow-investigate",
        })

    def stop(self) -> None:
        self._stop.set()

    # -- reading -----------------------------------------------------------------------

    def _partitions(self, topic: str) -> list[TopicPartition]:
        meta = self.consumer.list_topics(topic, timeout=10)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            raise click.ClickException(f"topic {topic} does not exist (claimflow topics create)")
        return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(info.partitions)]

    def _read_labels_to_end(self) -> list[TopicPartition]:
        """Every label written so far, so that labelled claims are not answered again."""
        parts = self._partitions(self.settings.labels_topic)
        ends = {tp.partition: self.consumer.get_watermark_offsets(tp, timeout=10)[1]
                for tp in parts}
        self.consumer.assign(parts)
        positions = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + LABELS_READ_TIMEOUT_S
        while any(positions[p] < ends[p] for p in ends) and not self._stop.is_set():
            if time.monotonic() > deadline:  # never seen; better a warning than a hang
                logger.warning("labels topic not read to its end in %.0f s; going on with %d "
                               "labelled claims", LABELS_READ_TIMEOUT_S, len(self.closed))
                break
            for msg in self.consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    self._on_label(msg)
                    positions[msg.partition() or 0] = (msg.offset() or 0) + 1
            positions.update({tp.partition: tp.offset for tp in self.consumer.position(parts)
                              if tp.offset >= 0})
        logger.info("%d claims already labelled", len(self.closed))
        return [TopicPartition(tp.topic, tp.partition, max(tp.offset, OFFSET_BEGINNING))
                for tp in self.consumer.position(parts)]

    def _on_label(self, msg: Message) -> None:
        key = msg.key()
        if key:
            self.closed.add(key.decode("utf-8", "replace"))

    def _on_claim(self, msg: Message) -> None:
        truth = truth_from_headers(msg.headers())
        if truth is None:
            return
        try:
            claim = parse_claim(msg.value() or b"")
        except ContractError:
            self.counts.invalid += 1  # the scorer dead-letters it; it is never queued
            return
        # A handful of distinct truths: one shared object each, not one per claim.
        self.truth[claim.claim_id] = self._distinct.setdefault(truth, truth)

    def _on_decision(self, msg: Message) -> None:
        try:
            decision = Decision.from_json(msg.value() or b"")
        except ContractError as exc:
            self.counts.invalid += 1
            logger.warning("skipping %s[%s]@%s: %s", msg.topic(), msg.partition(),
                           msg.offset(), exc)
            return
        if decision.source.kind == "gateway":
            self.counts.skipped_gateway += 1
            return
        if decision.decision == "investigate" and decision.claim_id not in self.closed:
            self.backlog.add(decision)

    def _dispatch(self, messages: list[Message]) -> None:
        s = self.settings
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("consumer: %s", err.str())
                continue
            topic = msg.topic()
            if topic == s.claims_topic:
                self._on_claim(msg)
            elif topic == s.investigate_topic:
                self._on_decision(msg)
            elif topic == s.labels_topic:
                self._on_label(msg)

    def _claims_read_to_end(self, parts: list[TopicPartition]) -> bool:
        positions = {tp.partition: tp.offset for tp in self.consumer.position(parts)}
        for tp in parts:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            position = positions.get(tp.partition, -1)
            if high > low and position < high:
                return False
        return True

    # -- answering ---------------------------------------------------------------------

    def _answer_due(self, claims_parts: list[TopicPartition], checked_at: list[float]) -> None:
        now = self.clock()
        for decision in self.waiting:  # their truth may have arrived since
            self.backlog.add(decision)
        self.waiting = []
        answers, unknown = plan(self.backlog, self.capacity, now, self.truth, self.closed)
        for decision, truth in answers:
            self._publish(decision, truth)
        if answers:
            self.producer.flush(30)
        if unknown and time.monotonic() - checked_at[0] >= CATCH_UP_CHECK_S:
            checked_at[0] = time.monotonic()
            if self._claims_read_to_end(claims_parts):
                # Everything produced before these decisions has been read: no labels exist.
                for decision in unknown:
                    if decision.claim_id not in self.truth:
                        self.counts.skipped_no_truth += 1
                        logger.info("no ground truth for claim %s; skipped", decision.claim_id)
                unknown = [d for d in unknown if d.claim_id in self.truth]
        self.waiting = unknown

    def _publish(self, decision: Decision, truth: Truth) -> None:
        disposition, note = answer(truth)
        label = Label.answering(decision, disposition, investigator=INVESTIGATOR, note=note,
                                decided_at=datetime.fromtimestamp(self.clock(), UTC))
        self.producer.produce(self.settings.labels_topic, key=label.claim_id.encode(),
                              value=label.to_json())
        self.closed.add(label.claim_id)
        self.counts.answered += 1
        if disposition == "fraud":
            self.counts.fraud += 1
        else:
            self.counts.legitimate += 1

    def run(self) -> TeamCounts:
        s = self.settings
        try:
            labels_at = self._read_labels_to_end()
            claims_parts = self._partitions(s.claims_topic)
            self.consumer.assign([*labels_at, *self._partitions(s.investigate_topic),
                                  *claims_parts])
            # Day 0 begins now, when the queue is in reach (not when the process started).
            self.capacity = DailyCapacity(s.per_day, s.day_s, start=self.clock())
            logger.info("team at work: %d claims per day of %.0f s, answering %.2f days after "
                        "the decision", s.per_day, s.day_s, s.delay_days)
            checked_at = [0.0]
            next_summary = time.monotonic() + s.summary_interval_s
            while not self._stop.is_set():
                self._dispatch(self.consumer.consume(1000, timeout=0.2))
                self._answer_due(claims_parts, checked_at)
                if self.max_labels is not None and self.counts.answered >= self.max_labels:
                    break
                if time.monotonic() >= next_summary:
                    next_summary = time.monotonic() + s.summary_interval_s
                    logger.info("%s", self.counts.line(len(self.backlog) + len(self.waiting)))
        except KafkaException as exc:
            raise click.ClickException(f"kafka: {exc}") from exc
        finally:
            remaining = self.producer.flush(30)
            if remaining:
                logger.error("%d labels not confirmed by the broker", remaining)
            self.consumer.close()
        logger.info("stopped: %s", self.counts.line(len(self.backlog) + len(self.waiting)))
        return self.counts


@click.command("investigate")
@click.option("--per-day", type=click.IntRange(min=0), default=None,
              help="Claims answered per simulated day  [default: INVESTIGATE_PER_DAY, 50]")
@click.option("--delay", type=click.FloatRange(min=0), default=None,
              help="Simulated days from a claim's decision to its answer  "
                   "[default: INVESTIGATE_DELAY_DAYS, 0.5]")
@click.option("--day-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-clock seconds of one simulated day  [default: INVESTIGATE_DAY_S, 60]")
@click.option("--max-labels", type=click.IntRange(min=1), default=None,
              help="Stop after writing this many labels.")
@click.option("--log-level", default="INFO", show_default=True, help="Python log level.")
def investigate(per_day: int | None, delay: float | None, day_seconds: float | None,
                max_labels: int | None, log_level: str) -> None:
    """Simulated investigators: work the claims.investigate queue like a team with a daily
    capacity and answer from the producer's ground-truth headers, writing Labels (investigator
    "simulated") to claims.labels. A simulated day is --day-seconds of wall-clock time."""
    configure_logging(log_level.upper())
    overrides: dict[str, Any] = {
        name: value for name, value in
        (("per_day", per_day), ("delay_days", delay), ("day_s", day_seconds))
        if value is not None}
    # Validated like the environment's values (model_copy would not check them).
    settings = InvestigateSettings.model_validate(
        {**InvestigateSettings().model_dump(), **overrides})
    team = Team(settings, max_labels=max_labels)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: stopping", signum)
        team.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    team.run()
