"""RFC 9457 problem documents: every error the gateway answers is one of these.

Views raise :class:`ProblemError`; :func:`register_error_handlers` turns it, every werkzeug
HTTP error and anything unexpected into ``application/problem+json``. Unexpected exceptions
are a 500 (a bug) and are logged with their traceback; client input never gets there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

import orjson
from flask import Flask, Response, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import HTTPException

from schemas.common import FieldError, error_path

logger = logging.getLogger(__name__)

PROBLEM_JSON: Final = "application/problem+json"
TYPE_PREFIX: Final = "urn:claimflow:problem:"
# Every unknown key or CSV column is an error; echoing all of them let a 1 MiB body of short
# keys ask for ~10 MiB of answer. The first ones say what is wrong; the count says the rest.
MAX_ERRORS: Final = 50


class FieldProblem(BaseModel):
    """One violated rule: the field path (``claims.2.patient_age``) and what is wrong."""

    path: str = Field(description="Dotted field path inside the request ('' = whole body).")
    loc: list[str | int] = Field(description="The same path as a list.")
    type: str = Field(description="Machine-readable error kind (pydantic's error type).")
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", examples=[f"{TYPE_PREFIX}contract-violation"])
    title: str = Field(examples=["Claim violates the contract"])
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    instance: str | None = Field(default=None, description="The request path.")
    errors: list[FieldProblem] | None = Field(
        default=None,
        description=f"Field errors (422 contract violations), at most {MAX_ERRORS}.",
    )
    errors_omitted: int | None = Field(
        default=None, ge=1,
        description=f"How many more field errors there were beyond the first {MAX_ERRORS}.",
    )


class ProblemError(Exception):
    """Raised by views: becomes a problem document with ``status``."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        errors: Sequence[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title or HTTPStatus(status).phrase
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def field_problems(errors: Sequence[FieldError], prefix: Sequence[str | int] = ()) -> list[
    dict[str, Any]
]:
    out = []
    for err in errors:
        loc = [*prefix, *err["loc"]]
        out.append({"path": error_path({**err, "loc": loc}), "loc": loc,
                    "type": err["type"], "msg": err["msg"]})
    return out


def problem_body(
    status: int,
    detail: str | None,
    *,
    slug: str | None = None,
    title: str | None = None,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"{TYPE_PREFIX}{slug}" if slug else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    body.update(extra or {})
    return body


def problem_response(
    status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    response = Response(orjson.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def from_problem_error(exc: ProblemError) -> Response:
    errors, extra = None, dict(exc.extra)
    if exc.errors is not None:
        errors = field_problems(exc.errors[:MAX_ERRORS])
        if len(exc.errors) > MAX_ERRORS:
            extra["errors_omitted"] = len(exc.errors) - MAX_ERRORS
    body = problem_body(
        exc.status, exc.detail, slug=exc.slug, title=exc.title, instance=request.path,
        errors=errors, extra=extra,
    )
    return problem_response(exc.status, body, exc.headers)


def from_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    # Keep the headers werkzeug computed (Allow on 405, WWW-Authenticate on 401).
    headers = {
        name: value for name, value in exc.get_headers()
        if name.lower() not in ("content-type", "content-length")
    }
    body = problem_body(status, exc.description, instance=request.path)
    return problem_response(status, body, headers)


def from_query_validation(exc: ValidationError) -> Response:
    """flask-openapi3's validation callback: query/path parameters that fail their model."""
    errors: list[FieldError] = [
        {"loc": list(err["loc"]), "type": err["type"], "msg": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    body = problem_body(
        422, "request parameters are invalid", slug="invalid-parameters",
        title="Invalid request parameters", instance=request.path, errors=field_problems(errors),
    )
    return problem_response(422, body)


def from_unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.path)
    body = problem_body(500, "internal error; see the gateway log", instance=request.path)
    return problem_response(500, body)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ProblemError, from_problem_error)
    app.register_error_handler(HTTPException, from_http_exception)
    app.register_error_handler(Exception, from_unexpected)
