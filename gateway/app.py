"""The Flask application factory.

``create_app(settings)`` builds the real parts from the settings (model-service client,
Kafka publisher, SQLite stores, outcome-view consumer); tests and benchmarks may inject
their own scorer and publisher. Building the app starts nothing: call
``runtime(app).start()`` to run the outcome view's consumer and ``runtime(app).close()``
at the end.
"""

from __future__ import annotations

import logging
from typing import Final

from flask import Flask, Response, current_app
from flask_openapi3.models.info import Info
from flask_openapi3.models.tag import Tag

from gateway.api import build_api, json_response
from gateway.api_models import Health, Readiness
from gateway.coalesce import CoalescingScorer
from gateway.dispositions import KafkaLabelPublisher, LabelPublisher, build_dispositions_api
from gateway.idempotency import SubmissionStore
from gateway.locks import KeyLocks
from gateway.metrics import GatewayMetrics
from gateway.openapi_docs import GatewayOpenAPI
from gateway.outcome_consumer import OutcomeConsumer
from gateway.outcome_store import OutcomeStore
from gateway.problems import from_query_validation, register_error_handlers
from gateway.publisher import DecisionPublisher, KafkaDecisionPublisher
from gateway.readiness import ReadinessProbe
from gateway.runtime import GatewayRuntime
from gateway.service import Scorer, SubmissionService
from gateway.settings import GatewaySettings
from gateway.web import build_web

logger = logging.getLogger(__name__)

EXTENSION: Final = "claimflow"
OPS_TAG = Tag(name="operations", description="Health, readiness, metrics.")


def create_app(
    settings: GatewaySettings,
    *,
    scorer: Scorer | None = None,
    publisher: DecisionPublisher | None = None,
    metrics: GatewayMetrics | None = None,
    labels: LabelPublisher | None = None,
) -> GatewayOpenAPI:
    if scorer is None:
        from scorer.client import ModelClient  # imported only when the real client is wanted

        scorer = ModelClient(settings.model_url, timeout_s=settings.model_timeout_s)
        if settings.model_batch_max > 1:
            scorer = CoalescingScorer(scorer, settings.model_batch_max, settings.model_callers,
                                      wait_timeout_s=settings.model_timeout_s * 3)
    if publisher is None:
        publisher = KafkaDecisionPublisher(
            settings.kafka_bootstrap_servers, settings.outcome_topics,
            timeout_s=settings.publish_timeout_s,
        )
    metrics = metrics or GatewayMetrics(cache_s=settings.metrics_cache_s)
    rt = build_runtime(settings, scorer, publisher, metrics)
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
    settings: GatewaySettings, scorer: Scorer, publisher: DecisionPublisher,
    metrics: GatewayMetrics,
) -> GatewayRuntime:
    store = SubmissionStore(settings.submissions_db, settings.db_synchronous)
    outcomes = OutcomeStore(settings.outcomes_db, settings.db_synchronous)
    service = SubmissionService(scorer, publisher, store, settings.topic_for,
                                settings.publish_timeout_s,
                                locks=KeyLocks(lock_path=settings.submissions_lock))
    consumer = None
    if settings.view_enabled:
        consumer = OutcomeConsumer(
            outcomes, settings.kafka_bootstrap_servers, settings.outcome_topics,
            settings.view_group_id, on_stored=metrics.on_view_stored,
            stale_after_s=settings.view_stale_s, labels_topic=settings.labels_topic,
        )
    readiness = ReadinessProbe(scorer, publisher, consumer, settings.ready_cache_s)
    return GatewayRuntime(settings, scorer, publisher, service, outcomes, metrics, readiness,
                          consumer)


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
        """Readiness: the model service is ready, the broker has the outcome topics and the
        outcome view is current. Checked at most every GATEWAY_READY_CACHE_S."""
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
