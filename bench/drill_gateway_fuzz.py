"""Drill 6, gateway fuzz: property-based requests against the running gateway.

Two sources of requests, both driven by Hypothesis with the drill's seed:
- schemathesis, from the gateway's own ``/openapi.json``: every operation, with data that fits
  the schema (positive) and data that does not (negative);
- raw fuzz of the submission endpoints: arbitrary bytes, arbitrary JSON, claims with wild
  field values, odd content types, missing or wrong API keys.

Every schemathesis check runs on every answer (status codes, content types, headers,
response schemas, ...). ``positive_data_acceptance`` runs narrowed: the v2 sums and unique
claim_ids in a batch cannot be said in JSON Schema, so a 422 citing only those rules (and a
404/409, which depend on state) is not a mismatch; any other refusal of schema-valid data is.
Every request carries the API key unless the fuzz is about keys, so cases reach validation
instead of bouncing off 401.

Pass when at least the planned number of requests were answered, at least 2,000 of them
schema-driven (schemathesis; issue 17's goal) with most of those past authentication and
routing (not a 401 or a 405: they reached validation), none with a 5xx (or a dropped
connection), no schemathesis check failed, and the gateway is still alive and healthy at the
end.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from bench.drill_common import DrillContext, DrillResult, verdict
from bench.stack_harness import Gateway, Topics

logger = logging.getLogger(__name__)

NUMBER = 6
NAME = "gateway-fuzz"
API_KEY = "drill-" + "k" * 24
SUBMIT_PATHS = ("/api/v1/claims", "/api/v1/claims/batch")
SCHEMATHESIS = "schemathesis-"
# Issue 17: ">= 2,000 schema-driven cases that mostly pass authentication and reach
# validation". Smoke runs (CI) keep a tenth of the examples and of the bar.
SCHEMA_CASES_GOAL = 2_000
SCHEMA_CASES_SMOKE = 150


@dataclass
class Tally:
    """Every answer, by status; every server error with what caused it."""

    statuses: Counter[int] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    schema_statuses: Counter[int] = field(default_factory=Counter)  # schemathesis answers
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    contract_mismatches: list[str] = field(default_factory=list)
    # Negative cases whose mutations never reached the server (neutralized_on_the_wire).
    neutralized: int = 0

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.transport_errors)

    @property
    def schema_cases(self) -> int:
        return sum(n for source, n in self.by_source.items() if source.startswith(SCHEMATHESIS))

    @property
    def schema_cases_past_the_door(self) -> int:
        """Schema-driven answers that were neither a 401 (key) nor a 405 (method)."""
        return sum(n for status, n in self.schema_statuses.items() if status not in (401, 405))

    def record(self, source: str, method: str, path: str, status: int | None,
               detail: str = "") -> None:
        self.by_source[source] += 1
        if status is None:
            self.transport_errors.append(f"{method} {path}: {detail}"[:300])
            return
        self.statuses[status] += 1
        if source.startswith(SCHEMATHESIS):
            self.schema_statuses[status] += 1
        if status >= 500:
            self.server_errors.append(f"{status} {method} {path}: {detail}"[:300])


# Rules the published schemas state in prose only (JSON Schema cannot relate two fields).
CROSS_FIELD_RULES = frozenset({"sum_mismatch", "duplicate_claim_id"})
# Refusals that depend on which model the stream serves, not on the request's shape.
SERVED_MODEL_RULES: frozenset[str] = frozenset({"unsupported_version"})


def schema_valid_refusal(status: int, body: Any) -> str | None:
    """``positive_data_acceptance`` less the rules JSON Schema cannot express: why a
    schema-valid request was wrongly refused, or None. 404 and 409 depend on the server's
    state (an unknown claim_id; one an earlier case used for other content), not the shape;
    so does a 422 ``unsupported_version`` (the contract has two claim versions, the served
    model scores one of them: documented in the OpenAPI description of the claims routes)."""
    if status < 400 or status in (404, 409):
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    kinds = {e.get("type") for e in errors or [] if isinstance(e, dict)}
    if status == 422 and kinds and kinds <= CROSS_FIELD_RULES | SERVED_MODEL_RULES:
        return None
    return f"schema-valid request refused: {status} {str(body)[:200]}"


# --------------------------------------------------------------------------- raw strategies

JSON_LEAVES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
               | st.text(max_size=40))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda kids: st.lists(kids, max_size=5)
                           | st.dictionaries(st.text(max_size=12), kids, max_size=5),
                           max_leaves=25)
WILD_NUMBERS = st.one_of(st.integers(min_value=-(10**20), max_value=10**20),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                         st.none(), st.booleans())
CLAIM_FIELDS = ("claim_amount", "num_services", "patient_age", "provider_id",
                "days_since_last_claim")


@st.composite
def wild_claims(draw: st.DrawFn) -> dict[str, Any]:
    """Claims that are close to valid: some fields right, some wild, some missing or extra."""
    claim: dict[str, Any] = {
        "schema_version": draw(st.sampled_from([1, 1, 1, 2, "1", None])),
        "claim_id": draw(st.one_of(st.from_regex(r"\AC-[0-9]{1,8}\Z"), st.text(max_size=80))),
        "claim_amount": draw(st.one_of(st.floats(min_value=0.01, max_value=1e6), WILD_NUMBERS)),
        "num_services": draw(st.one_of(st.integers(min_value=1, max_value=20), WILD_NUMBERS)),
        "patient_age": draw(st.one_of(st.integers(min_value=0, max_value=120), WILD_NUMBERS)),
        "provider_id": draw(st.one_of(st.integers(min_value=1, max_value=500), WILD_NUMBERS)),
        "days_since_last_claim": draw(st.one_of(st.integers(min_value=0, max_value=365),
                                                WILD_NUMBERS)),
        "submitted_at": draw(st.sampled_from(["2026-11-26T18:00:00Z", "2026-11-26T18:00:00",
                                              "not a date", "", "2026-13-45T99:99:99Z"])),
    }
    for name in draw(st.sets(st.sampled_from([*claim, "claim_id"]), max_size=3)):
        claim.pop(name, None)
    if draw(st.booleans()):
        claim[draw(st.text(min_size=1, max_size=10))] = draw(JSON_LEAVES)
    return claim


def _encode(value: Any) -> bytes:
    # allow_nan: NaN/Infinity literals are exactly the kind of input to throw at the parser.
    return json.dumps(value, allow_nan=True).encode()


BODIES = st.one_of(
    st.binary(max_size=2048),
    JSON_VALUES.map(_encode),
    wild_claims().map(_encode),
    wild_claims().map(lambda c: _encode({"claim": c})),
    st.lists(wild_claims(), max_size=4).map(lambda cs: _encode({"claims": cs})),
    st.lists(wild_claims(), max_size=4).map(_encode),
    st.text(max_size=500).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
CONTENT_TYPES = st.sampled_from([
    "application/json", "application/json", "application/json; charset=utf-8", "text/csv",
    "text/plain", "application/x-www-form-urlencoded", "", "application/json; charset=latin-1",
])
# Mostly the right key: a wrong one ends at 401 before the body is read.
KEYS = st.sampled_from([API_KEY] * 7 + [None, "wrong", "", "x" * 500])


@dataclass(frozen=True)
class RawRequest:
    method: str
    path: str
    body: bytes
    content_type: str
    api_key: str | None


READ_PATHS = ("/api/v1/claims/C-1", "/api/v1/outcomes?limit=abc", "/api/v1/outcomes?cursor=-1",
              "/api/v1/stats?buckets=0", "/api/v1/claims/%00", "/")
# Each path mostly with its own method: a wrong one ends at 405 before anything is parsed,
# so mixing methods freely would spend most requests on 405s.
RAW_REQUESTS = st.one_of(
    st.builds(RawRequest, method=st.sampled_from(["POST"] * 9 + ["PUT", "GET", "DELETE"]),
              path=st.sampled_from([*SUBMIT_PATHS, "/api/v1/claims/csv"]), body=BODIES,
              content_type=CONTENT_TYPES, api_key=KEYS),
    st.builds(RawRequest, method=st.sampled_from(["GET"] * 9 + ["POST", "DELETE"]),
              path=st.sampled_from(READ_PATHS), body=st.just(b""),
              content_type=st.just(""), api_key=KEYS),
)


# --------------------------------------------------------------------------- the drill


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))


def run_raw(client: httpx.Client, examples: int, seed_value: int, tally: Tally) -> None:
    @seed(seed_value)
    @_settings(examples)
    @given(RAW_REQUESTS)
    def fire(req: RawRequest) -> None:
        headers = {"Content-Type": req.content_type} if req.content_type else {}
        if req.api_key is not None:
            headers["X-API-Key"] = req.api_key
        try:
            response = client.request(req.method, req.path, content=req.body, headers=headers)
        except httpx.HTTPError as exc:
            tally.record("raw", req.method, req.path, None, repr(exc))
            return
        tally.record("raw", req.method, req.path, response.status_code, response.text[:200])

    fire()


def run_schemathesis(base_url: str, examples_per_operation: int, seed_value: int,
                     tally: Tally) -> tuple[list[str], list[str]]:
    """Positive and negative cases for every operation of the gateway's OpenAPI document;
    returns the operations fuzzed and the ones schemathesis could not read."""
    import requests
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.core.result import Ok

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=30)
    session = requests.Session()
    session.headers["X-API-Key"] = API_KEY
    labels: list[str] = []
    invalid: list[str] = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            invalid.append(str(result.err())[:300])
            continue
        operation = result.ok()
        labels.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fire = _case_runner(operation, mode, base_url, session, examples_per_operation,
                                seed_value, tally)
            try:
                fire()
            except Unsatisfiable:
                # An operation without parameters or body has no negative cases at all.
                if mode is not GenerationMode.NEGATIVE:
                    raise
    session.close()
    return labels, invalid


def _case_runner(operation: Any, mode: Any, base_url: str, session: Any, examples: int,
                 seed_value: int, tally: Tally) -> Any:
    import requests
    from schemathesis import GenerationMode

    source = f"{SCHEMATHESIS}{mode.value}"

    @seed(seed_value)
    @_settings(examples)
    @given(operation.as_strategy(generation_mode=mode))
    def fire(case: Any) -> None:
        try:
            response = case.call(base_url=base_url, session=session, timeout=30,
                                 headers={"X-API-Key": API_KEY})
        except requests.RequestException as exc:
            tally.record(source, case.method, case.formatted_path, None, repr(exc))
            return
        tally.record(source, case.method, case.formatted_path, response.status_code,
                     f"{operation.label}: {response.text[:200]}")
        mismatch = _check(case, response)
        if mismatch is None and mode is GenerationMode.POSITIVE:
            mismatch = schema_valid_refusal(response.status_code, _json_or_none(response))
        if mismatch is not None and mode is GenerationMode.NEGATIVE and neutralized_on_the_wire(
                mismatch, frozenset(p.name for p in operation.query),
                sent_query_names(response.request.url)):
            tally.neutralized += 1
            mismatch = None
        if mismatch is not None:
            tally.contract_mismatches.append(
                f"{operation.label} {case.method} {case.formatted_path}: {mismatch}"[:1500])

    return fire


def _check(case: Any, response: Any) -> str | None:
    """Every schemathesis check but positive_data_acceptance (narrowed above)."""
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    try:
        case.validate_response(response, excluded_checks=[positive_data_acceptance])
    # One failed check raises an AssertionError, several a FailureGroup (a
    # BaseExceptionGroup, which `except Exception` would let through).
    except (AssertionError, FailureGroup) as exc:
        return _failure_text(exc)
    return None


def _failure_text(exc: BaseException) -> str:
    """What failed, on one line: schemathesis's first line only says how many failures it
    found; the lines after it say which check failed and on what."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " | ".join(lines) if lines else type(exc).__name__


# What a negative case may have mutated that never reaches the server in this drill: the
# key header (every request carries the drill's valid key, or most cases would end at the
# 401 without reaching validation) and an undeclared query parameter whose value the HTTP
# client writes as nothing (an empty list: ``?bucket_s=1`` is sent for
# ``{"bucket_s": 1, "": []}``). Schemathesis judges the case it generated, so it reports
# the valid request that was actually sent as "schema-violating request accepted".
_ACCEPTED_INVALID = "Schema-violating request accepted"
_COMPONENT = re.compile(r"- (\w+): violates `([^`]+)`(?: \(was ([^)]*)\))?")


def neutralized_on_the_wire(failure: str, declared_query: frozenset[str],
                            sent_query: Sequence[str]) -> bool:
    """Whether a negative case's "schema-violating request accepted" names only mutations
    that the request as sent did not carry: the key header (the drill sends its own) and
    undeclared query parameters that are absent from the sent URL. Any other invalid
    component (a body, a path, a declared parameter's value) keeps it a mismatch."""
    if _ACCEPTED_INVALID not in failure:
        return False
    components = _COMPONENT.findall(failure)
    if not components:
        return False
    for location, keyword, detail in components:
        if location == "header" and "X-API-Key" in detail:
            continue
        if (location == "query" and keyword == "additionalProperties"
                and set(sent_query) <= declared_query):
            continue
        return False
    return True


def sent_query_names(url: str) -> list[str]:
    return [name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)]


def _json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def run_drill(ctx: DrillContext, smoke: bool) -> DrillResult:
    # Examples per operation and mode: hypothesis stops early where an operation has few
    # distinct inputs (about 80 % of the examples asked for were sent in earlier runs).
    raw_examples, per_operation = (150, 12) if smoke else (800, 140)
    planned_minimum = 200 if smoke else 1000
    schema_minimum = SCHEMA_CASES_SMOKE if smoke else SCHEMA_CASES_GOAL
    stack = ctx.stack
    topics = stack.create_topics(Topics.fresh("d6"), partitions=3)
    # Dispositions are part of the API: without a labels topic every one would be a 503.
    labels = stack.create_labels_topic(f"{topics.claims}.labels")
    # The scorer decides what the gateway produces (without one every valid claim is a 202).
    group = f"d6-scorer-{uuid.uuid4().hex[:6]}"
    scorer = stack.start_scorer("d6-scorer", topics, group, ctx.model.url)
    gateway: Gateway = stack.start_gateway(topics,
                                           extra_env={"GATEWAY_API_KEY": API_KEY,
                                                      "GATEWAY_LABELS_TOPIC": labels},
                                           name=f"d6-gateway-{uuid.uuid4().hex[:4]}")
    tally = Tally()
    started = time.monotonic()
    operations: list[str] = []
    invalid: list[str] = []
    error = None
    try:
        operations, invalid = run_schemathesis(gateway.url, per_operation, ctx.seed, tally)
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            run_raw(client, raw_examples, ctx.seed, tally)
    except (Exception, BaseExceptionGroup) as exc:  # a crashed fuzzer still gets a verdict
        logger.exception("gateway fuzz stopped early")
        error = f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - started
    alive = gateway.process.alive()
    healthy = alive and gateway.ready()
    gateway.process.stop()
    scorer.stop()
    checks = {
        "enough_requests": tally.total >= planned_minimum,
        "enough_schema_cases": tally.schema_cases >= schema_minimum,
        "schema_cases_mostly_reach_validation":
            tally.schema_cases_past_the_door > tally.schema_cases / 2,
        "no_server_error": not tally.server_errors,
        "no_dropped_connection": not tally.transport_errors,
        "no_contract_mismatch": not tally.contract_mismatches,
        "openapi_operations_readable": bool(operations) and not invalid,
        "gateway_alive_and_healthy": healthy,
        "fuzzer_completed": error is None,
    }
    rate = tally.total / elapsed if elapsed > 0 and not math.isclose(elapsed, 0) else 0.0
    return DrillResult(
        number=NUMBER, name=NAME, passed=verdict(checks),
        summary=(f"{tally.total} property-based requests ({tally.schema_cases} schema-driven "
                 f"over {len(operations)} operations, "
                 f"{tally.schema_cases_past_the_door} of them past 401/405; the rest raw "
                 f"fuzz) -> {len(tally.server_errors)} server errors, "
                 f"{len(tally.transport_errors)} dropped connections, "
                 f"{len(tally.contract_mismatches)} contract mismatches"),
        counts={"requests": tally.total, "server_errors": len(tally.server_errors),
                "transport_errors": len(tally.transport_errors),
                "contract_mismatches": len(tally.contract_mismatches),
                "by_status": {str(k): v for k, v in sorted(tally.statuses.items())},
                "by_source": dict(tally.by_source),
                "schema_cases": tally.schema_cases,
                "schema_cases_past_401_405": tally.schema_cases_past_the_door,
                "negative_cases_sent_valid": tally.neutralized,
                "schema_by_status": {str(k): v
                                     for k, v in sorted(tally.schema_statuses.items())}},
        figures={"requests_per_s": round(rate, 1), "seconds": round(elapsed, 1)},
        checks=checks,
        details={"operations": operations, "unreadable_operations": invalid,
                 "server_errors": tally.server_errors[:20],
                 "transport_errors": tally.transport_errors[:20],
                 "contract_mismatches": tally.contract_mismatches[:20]},
        error=error,
    )
