"""The Flask application factory.

``create_app(settings)`` builds the real parts from the settings (Kafka claim producer,
reply consumer, SQLite stores, outcome-view consumer); tests may inject their own producer
and reply board (and leave the consumers out). Building the app starts nothing: call
``runtime(app).start()`` to run the consumers and ``runtime(app).close()`` at the end.
"""

from __future__ import annotations

import logging
from typing import Final

from flask import Flask, Response, current_app
from flask_openapi3.models.info import Info
from flask_openapi3.models.tag import Tag

from gateway.api import build_api, json_response
from gateway.api_models import Health, Readiness
from gateway.claim_producer import ClaimProducer, KafkaClaimProducer
from gateway.dispositions import KafkaLabelPublisher, LabelPublisher, build_dispositions_api
from gateway.idempotency import SubmissionStore
from gateway.locks import KeyLocks
from gateway.metrics import GatewayMetrics
from gateway.openapi_docs import GatewayOpenAPI
from gateway.outcome_consumer import OutcomeConsumer
from gateway.outcome_store import OutcomeStore
from gateway.problems import from_query_validation, register_error_handlers
from gateway.readiness import Fresh, ReadinessProbe
from gateway.replies import ReplyBoard, ReplyConsumer
from gateway.runtime import GatewayRuntime
from gateway.service import SubmissionService
from gateway.settings import GatewaySettings
from gateway.web import build_web

logger = logging.getLogger(__name__)

EXTENSION: Final = "claimflow"
OPS_TAG = Tag(name="operations", description="Health, readiness, metrics.")


def create_app(
    settings: GatewaySettings,
    *,
    producer: ClaimProducer | None = None,
    board: ReplyBoard | None = None,
    metrics: GatewayMetrics | None = None,
    labels: LabelPublisher | None = None,
) -> GatewayOpenAPI:
    """``board``: given, no reply consumer is built (a test feeds the board itself)."""
    if producer is None:
        producer = KafkaClaimProducer(
            settings.kafka_bootstrap_servers, settings.claims_topic, settings.reply_topics,
            timeout_s=settings.publish_timeout_s,
        )
    metrics = metrics or GatewayMetrics(cache_s=settings.metrics_cache_s)
    rt = build_runtime(settings, producer, board, metrics)
    rt.labels = labels or KafkaLabelPublisher(
        settings.kafka_bootstrap_servers, settings.labels_topic, settings.publish_timeout_s)

    app = GatewayOpenAPI(
        __name__,
        info=Info(title="claimflow gateway", version="1.0.0",
                  description="Submit health-insurance claims for triage and read outcomes."),
        security_schemes={"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        doc_prefix="/docs",
        validation_error_callback=from_query_validation,
    )
    app.max_batch = settings.max_batch
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Swagger UI reads the same document as everyone else.
    app.config["SWAGGER_CONFIG"] = {"url": "/openapi.json"}
    app.extensions[EXTENSION] = rt

    register_error_handlers(app)
    metrics.install(app)
    app.register_api(build_api(rt))
    app.register_api(build_dispositions_api(rt, rt.labels))
    register_ops(app, rt)
    app.register_blueprint(build_web(rt))

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    return app


def build_runtime(
    settings: GatewaySettings, producer: ClaimProducer, board: ReplyBoard | None,
    metrics: GatewayMetrics,
) -> GatewayRuntime:
    store = SubmissionStore(settings.submissions_db, settings.db_synchronous)
    outcomes = OutcomeStore(settings.outcomes_db, settings.db_synchronous)
    replies = None
    if board is None:
        board = ReplyBoard()
        replies = ReplyConsumer(
            board, settings.kafka_bootstrap_servers, settings.reply_topics,
            settings.deadletter_topic, max_wait_ms=settings.reply_max_wait_ms,
            stale_after_s=settings.view_stale_s,
        )
    service = SubmissionService(producer, store, outcomes, board, settings.publish_timeout_s,
                                settings.decision_timeout_s,
                                locks=KeyLocks(lock_path=settings.submissions_lock))
    consumer = None
    if settings.view_enabled:
        consumer = OutcomeConsumer(
            outcomes, settings.kafka_bootstrap_servers, settings.outcome_topics,
            settings.view_group_id, on_stored=metrics.on_view_stored,
            stale_after_s=settings.view_stale_s, labels_topic=settings.labels_topic,
            shadow_topic=settings.shadow_topic or None,
        )
    watched: dict[str, Fresh] = {}
    if replies is not None:
        watched["replies"] = replies
    if consumer is not None:
        watched["outcome_view"] = consumer
    readiness = ReadinessProbe(producer, watched, settings.ready_cache_s)
    return GatewayRuntime(settings, producer, service, outcomes, metrics, readiness,
                          consumer=consumer, replies=replies)


def runtime(app: Flask) -> GatewayRuntime:
    rt = app.extensions[EXTENSION]
    assert isinstance(rt, GatewayRuntime)
    return rt


def register_ops(app: GatewayOpenAPI, rt: GatewayRuntime) -> None:
    @app.get("/healthz", tags=[OPS_TAG], operation_id="healthz", responses={200: Health})
    def healthz() -> Response:
        """Liveness: the process answers HTTP."""
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=[OPS_TAG], operation_id="readyz",
             responses={200: Readiness, 503: Readiness})
    def readyz() -> Response:
        """Readiness: the broker answers and has the claims, outcome and dead-letter topics
        (checked at most every GATEWAY_READY_CACHE_S); the reply consumer and the outcome
        view are current."""
        result = rt.readiness.check()
        return json_response({"ready": result.ready, "checks": result.checks},
                             status=200 if result.ready else 503)

    @app.get("/openapi.json", doc_ui=False)
    def openapi_json() -> Response:
        return json_response(current_app_openapi().api_doc)

    @app.get("/metrics", doc_ui=False)
    def metrics() -> Response:
        return rt.metrics.exposition()


def current_app_openapi() -> GatewayOpenAPI:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    assert isinstance(app, GatewayOpenAPI)
    return app
