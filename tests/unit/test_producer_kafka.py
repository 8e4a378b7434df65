"""The producer's configuration and delivery accounting (no broker needed)."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, Message

from producer.kafka import DeliveryTracker, SendReport, producer_config
from producer.settings import ProducerSettings


def test_config_is_idempotent_durable_and_batched() -> None:
    settings = ProducerSettings(kafka_bootstrap_servers="b:1")
    config = producer_config(settings, DeliveryTracker())
    assert config["bootstrap.servers"] == "b:1"
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["linger.ms"] == settings.linger_ms
    assert config["compression.type"] == "lz4"
    assert config["delivery.report.only.error"] is True


def test_throttled_streams_do_not_wait_for_batches() -> None:
    settings = ProducerSettings(linger_ms=200)
    assert producer_config(settings, DeliveryTracker(), throttled=True)["linger.ms"] == 5
    low = ProducerSettings(linger_ms=1)
    assert producer_config(low, DeliveryTracker(), throttled=True)["linger.ms"] == 1


def test_tracker_counts_failures_and_logs_where(caplog: pytest.LogCaptureFixture) -> None:
    tracker = DeliveryTracker()
    message = Message(topic="claims", partition=2, key=b"C-1-0000007", value=b"{}")
    tracker.on_delivery(None, message)  # success reports are not counted (nor sent)
    with caplog.at_level(logging.ERROR):
        tracker.on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), message)
    assert tracker.failed == 1
    assert "claims[2] claim_id C-1-0000007: Broker: Message size too large" in caplog.text


def test_fatal_errors_stop_the_run() -> None:
    tracker = DeliveryTracker()
    tracker.on_error(KafkaError(KafkaError._TRANSPORT, "broker down"))
    assert tracker.fatal is None
    tracker.on_error(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    assert tracker.fatal == "fenced"


def test_sent_is_what_the_broker_acknowledged() -> None:
    report = SendReport(topic="claims", total=100, enqueued=80, failed=3, unconfirmed=2,
                        elapsed_s=2.0, interrupted=True, fatal_error=None)
    assert report.sent == 75
    assert report.rate == 37.5
    assert not report.complete
