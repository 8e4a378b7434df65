"""One stream-worker process: the real Kafka clients and model client wired into the
scoring loop (:mod:`scorer.loop`), run until a stop signal or a fatal error.

The worker is split by job: :mod:`scorer.kafka_config` (client configuration and the
short-lived clients beside the consumer and producer), :mod:`scorer.calls` (bounded
blocking calls, backoff, Kafka error helpers), :mod:`scorer.worker_metrics` (Prometheus),
:mod:`scorer.loop` (the scoring loop and its recovery), :mod:`scorer.supervisor`
(``--instances N`` processes and stop signals).
"""

from __future__ import annotations

import gc
import logging
import threading

from confluent_kafka import Consumer, KafkaException, Producer

from scorer.calls import kafka_error
from scorer.client import ModelClient
from scorer.collector import BatchCollector
from scorer.kafka_config import cluster_calls, consumer_config, producer_config
from scorer.loop import FatalWorkerError, ScoringLoop
from scorer.worker_metrics import WorkerMetrics
from scorer.worker_settings import ScorerSettings

logger = logging.getLogger(__name__)


def run_worker(
    settings: ScorerSettings,
    instance: int = 0,
    *,
    stop: threading.Event | None = None,
    parent_pid: int | None = None,
) -> int:
    """Run one worker until stopped; returns the process exit code (0 clean, 1 fatal)."""
    stop = stop or threading.Event()
    metrics = WorkerMetrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_host, settings.metrics_port + instance)
    tid = settings.transactional_id(instance)
    client = ModelClient(settings.model_url, settings.model_timeout_s)
    consumer = Consumer(consumer_config(settings, instance))
    config = producer_config(settings, instance)
    try:
        loop = ScoringLoop(
            settings, consumer, lambda: Producer(config), client, metrics, stop, parent_pid,
            cluster=cluster_calls(settings), after_batch=BatchCollector().after_batch,
        )
        loop.subscribe()
        # What exists now (modules, clients) lives as long as the process: frozen out of the
        # collector's reach, a full collection no longer walks it every few batches
        # (measured: ~20% less CPU per claim).
        gc.collect()
        gc.freeze()
        logger.info(
            "worker %d (transactional.id %s) scoring %s -> %s | %s | %s via %s",
            instance, tid, settings.input_topic, settings.approved_topic,
            settings.investigate_topic, settings.deadletter_topic, settings.model_url,
        )
        loop.run()
    except FatalWorkerError as exc:
        logger.error("worker %d (%s) stopped on a fatal error: %s", instance, tid, exc)
        return 1
    except KafkaException as exc:
        logger.error("worker %d (%s) stopped on a Kafka error: %s", instance, tid, kafka_error(exc))
        return 1
    finally:
        consumer.close()
        # Every batch ended in a commit or an abort: the producer holds nothing to deliver.
        client.close()
    logger.info("worker %d (%s) stopped cleanly", instance, tid)
    return 0
