"""Property-based API tests: schemathesis from the gateway's own ``/openapi.json`` (positive
and negative cases for every operation) plus raw Hypothesis fuzz of the submission bodies.
No input may cause a server error; answers must match the documented status codes, content
types, headers and schemas. Bounded by example counts (a few seconds).

Every schemathesis check runs. ``positive_data_acceptance`` (schema-valid data must not be
refused) runs in a narrowed form: the v2 contract's sums (``claim_amount`` and
``num_services`` equal the lines' charges and units) and the unique claim_ids of a batch
cannot be said in JSON Schema (they are in the descriptions), so a 422 whose only errors are
those rules is accepted for generated data; any other refusal of schema-valid data fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response as FuzzResponse
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bench.drill_gateway_fuzz import schema_valid_refusal
from gateway.app import create_app, runtime
from gateway.openapi_docs import GatewayOpenAPI
from tests.unit.gateway_fakes import (
    FakeLabelPublisher,
    FakeStream,
    claim_body,
    fake_settings,
)

EXAMPLES_PER_OPERATION = 15
API_KEY = "fuzz-key"


def bounded(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[GatewayOpenAPI]:
    stream = FakeStream()
    app = create_app(fake_settings(tmp_path, max_batch=20), producer=stream, board=stream.board,
                     labels=FakeLabelPublisher())
    yield app
    runtime(app).close()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(app: GatewayOpenAPI
                                                                     ) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations, requests = [], 0
    statuses: set[int] = set()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        operations.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @seed(7)
            @bounded(EXAMPLES_PER_OPERATION)
            @given(operation.as_strategy(generation_mode=mode))
            def fire(case: Any) -> None:
                nonlocal requests
                requests += 1
                response = case.call()
                statuses.add(response.status_code)
                case.validate_response(response, excluded_checks=[positive_data_acceptance])
                if case.meta.generation.mode is GenerationMode.POSITIVE:
                    assert_schema_valid_data_accepted(response)

            try:
                fire()
            except Unsatisfiable:
                # Operations without parameters or body have no negative cases.
                assert mode is GenerationMode.NEGATIVE
    assert len(operations) == 11
    assert requests >= 150
    assert {200, 201, 422} <= statuses
    assert max(statuses) < 500


def assert_schema_valid_data_accepted(response: FuzzResponse) -> None:
    """``positive_data_acceptance``, less the rules JSON Schema cannot express (shared with
    the fuzz drill)."""
    refusal = schema_valid_refusal(response.status_code, response.json()
                                   if response.status_code >= 400 else None)
    assert refusal is None, refusal


BODIES = st.one_of(
    st.binary(max_size=600),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda kids: st.lists(kids, max_size=4)
                 | st.dictionaries(st.text(max_size=10), kids, max_size=4),
                 max_leaves=20).map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.fixed_dictionaries({}, optional={
        key: st.one_of(st.just(value), st.integers(-(10**30), 10**30), st.floats(),
                       st.text(max_size=12), st.none())
        for key, value in claim_body().items()
    }).map(lambda c: json.dumps(c, allow_nan=True).encode()),
)
PATHS = st.sampled_from(["/api/v1/claims", "/api/v1/claims/batch", "/api/v1/claims/csv"])
TYPES = st.sampled_from(["application/json", "text/csv", "text/plain", "",
                         "application/json; charset=latin-1", "multipart/form-data"])
KEYS = st.sampled_from([None, API_KEY, "wrong", "x" * 300])


def test_raw_bodies_never_cause_a_server_error(tmp_path: Path) -> None:
    stream = FakeStream()
    app = create_app(fake_settings(tmp_path, api_key=API_KEY, max_batch=20),
                     producer=stream, board=stream.board)
    client: FlaskClient = app.test_client()

    @seed(11)
    @bounded(300)
    @given(PATHS, BODIES, TYPES, KEYS)
    def fire(path: str, body: bytes, content_type: str, key: str | None) -> None:
        headers = {"X-API-Key": key} if key else {}
        if content_type:
            headers["Content-Type"] = content_type
        response = client.post(path, data=body, headers=headers)
        assert response.status_code < 500, response.get_data(as_text=True)
        if response.status_code >= 400:
            assert response.mimetype == "application/problem+json"
            assert response.get_json()["status"] == response.status_code

    fire()
    runtime(app).close()


def test_refusals_that_depend_on_the_servers_state_are_not_contract_mismatches() -> None:
    """404/409 and a 422 ``unsupported_version`` (the served model scores the other claim
    version) depend on state, not shape; any other refusal of schema-valid data is a
    mismatch, also a 422 that mixes a state rule with a shape rule."""
    version = {"errors": [{"type": "unsupported_version", "loc": ["schema_version"]}]}
    assert schema_valid_refusal(422, version) is None
    assert schema_valid_refusal(404, None) is None
    assert schema_valid_refusal(409, {"errors": []}) is None
    mixed = {"errors": [{"type": "unsupported_version"}, {"type": "int_parsing"}]}
    assert schema_valid_refusal(422, mixed) is not None
    assert schema_valid_refusal(400, {"errors": []}) is not None
