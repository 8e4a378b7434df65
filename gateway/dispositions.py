"""Investigators' dispositions: ``POST /api/v1/claims/<claim_id>/disposition`` (and its
``GET``), publishing a :class:`schemas.Label` to the compacted labels topic.

Rules (docs/gateway.md, "Dispositions"):
- the claim must have a decision the gateway knows (outcome view, or this gateway's own
  published record): 404 otherwise;
- only a claim the model sent to investigation can be labelled: an approved claim is a 409
  ``not-investigated`` (it was never in an investigator's queue; the contract's
  ``answers.decision`` can carry "approve" should audits of approved claims come later);
- a new label replaces the claim's earlier one (the topic is compacted by claim_id): posting
  again is how a needs_info claim is closed, or a mistake corrected. Every accepted post is
  published, confirmed by the broker, and answered 201 with the label.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from flask import Response, request
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import Field, ValidationError

from gateway.api import JSON_TYPES, read_body, security_for
from gateway.api_models import ClaimPath
from gateway.auth import require_key
from gateway.intake import MalformedJsonError, parse_json
from gateway.openapi_docs import problem_responses
from gateway.problems import ProblemError
from gateway.runtime import GatewayRuntime
from schemas import ContractError, Decision, Disposition, Label
from schemas.common import Contract
from schemas.label import INVESTIGATOR_MAX_LENGTH, NOTE_MAX_LENGTH

logger = logging.getLogger(__name__)

LABEL_TAG = Tag(name="dispositions", description="Investigators' dispositions of claims.")


class DispositionRequest(Contract):
    """An investigator's disposition of one claim (the body of the POST)."""

    disposition: Disposition = Field(
        description="fraud or legitimate close the claim; needs_info keeps it open.")
    note: str = Field(default="", max_length=NOTE_MAX_LENGTH, description="Free text.")
    investigator: str = Field(min_length=1, max_length=INVESTIGATOR_MAX_LENGTH,
                              description="Who decided (a name as given).")


class LabelUnavailable(Exception):  # noqa: N818 - mirrors gateway.publisher.PublishUnavailable
    """The broker did not confirm the label in time."""


class LabelPublisher(Protocol):
    def publish(self, label: Label, timeout_s: float) -> None:
        """Deliver the label or raise :class:`LabelUnavailable`."""

    def close(self) -> None: ...


class KafkaLabelPublisher:
    """An idempotent producer (acks=all) created on the first label, so a gateway nobody
    labels through opens no extra broker connection. Labels are rare (people click them):
    each publish waits for its own delivery report by polling the producer."""

    def __init__(self, bootstrap: str, topic: str, timeout_s: float) -> None:
        self._config = {
            "bootstrap.servers": bootstrap,
            "client.id": "claimflow-gateway-labels",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,
            "message.timeout.ms": int(timeout_s * 1000),
        }
        self._topic = topic
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def _get(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(self._config)
            return self._producer

    def publish(self, label: Label, timeout_s: float) -> None:
        producer = self._get()
        done = threading.Event()
        outcome: list[KafkaError | None] = []

        def report(err: KafkaError | None, _msg: Message) -> None:
            outcome.append(err)
            done.set()

        try:
            producer.produce(self._topic, key=label.claim_id.encode(), value=label.to_json(),
                             on_delivery=report)
        except (BufferError, KafkaException) as exc:
            raise LabelUnavailable(f"cannot enqueue label: {exc}") from exc
        # Any thread's poll serves every pending report; each waits for its own.
        self._wait(producer, done, timeout_s + 1.0)
        if not outcome:
            raise LabelUnavailable(f"no delivery report for the label of {label.claim_id}")
        if outcome[0] is not None:
            raise LabelUnavailable(f"{self._topic}: label of {label.claim_id} not delivered: "
                                   f"{outcome[0].str()}")

    @staticmethod
    def _wait(producer: Producer, done: threading.Event, budget_s: float) -> None:
        waited = 0.0
        while not done.is_set() and waited < budget_s:
            producer.poll(0.05)
            waited += 0.05

    def close(self) -> None:
        with self._lock:
            if self._producer is not None and self._producer.flush(10):
                logger.warning("labels still unconfirmed at shutdown")


def parse_disposition(body: bytes) -> DispositionRequest:
    """Bytes -> a valid request; a 400 problem for what is not JSON, 422 (with paths) for a
    body that breaks the rules."""
    try:
        data = parse_json(body)
    except MalformedJsonError as exc:
        raise ProblemError(400, str(exc), slug="malformed-json", title="Malformed JSON") from exc
    try:
        return DispositionRequest.model_validate(data)
    except ValidationError as exc:
        errors = ContractError.from_validation_error("disposition", exc).errors
        raise ProblemError(422, "the disposition is not valid", slug="contract-violation",
                           title="Contract violation", errors=errors) from exc


def find_decision(rt: GatewayRuntime, claim_id: str) -> Decision | None:
    """The claim's decision as the gateway knows it (the same sources as the claim lookup)."""
    body = rt.outcomes.get(claim_id)
    if body is None:
        stored = rt.service.lookup(claim_id)
        if stored is not None:
            body = stored.decision_json  # None until the stream's decision was seen
    return Decision.from_json(body) if body is not None else None


def build_dispositions_api(rt: GatewayRuntime, publisher: LabelPublisher) -> APIBlueprint:
    settings = rt.settings
    api = APIBlueprint("dispositions", __name__, url_prefix="/api/v1")
    read_keys = [settings.read_api_key, settings.api_key]

    @api.post(
        "/claims/<claim_id>/disposition", tags=[LABEL_TAG],
        security=security_for(settings.api_key), operation_id="set_disposition",
        responses={201: Label, **problem_responses(400, 401, 404, 409, 413, 415, 422, 503)},
        openapi_extensions={"requestBody": {
            "required": True,
            "content": {"application/json": {"schema": DispositionRequest.model_json_schema()}},
        }},
    )
    def set_disposition(path: ClaimPath) -> Response:
        """Record an investigator's disposition of a claim sent to investigation.

        Publishes a Label to the labels topic (compacted by claim_id: a later disposition
        replaces this one). 404 for a claim without a decision; 409 for a claim that was
        approved rather than investigated.
        """
        require_key(request.headers, [settings.api_key])
        body = read_body(JSON_TYPES)
        wanted = parse_disposition(body)
        decision = find_decision(rt, path.claim_id)
        if decision is None:
            raise ProblemError(404, f"no decision for claim_id {path.claim_id}",
                               slug="unknown-claim", extra={"claim_id": path.claim_id})
        if decision.decision != "investigate":
            raise ProblemError(
                409, f"claim {path.claim_id} was approved, not sent to investigation; only "
                "investigated claims take a disposition", slug="not-investigated",
                title="Claim not investigated", extra={"claim_id": path.claim_id})
        label = Label.answering(decision, wanted.disposition, investigator=wanted.investigator,
                                note=wanted.note, decided_at=rt.clock())
        try:
            publisher.publish(label, settings.publish_timeout_s)
        except LabelUnavailable as exc:
            rt.metrics.unavailable.labels("broker").inc()
            logger.warning("label not published: %s", exc)
            raise ProblemError(503, "the disposition could not be published; retry later",
                               slug="broker-unavailable",
                               headers={"Retry-After": str(settings.retry_after_s)}) from exc
        logger.info("claim %s labelled %s by %s", label.claim_id, label.disposition,
                    label.investigator)
        return Response(label.to_json(), status=201, mimetype="application/json",
                        headers={"Location": f"/api/v1/claims/{label.claim_id}/disposition"})

    @api.get(
        "/claims/<claim_id>/disposition", tags=[LABEL_TAG],
        security=security_for(settings.read_api_key or settings.api_key),
        operation_id="get_disposition",
        responses={200: Label, **problem_responses(401, 404, 422)},
    )
    def get_disposition(path: ClaimPath) -> Response:
        """The claim's latest disposition as the outcome view has read it from the labels
        topic (404 when it has none yet)."""
        require_key(request.headers, read_keys)
        label = rt.outcomes.label(path.claim_id)
        if label is None:
            raise ProblemError(404, f"no disposition for claim_id {path.claim_id}",
                               slug="no-disposition", extra={"claim_id": path.claim_id})
        return Response(label, mimetype="application/json")

    return api

