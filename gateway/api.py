"""The JSON API under ``/api/v1``: submissions and the outcome view's reads.

Views are thin: parse (``gateway.intake``), call the service, shape the answer. Errors are
raised as :class:`ProblemError` and rendered by ``gateway.problems``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import orjson
from flask import Response, request
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from werkzeug.routing import BaseConverter

from gateway.api_models import (
    ClaimPath,
    CsvResult,
    OutcomePage,
    OutcomeQuery,
    Pending,
    ShadowStats,
    Stats,
    StatsQuery,
    SubmitResult,
    csv_body_schema,
)
from gateway.auth import require_key
from gateway.claim_producer import PublishUnavailable
from gateway.csv_claims import CsvFileError, CsvLine, parse_csv
from gateway.intake import (
    BATCH_KEY,
    Intake,
    InvalidSubmissionError,
    MalformedJsonError,
    parse_batch,
    parse_claim,
)
from gateway.openapi_docs import (
    CLAIM_BATCH_REF,
    CLAIM_SUBMISSION_REF,
    DECISION_REF,
    PENDING_REF,
    SUBMIT_RESULT_REF,
    problem_responses,
)
from gateway.problems import ProblemError
from gateway.runtime import GatewayRuntime
from gateway.service import ClaimConflictError, Submitted
from schemas import DeadLetter
from schemas.common import FieldError

logger = logging.getLogger(__name__)

JSON_TYPES: Final = ("application/json",)
CSV_TYPES: Final = ("text/csv", "application/csv")

class ClaimLookupConverter(BaseConverter):
    """A claim_id in the lookup path, except the submission routes' own names: otherwise
    ``GET /claims/batch`` reached the lookup, and ``OPTIONS /claims/batch`` advertised a GET
    that the published document does not have (schemathesis found it). A claim whose id is
    ``batch`` or ``csv`` is still decided and listed in /outcomes; only this path skips it."""

    regex = r"(?!(?:batch|csv)$)[^/]+"  # the pattern itself is checked by ClaimPath (422)


SUBMIT_TAG = Tag(name="submit", description="Submit claims for a decision.")
READ_TAG = Tag(name="outcomes", description="Decisions seen on the outcome topics.")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json",
                    headers=headers)


def decision_fragment(result: Submitted) -> orjson.Fragment:
    # The decision's JSON as the stream published it, spliced in without a dict round trip.
    assert result.body is not None
    return orjson.Fragment(result.body)


def claim_location(claim_id: str) -> str:
    return f"/api/v1/claims/{claim_id}"


def pending_response(claim_id: str) -> Response:
    location = claim_location(claim_id)
    return json_response(Pending(claim_id=claim_id, location=location).model_dump(),
                         status=202, headers={"Location": location,
                                              "Retry-After": "1"})


def require_content_type(accepted: Sequence[str]) -> None:
    if request.mimetype not in accepted:
        got = request.mimetype or "none"
        raise ProblemError(415, f"Content-Type must be {' or '.join(accepted)}, not {got}",
                           slug="unsupported-media-type",
                           headers={"Accept-Post": ", ".join(accepted)})


@contextmanager
def upstream_errors(rt: GatewayRuntime) -> Iterator[None]:
    """Map what the broker does to HTTP answers."""
    retry = {"Retry-After": str(rt.settings.retry_after_s)}
    try:
        yield
    except PublishUnavailable as exc:
        rt.metrics.unavailable.labels("broker").inc()
        logger.warning("produce failed: %s", exc)
        raise ProblemError(503, "the claim could not be handed to the stream; retry later "
                           "(the same claim_id is decided once)", slug="broker-unavailable",
                           headers=retry) from exc


def count_results(rt: GatewayRuntime, results: Sequence[Submitted]) -> None:
    for result in results:
        if result.decision is not None:
            rt.metrics.decisions.labels(result.decision.decision,
                                        "true" if result.replayed else "false").inc()
        elif result.pending:
            rt.metrics.undecided.labels("timeout").inc()
        elif result.dead_letter is not None:
            rt.metrics.undecided.labels("dead_letter").inc()


def read_body(accepted: Sequence[str]) -> bytes:
    require_content_type(accepted)
    return request.get_data(cache=False)  # 413 above MAX_CONTENT_LENGTH


def build_api(rt: GatewayRuntime) -> APIBlueprint:
    settings = rt.settings
    api = APIBlueprint("api", __name__, url_prefix="/api/v1")

    @api.record_once
    def _converters(state: Any) -> None:
        state.app.url_map.converters["lookup_id"] = ClaimLookupConverter

    # Documented only when a key is configured, so the docs page tells the truth.
    submit_security = security_for(settings.api_key)
    # Reads return every claim's data: a gateway that guards submissions guards them too.
    read_keys = [settings.read_api_key, settings.api_key]
    read_security = security_for(settings.read_api_key or settings.api_key)

    def submit_key() -> None:
        require_key(request.headers, [settings.api_key])

    def read_key() -> None:
        require_key(request.headers, read_keys)

    def submit(intakes: list[Intake], on_conflict: Any = "raise",
               where: Callable[[int], list[str | int]] = lambda _: []) -> list[Submitted]:
        """``where(i)``: the path of the i-th claim in the body (``claims.3`` in a batch).
        With ``on_conflict="raise"`` conflicts are a 409 and dead letters a 422; with
        ``"report"`` (CSV) they stay in the results, one per line."""
        with upstream_errors(rt):
            try:
                results = rt.service.submit(intakes, on_conflict)
            except ClaimConflictError as exc:
                raise conflict_problem(exc.claim_ids) from exc
        count_results(rt, results)
        if on_conflict == "raise":
            late = list(dict.fromkeys(r.claim_id for r in results if r.conflict))
            if late:  # decided on the stream for another payload while this one was in flight
                rt.metrics.undecided.labels("conflict").inc(len(late))
                raise conflict_problem(late)
            if any(r.dead_letter is not None for r in results):
                raise dead_letter_problem(intakes, results, where)
        return results

    @api.post(
        "/claims", tags=[SUBMIT_TAG], security=submit_security,
        operation_id="submit_claim",
        responses={
            200: {"description": "Already decided: the first decision (nothing produced "
                  "again).",
                  "content": {"application/json": {"schema": DECISION_REF}}},
            201: {"description": "Produced to the claims topic and decided by the stream now.",
                  "content": {"application/json": {"schema": DECISION_REF}}},
            202: {"description": "Produced to the claims topic, not decided within "
                  "GATEWAY_DECISION_TIMEOUT_S: poll the Location.",
                  "headers": {"Location": {"schema": {"type": "string"}}},
                  "content": {"application/json": {"schema": PENDING_REF}}},
            **problem_responses(400, 401, 409, 413, 415, 422, 503),
        },
        openapi_extensions={"requestBody": {
            "required": True, "content": {"application/json": {"schema": CLAIM_SUBMISSION_REF}},
        }},
    )
    def submit_claim() -> Response:
        """Hand one claim to the stream and answer with the stream's decision.

        Idempotent on claim_id, whichever path the claim came in on: the same claim again
        returns its first decision (200); another claim under a used claim_id is a 409. No
        decision within GATEWAY_DECISION_TIMEOUT_S: 202 with a Location to poll.
        """
        submit_key()
        body = read_body(JSON_TYPES)
        with intake_errors():
            intake = parse_claim(body, now=rt.clock())
        (result,) = submit([intake])
        if result.pending:
            return pending_response(result.claim_id)
        assert result.body is not None
        headers = {"Location": claim_location(result.claim_id)}
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(result.body, status=200 if result.replayed else 201,
                        mimetype="application/json", headers=headers)

    @api.post(
        "/claims/batch", tags=[SUBMIT_TAG], security=submit_security,
        operation_id="submit_batch",
        responses={200: SubmitResult,
                   202: {"description": "Some claims were not decided within "
                         "GATEWAY_DECISION_TIMEOUT_S: `pending` lists them (poll each).",
                         "content": {"application/json": {"schema": SUBMIT_RESULT_REF}}},
                   **problem_responses(400, 401, 409, 413, 415, 422, 503)},
        openapi_extensions={"requestBody": {
            "required": True, "content": {"application/json": {"schema": CLAIM_BATCH_REF}},
        }},
    )
    def submit_batch() -> Response:
        """Hand up to GATEWAY_MAX_BATCH claims to the stream; answer with its decisions.

        All claims must be valid (else 422 with paths like claims.3.patient_age); a used
        claim_id with different content fails the whole batch (409) before anything is
        produced. Claims the stream sets aside make the answer a 422 (the others are
        decided: resubmitting them replays). Claims undecided by the deadline: 202.
        """
        submit_key()
        body = read_body(JSON_TYPES)
        with intake_errors():
            intakes = parse_batch(body, now=rt.clock(), max_batch=settings.max_batch)
        results = submit(intakes, where=lambda i: [BATCH_KEY, i])
        pending = list(dict.fromkeys(r.claim_id for r in results if r.pending))
        return json_response({
            "decisions": [decision_fragment(r) for r in results if r.decision],
            "replayed": list(dict.fromkeys(r.claim_id for r in results if r.replayed)),
            "pending": pending,
        }, status=202 if pending else 200)

    @api.post(
        "/claims/csv", tags=[SUBMIT_TAG], security=submit_security,
        operation_id="submit_csv",
        responses={200: CsvResult, **problem_responses(401, 413, 415, 422, 503)},
        openapi_extensions={"requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": csv_body_schema(settings.max_batch)}},
            "description": "A header line naming the claim fields (claim_id and submitted_at "
            "optional; label columns is_anomaly and pattern ignored; any order), then one "
            "claim per line. The pattern shows the canonical column order.",
        }},
    )
    def submit_csv() -> Response:
        """Hand the claims of a CSV file to the stream; each data line gets its decision,
        its error, or `pending` (undecided by the deadline)."""
        submit_key()
        body = read_body(CSV_TYPES)
        try:
            lines = parse_csv(body, now=rt.clock(), max_rows=settings.max_batch)
        except CsvFileError as exc:
            raise ProblemError(422, "the CSV file cannot be used", slug="invalid-csv",
                               errors=exc.errors) from exc
        valid = [line.intake for line in lines if line.intake is not None]
        line_of = [line.line for line in lines if line.intake is not None]
        results = (submit(valid, on_conflict="report", where=lambda i: ["line", line_of[i]])
                   if valid else [])
        return json_response(csv_answer(lines, results))

    @api.get(
        "/outcomes", tags=[READ_TAG], security=read_security,
        operation_id="list_outcomes",
        responses={200: OutcomePage, **problem_responses(401, 422)},
    )
    def list_outcomes(query: OutcomeQuery) -> Response:
        """Decisions seen on the outcome topics, newest first (keyset pagination), each with
        the claim's latest disposition."""
        read_key()
        page = rt.outcomes.page(query.decision, query.limit, query.cursor,
                                only_open=query.status == "open")
        return json_response({"items": page.items, "next_cursor": page.next_cursor})

    @api.get(
        "/claims/<lookup_id:claim_id>", tags=[READ_TAG], security=read_security,
        operation_id="get_claim",
        responses={200: {"description": "The claim's decision.",
                         "content": {"application/json": {"schema": DECISION_REF}}},
                   202: {"description": "Submitted here and handed to the stream, not "
                         "decided yet: poll again.",
                         "content": {"application/json": {"schema": PENDING_REF}}},
                   **problem_responses(401, 404, 422)},
    )
    def get_claim(path: ClaimPath) -> Response:
        """The decision for one claim: from the outcome view, or the one this gateway
        received for a submission; 202 while a submitted claim is still undecided."""
        read_key()
        body = rt.outcomes.get(path.claim_id)
        if body is None:
            stored = rt.service.lookup(path.claim_id)
            if stored is not None and stored.decision_json is not None:
                body = stored.decision_json
            elif stored is not None and stored.produced:
                return pending_response(path.claim_id)
            elif stored is None and (letter := rt.service.dead_letter(path.claim_id)):
                raise set_aside_problem(letter)
        if body is None:
            raise ProblemError(404, f"no decision for claim_id {path.claim_id}",
                               slug="unknown-claim", extra={"claim_id": path.claim_id})
        return Response(body, mimetype="application/json")

    @api.get(
        "/stats", tags=[READ_TAG], security=read_security,
        operation_id="get_stats",
        responses={200: Stats, **problem_responses(401, 422)},
    )
    def get_stats(query: StatsQuery) -> Response:
        """Totals by decision, investigation rate over time, and counts per model version."""
        read_key()
        return json_response(rt.outcomes.stats(rt.clock(), query.bucket_s, query.buckets))

    @api.get(
        "/shadow", tags=[READ_TAG], security=read_security,
        operation_id="get_shadow",
        responses={200: ShadowStats, **problem_responses(401)},
    )
    def get_shadow() -> Response:
        """Shadow scoring: per champion and challenger pair, how often they agree, and the
        precision of each one's investigate decisions on claims with a disposition."""
        read_key()
        return json_response(rt.outcomes.shadow())

    return api


def security_for(key: object | None) -> list[dict[str, list[str]]] | None:
    return [{"apiKey": []}] if key is not None else None


@contextmanager
def intake_errors() -> Iterator[None]:
    try:
        yield
    except MalformedJsonError as exc:
        raise ProblemError(400, str(exc), slug="malformed-json", title="Malformed JSON") from exc
    except InvalidSubmissionError as exc:
        raise ProblemError(422, "the claim violates the contract", slug="contract-violation",
                           title="Contract violation", errors=exc.errors) from exc


def conflict_problem(claim_ids: Sequence[str]) -> ProblemError:
    return ProblemError(
        409, f"claim_id already used for a different claim: {', '.join(claim_ids)}",
        slug="conflict", title="claim_id already used", extra={"claim_ids": list(claim_ids)},
    )


def dead_letter_problem(intakes: Sequence[Intake], results: Sequence[Submitted],
                        where: Callable[[int], list[str | int]]) -> ProblemError:
    """A 422 for claims the stream set aside: ``unsupported-version`` when the served model
    refused them all (at each claim's ``schema_version``, as before the stream decided),
    ``dead-lettered`` otherwise, with the worker's reason."""
    return set_aside_errors_problem(dead_letter_errors(intakes, results, where))


def set_aside_problem(letter: DeadLetter) -> ProblemError:
    """The same 422 for one claim's Location (``GET``), also when its dead letter came after
    the submission was answered 202."""
    loc: list[str | int] = ["schema_version"] if letter.error_kind == "unsupported_version" else []
    return set_aside_errors_problem([{"loc": loc, "type": letter.error_kind,
                                      "msg": letter.error}])


def set_aside_errors_problem(errors: list[FieldError]) -> ProblemError:
    if all(e["type"] == "unsupported_version" for e in errors):
        return ProblemError(
            422, "the served model does not score claims of this contract version",
            slug="unsupported-version", title="Unsupported claim version", errors=errors)
    return ProblemError(
        422, "the stream worker set the claim aside (dead letter); see errors",
        slug="dead-lettered", title="Claim set aside by the stream", errors=errors)


def dead_letter_errors(intakes: Sequence[Intake], results: Sequence[Submitted],
                       where: Callable[[int], list[str | int]]) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, (intake, result) in enumerate(zip(intakes, results, strict=True)):
        letter = result.dead_letter
        if letter is None:
            continue
        loc = [*where(index)]
        if letter.error_kind == "unsupported_version":
            loc.append("schema_version")
        errors.append({"loc": loc, "type": letter.error_kind, "msg": letter.error})
        del intake  # the claim's place in the body is all that is needed
    return errors


def csv_answer(lines: Sequence[CsvLine], results: Sequence[Submitted]) -> dict[str, Any]:
    by_id: dict[str, Submitted] = {r.claim_id: r for r in results}
    rows: list[dict[str, Any]] = []
    for line in lines:
        row: dict[str, Any] = {"line": line.line, "claim_id": line.claim_id,
                               "decision": None, "replayed": False, "pending": False,
                               "error": line.error}
        result = by_id.get(line.claim_id or "") if line.intake is not None else None
        if result is not None and result.conflict:
            row["error"] = f"claim_id {result.claim_id} was already used for a different claim"
        elif result is not None and result.dead_letter is not None:
            letter = result.dead_letter
            row["error"] = f"set aside by the stream ({letter.error_kind}): {letter.error}"
        elif result is not None and result.pending:
            row["pending"] = True
        elif result is not None and result.decision is not None:
            row["decision"] = decision_fragment(result)
            row["replayed"] = result.replayed
        rows.append(row)
    rejected = sum(1 for row in rows if row["error"] is not None)
    return {"rows": rows, "accepted": len(rows) - rejected, "rejected": rejected}

