"""The gateway's HTTP behaviour through Flask's test client: every status code it answers.

The broker and the stream worker are an in-process fake here (this is HTTP logic); the
integration tests run the same paths against a real broker, a real ``claimflow score`` worker
and a real ``bentoml serve``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from gateway.app import create_app, runtime
from gateway.claim_producer import Position
from gateway.outcome_store import Outcome
from gateway.runtime import GatewayRuntime
from schemas import Claim, Decision, ModelRef, StreamSource
from tests.unit.gateway_fakes import (
    FakeStream,
    claim_body,
    fake_result,
    fake_settings,
    problem,
)
from tests.v2_factory import v2_claim, without_labels


@dataclass
class Gateway:
    client: FlaskClient
    stream: FakeStream
    rt: GatewayRuntime

    def post(self, body: Any, path: str = "/api/v1/claims", **kw: Any) -> Any:
        return self.client.post(path, json=body, **kw)


def make_gateway(home: Path, **settings: Any) -> Gateway:
    stream = FakeStream()
    app = create_app(fake_settings(home, **settings), producer=stream, board=stream.board)
    return Gateway(app.test_client(), stream, runtime(app))


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path)
    yield gateway
    gateway.rt.close()





def error_paths(body: dict[str, Any]) -> dict[str, str]:
    return {err["path"]: err["type"] for err in body["errors"]}


# -- 201 / 200: decisions and idempotency ------------------------------------------------------


def test_new_claim_is_produced_and_answered_with_the_streams_decision(gw: Gateway) -> None:
    response = gw.post(claim_body(claim_amount=25_000.0))
    assert response.status_code == 201
    assert response.headers["Location"] == "/api/v1/claims/C-000001"
    [sent] = gw.stream.produced
    assert sent.key == b"C-000001"  # a v1 claim is keyed by claim_id, as the producer does
    assert response.get_data() == gw.stream.decisions[0].to_json()  # the stream's bytes
    decision = Decision.model_validate_json(response.get_data())
    assert decision.decision == "investigate"
    assert decision.model.version == "7"
    assert decision.reasons[0].feature == "claim_amount"
    assert decision.source == StreamSource(topic="claims", partition=0, offset=0)


def test_same_claim_again_returns_the_first_decision_and_is_not_produced_again(
    gw: Gateway,
) -> None:
    first = gw.post(claim_body())
    again = gw.post(claim_body())
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    assert gw.stream.claim_ids() == ["C-000001"]


def test_missing_claim_id_is_generated(gw: Gateway) -> None:
    response = gw.post(claim_body(claim_id=...))
    assert response.status_code == 201
    claim_id = response.get_json()["claim"]["claim_id"]
    assert claim_id.startswith("gw-")
    assert response.headers["Location"] == f"/api/v1/claims/{claim_id}"


def test_missing_submitted_at_is_now_and_does_not_break_idempotency(gw: Gateway) -> None:
    before = datetime.now(UTC)
    first = gw.post(claim_body(submitted_at=...))
    submitted = datetime.fromisoformat(first.get_json()["claim"]["submitted_at"])
    assert before <= submitted <= datetime.now(UTC)
    again = gw.post(claim_body(submitted_at=...))
    assert again.status_code == 200
    assert again.get_data() == first.get_data()


def test_equal_values_in_another_spelling_are_the_same_claim(gw: Gateway) -> None:
    assert gw.post(claim_body(claim_amount=1200.0)).status_code == 201
    again = gw.post(claim_body(claim_amount=1200, submitted_at="2026-01-02T03:04:05+00:00"))
    assert again.status_code == 200


def test_idempotency_survives_a_restart(tmp_path: Path) -> None:
    first = make_gateway(tmp_path)
    body = first.post(claim_body()).get_data()
    first.rt.close()
    second = make_gateway(tmp_path)
    again = second.post(claim_body())
    assert again.status_code == 200
    assert again.get_data() == body
    assert second.stream.produced == []
    assert second.post(claim_body(patient_age=45)).status_code == 409
    second.rt.close()


# -- 409 ----------------------------------------------------------------------------------------


def test_different_claim_under_a_used_claim_id_is_a_conflict(gw: Gateway) -> None:
    gw.post(claim_body())
    body = problem(gw.post(claim_body(patient_age=45)), 409)
    assert body["claim_ids"] == ["C-000001"]
    assert len(gw.stream.produced) == 1


def decided_on_the_stream(rt: GatewayRuntime, body: dict[str, Any]) -> Decision:
    """A claim that came from the producer and was decided by the stream (in the view)."""
    claim = Claim.from_json(json.dumps(body))
    decision = Decision.from_score(claim, fake_result(claim), decided_at=T0,
                                   source=StreamSource(topic="claims", partition=1, offset=41))
    rt.outcomes.add([Outcome(decision, "claims.approved", 0, 5, decision.to_json())],
                    {("claims.approved", 0): 6})
    return decision


def test_a_claim_decided_on_the_stream_is_replayed_or_a_conflict(gw: Gateway) -> None:
    """Its id is taken whichever path it came in on: submitting the stream's claim again gets
    the stream's decision, another claim under its id is a 409; nothing is produced."""
    decision = decided_on_the_stream(gw.rt, claim_body(claim_id="S-1"))
    same = gw.post(claim_body(claim_id="S-1"))
    assert same.status_code == 200
    assert same.get_data() == decision.to_json()
    assert same.headers["Idempotent-Replayed"] == "true"
    assert problem(gw.post(claim_body(claim_id="S-1", claim_amount=1.0)), 409)["claim_ids"] == [
        "S-1"]
    # Without submitted_at, the same fields are the same claim (the server fills it in).
    assert gw.post(claim_body(claim_id="S-1", submitted_at=...)).status_code == 200
    batch_answer = gw.post(batch(claim_body(claim_id="S-1", patient_age=3)),
                           "/api/v1/claims/batch")
    assert problem(batch_answer, 409)["claim_ids"] == ["S-1"]
    assert gw.stream.produced == []


def test_the_stream_deciding_another_claim_first_under_the_id_is_a_conflict(
    gw: Gateway,
) -> None:
    """The stream's claim was in flight when this one was checked: the first decision for the
    id is the stream's, for another payload, so this submission is a 409 and the id is the
    stream's claim's (a replay of the stream's claim gets its decision)."""
    theirs = Claim.from_json(json.dumps(claim_body(claim_amount=99.0)))
    real_answer = gw.stream.answer

    def stream_decides_theirs_first(claim: Any, position: Position) -> None:
        real_answer(theirs, Position("claims", 1, 7))

    gw.stream.answer = stream_decides_theirs_first  # type: ignore[method-assign]
    assert problem(gw.post(claim_body()), 409)["claim_ids"] == ["C-000001"]
    assert gw.rt.service.lookup("C-000001") is None  # the id is not ours

# -- 400 / 415 / 413 ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{", b"", b"   ", b"not json", b"\xff\xfe{}", b"[" * 5000])
def test_malformed_json_is_400(gw: Gateway, raw: bytes) -> None:
    response = gw.client.post("/api/v1/claims", data=raw, content_type="application/json")
    body = problem(response, 400)
    assert body["type"].endswith("malformed-json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "text/csv", None])
def test_wrong_content_type_is_415(gw: Gateway, content_type: str | None) -> None:
    kwargs = {"content_type": content_type} if content_type else {}
    response = gw.client.post("/api/v1/claims", data=json.dumps(claim_body()), **kwargs)
    problem(response, 415)
    assert "application/json" in response.headers["Accept-Post"]


def test_json_with_charset_is_accepted(gw: Gateway) -> None:
    response = gw.client.post("/api/v1/claims", data=json.dumps(claim_body()),
                              content_type="application/json; charset=utf-8")
    assert response.status_code == 201


def test_body_too_large_is_413(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, max_body_bytes=2048)
    big = claim_body(claim_id="C-" + "1" * 20)
    raw = json.dumps(big).encode() + b" " * 4096
    response = gateway.client.post("/api/v1/claims", data=raw, content_type="application/json")
    problem(response, 413)
    assert gateway.stream.produced == []
    gateway.rt.close()


# -- 422 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "path", "kind"),
    [
        ({"patient_age": "44"}, "patient_age", "int_type"),
        ({"patient_age": 121}, "patient_age", "less_than_equal"),
        ({"claim_amount": 0}, "claim_amount", "greater_than"),
        ({"claim_amount": -5.0}, "claim_amount", "greater_than"),
        ({"num_services": 0}, "num_services", "greater_than_equal"),
        ({"num_services": 2**70}, "num_services", "less_than_equal"),
        ({"provider_id": None}, "provider_id", "int_type"),
        ({"claim_id": None}, "claim_id", "string_type"),
        ({"claim_id": "<script>"}, "claim_id", "string_pattern_mismatch"),
        ({"submitted_at": "2026-01-02T03:04:05"}, "submitted_at", "timezone_aware"),
        ({"submitted_at": "yesterday"}, "submitted_at", "datetime_parsing"),
        ({"days_since_last_claim": ...}, "days_since_last_claim", "missing"),
        ({"is_anomaly": True}, "is_anomaly", "extra_forbidden"),
        ({"schema_version": 3}, "schema_version", "unsupported_version"),
        ({"schema_version": 2}, "member_id", "missing"),  # a v1 body labelled v2
    ],
)
def test_contract_violations_are_422_with_field_paths(
    gw: Gateway, overrides: dict[str, Any], path: str, kind: str
) -> None:
    body = problem(gw.post(claim_body(**overrides)), 422)
    assert error_paths(body)[path] == kind
    assert gw.stream.produced == []


@pytest.mark.parametrize("raw", [b"1e400", b'{"claim_amount": 1e400}'])
def test_infinite_numbers_are_422(gw: Gateway, raw: bytes) -> None:
    response = gw.client.post("/api/v1/claims", data=raw, content_type="application/json")
    problem(response, 422)


@pytest.mark.parametrize("raw", [json.dumps([claim_body()]), '"claim"', "42", "null"])
def test_non_object_body_is_422(gw: Gateway, raw: str) -> None:
    response = gw.client.post("/api/v1/claims", data=raw, content_type="application/json")
    body = problem(response, 422)
    assert error_paths(body) == {"": "model_type"}


def test_every_violation_is_reported_at_once(gw: Gateway) -> None:
    body = problem(gw.post(claim_body(patient_age=-1, provider_id=0, extra=1)), 422)
    assert set(error_paths(body)) == {"patient_age", "provider_id", "extra"}


# -- 202 / 503 / 500 ---------------------------------------------------------------------------


def test_no_decision_by_the_deadline_is_202_with_a_location_to_poll(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, decision_timeout_s=0.05)
    gw.stream.silent = True  # the worker is stopped: the claim waits on the topic
    response = gw.post(claim_body(claim_amount=50_000.0))
    assert response.status_code == 202
    assert response.headers["Location"] == "/api/v1/claims/C-000001"
    assert response.get_json() == {"claim_id": "C-000001", "status": "pending",
                                   "location": "/api/v1/claims/C-000001"}
    polled = gw.client.get("/api/v1/claims/C-000001")
    assert polled.status_code == 202
    # A retry waits for the same claim: nothing is produced again.
    assert gw.post(claim_body(claim_amount=50_000.0)).status_code == 202
    assert gw.stream.claim_ids() == ["C-000001"]
    problem(gw.post(claim_body(claim_amount=1.0)), 409)  # the id is taken meanwhile

    gw.stream.silent = False
    gw.stream.answer_all()  # the worker is back: nobody waits, the outcome view gets it
    decided = gw.stream.decisions[0]
    gw.rt.outcomes.add([Outcome(decided, "claims.investigate", 0, 0, decided.to_json())],
                       {("claims.investigate", 0): 1})
    later = gw.client.get("/api/v1/claims/C-000001")
    assert later.status_code == 200
    assert later.get_data() == gw.stream.decisions[0].to_json()
    assert gw.post(claim_body(claim_amount=50_000.0)).status_code == 200
    text = gw.client.get("/metrics").get_data(as_text=True)
    assert 'gateway_undecided_total{cause="timeout"} 2.0' in text
    gw.rt.close()


def test_a_dead_letter_after_the_202_makes_the_location_a_422_with_the_reason(
    tmp_path: Path,
) -> None:
    """The worker sets the claim aside after its request gave up: the reply consumer records
    the dead letter, and the Location stops answering 202."""
    gw = make_gateway(tmp_path, decision_timeout_s=0.05)
    gw.stream.silent, gw.stream.reads_version = True, 2  # a model that refuses v1 claims
    assert gw.post(claim_body()).status_code == 202
    assert gw.client.get("/api/v1/claims/C-000001").status_code == 202
    gw.stream.answer_all()  # the dead letter comes, nobody waits for it
    polled = problem(gw.client.get("/api/v1/claims/C-000001"), 422)
    assert polled["type"].endswith("unsupported-version")
    [error] = polled["errors"]
    assert (error["path"], error["type"]) == ("schema_version", "unsupported_version")
    assert "this claim is schema_version 1" in error["msg"]
    # Nothing was decided: the id is free, the same claim is produced (and refused) again.
    gw.rt.service.decision_timeout_s, gw.stream.silent = 10.0, False
    problem(gw.post(claim_body()), 422)
    assert gw.stream.claim_ids() == ["C-000001", "C-000001"]
    gw.rt.close()


def test_a_decision_arriving_during_the_wait_is_the_answer(tmp_path: Path) -> None:
    """A retry of a pending claim waits on the reply board and wakes on its decision."""
    gw = make_gateway(tmp_path, decision_timeout_s=0.05)
    gw.stream.silent = True
    assert gw.post(claim_body()).status_code == 202
    gw.rt.service.decision_timeout_s = 10.0
    timer = threading.Timer(0.2, gw.stream.answer_all)
    timer.start()
    started = time.monotonic()
    response = gw.post(claim_body())
    timer.join()
    assert response.status_code == 200  # produced by the first request: a replay
    assert time.monotonic() - started < 5
    assert response.get_data() == gw.stream.decisions[0].to_json()
    assert gw.stream.claim_ids() == ["C-000001"]
    gw.rt.close()


def test_broker_down_is_503_and_the_retry_produces_the_claim_once(gw: Gateway) -> None:
    gw.stream.available = False
    response = gw.post(claim_body(claim_amount=50_000.0))
    body = problem(response, 503)
    assert body["type"].endswith("broker-unavailable")
    assert response.headers["Retry-After"] == "5"
    stored = gw.rt.service.lookup("C-000001")
    assert stored is not None
    assert not stored.produced
    problem(gw.client.get("/api/v1/claims/C-000001"), 404)  # never confirmed: unknown

    gw.stream.available = True
    retry = gw.post(claim_body(claim_amount=50_000.0))
    assert retry.status_code == 201
    assert gw.stream.claim_ids() == ["C-000001"]
    third = gw.post(claim_body(claim_amount=50_000.0))
    assert third.status_code == 200
    assert third.get_data() == retry.get_data()
    assert gw.stream.claim_ids() == ["C-000001"]


def test_a_bug_is_a_500_problem_without_internals(gw: Gateway) -> None:
    def explode(claims: Any, timeout_s: float) -> list[Position]:
        raise RuntimeError("secret internals")

    gw.stream.produce = explode  # type: ignore[method-assign]
    body = problem(gw.post(claim_body()), 500)
    assert "secret" not in json.dumps(body)


# -- 401 ---------------------------------------------------------------------------------------


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, api_key="s3cret-key")
    yield gateway
    gateway.rt.close()


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer no"},
                                     {"Authorization": "Basic czNjcmV0LWtleQ=="},
                                     {"X-API-Key": "s3cret-key-but-longer"},
                                     {"X-API-Key": "\u00e9\u00e9"}])
def test_submission_without_the_right_key_is_401(keyed: Gateway, headers: dict[str, str]
                                                 ) -> None:
    response = keyed.post(claim_body(), headers=headers)
    problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert keyed.stream.produced == []


@pytest.mark.parametrize("headers", [{"X-API-Key": "s3cret-key"},
                                     {"Authorization": "Bearer s3cret-key"}])
def test_submission_with_the_key_is_accepted(keyed: Gateway, headers: dict[str, str]) -> None:
    assert keyed.post(claim_body(), headers=headers).status_code == 201


def test_key_is_checked_before_the_body(keyed: Gateway) -> None:
    response = keyed.client.post("/api/v1/claims", data=b"{", content_type="text/plain")
    problem(response, 401)


def test_reads_need_a_key_whenever_one_is_configured(keyed: Gateway, gw: Gateway,
                                                     tmp_path: Path) -> None:
    """The read API returns every claim's data: an API key guards it too."""
    assert gw.client.get("/api/v1/stats").status_code == 200  # no key configured: open
    for path in ("/api/v1/stats", "/api/v1/outcomes", "/api/v1/claims/C-1"):
        problem(keyed.client.get(path), 401)
    assert keyed.client.get("/api/v1/stats", headers={"X-API-Key": "s3cret-key"}
                            ).status_code == 200
    guarded = make_gateway(tmp_path / "r", api_key="s3cret-key", read_api_key="reader")
    problem(guarded.client.get("/api/v1/stats"), 401)
    problem(guarded.client.get("/api/v1/outcomes", headers={"X-API-Key": "nope"}), 401)
    assert guarded.client.get("/api/v1/stats", headers={"X-API-Key": "reader"}).status_code == 200
    assert guarded.client.get("/api/v1/outcomes",
                              headers={"X-API-Key": "s3cret-key"}).status_code == 200
    # The page and the probes stay open: they carry no claim data.
    assert guarded.client.get("/").status_code == 200
    assert guarded.client.get("/healthz").status_code == 200
    guarded.rt.close()


# -- 404 / 405 ---------------------------------------------------------------------------------


def test_unknown_claim_is_404(gw: Gateway) -> None:
    body = problem(gw.client.get("/api/v1/claims/C-404"), 404)
    assert body["claim_id"] == "C-404"


def test_unknown_route_is_404_and_wrong_method_405(gw: Gateway) -> None:
    problem(gw.client.get("/api/v2/nothing"), 404)
    response = gw.client.delete("/api/v1/claims")
    problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_claim_lookup_reads_the_gateways_own_record(gw: Gateway) -> None:
    posted = gw.post(claim_body()).get_data()
    response = gw.client.get("/api/v1/claims/C-000001")
    assert response.status_code == 200
    assert response.get_data() == posted


def test_invalid_claim_id_in_the_path_is_422(gw: Gateway) -> None:
    body = problem(gw.client.get("/api/v1/claims/%3Cimg%20src%3Dx%3E"), 422)
    assert error_paths(body) == {"claim_id": "string_pattern_mismatch"}


# -- batch -------------------------------------------------------------------------------------


def batch(*claims: dict[str, Any]) -> dict[str, Any]:
    return {"claims": list(claims)}


def test_batch_decides_every_claim_in_order(gw: Gateway) -> None:
    claims = [claim_body(claim_id=f"B-{i}", claim_amount=500.0 + 10_000 * (i % 2))
              for i in range(5)]
    response = gw.post(batch(*claims), "/api/v1/claims/batch")
    assert response.status_code == 200
    body = response.get_json()
    assert [d["claim"]["claim_id"] for d in body["decisions"]] == [f"B-{i}" for i in range(5)]
    assert [d["decision"] for d in body["decisions"]] == ["approve", "investigate"] * 2 + [
        "approve"]
    assert body["replayed"] == []
    assert body["pending"] == []
    assert gw.stream.claim_ids() == [f"B-{i}" for i in range(5)]


def test_batch_replays_known_claims_without_producing_them_again(gw: Gateway) -> None:
    gw.post(claim_body(claim_id="B-0"))
    response = gw.post(batch(claim_body(claim_id="B-0"), claim_body(claim_id="B-1")),
                       "/api/v1/claims/batch")
    assert response.get_json()["replayed"] == ["B-0"]
    assert gw.stream.claim_ids() == ["B-0", "B-1"]


def test_batch_with_undecided_claims_is_202_and_lists_them(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, decision_timeout_s=0.05)
    gw.post(claim_body(claim_id="B-0"))
    gw.stream.silent = True
    response = gw.post(batch(claim_body(claim_id="B-0"), claim_body(claim_id="B-1")),
                       "/api/v1/claims/batch")
    assert response.status_code == 202
    body = response.get_json()
    assert [d["claim"]["claim_id"] for d in body["decisions"]] == ["B-0"]
    assert (body["replayed"], body["pending"]) == (["B-0"], ["B-1"])
    gw.rt.close()


def test_batch_with_an_invalid_claim_is_422_and_nothing_is_produced(gw: Gateway) -> None:
    body = problem(gw.post(batch(claim_body(claim_id="B-0"),
                                 claim_body(claim_id="B-1", patient_age=200)),
                           "/api/v1/claims/batch"), 422)
    assert error_paths(body) == {"claims.1.patient_age": "less_than_equal"}
    assert gw.stream.produced == []


@pytest.mark.parametrize(
    ("payload", "paths"),
    [
        ([claim_body()], {"": "model_type"}),
        ({}, {"claims": "missing"}),
        ({"claims": []}, {"claims": "too_short"}),
        ({"claims": {}}, {"claims": "list_type"}),
        ({"claims": [claim_body()], "x": 1}, {"x": "extra_forbidden"}),
        ({"claims": [claim_body()] * 4}, {"claims": "too_long"}),
        ({"claims": [claim_body(), claim_body(patient_age=3)]},
         {"claims.1.claim_id": "duplicate_claim_id"}),
        ({"claims": [claim_body(), "x"]}, {"claims.1": "model_type"}),
    ],
)
def test_batch_envelope_violations_are_422(
    tmp_path: Path, payload: Any, paths: dict[str, str]
) -> None:
    gateway = make_gateway(tmp_path, max_batch=3)
    body = problem(gateway.post(payload, "/api/v1/claims/batch"), 422)
    assert error_paths(body) == paths
    gateway.rt.close()


def test_batch_with_a_conflicting_claim_is_409_and_nothing_is_produced(gw: Gateway) -> None:
    gw.post(claim_body(claim_id="B-0"))
    response = gw.post(batch(claim_body(claim_id="B-1"),
                             claim_body(claim_id="B-0", patient_age=90)), "/api/v1/claims/batch")
    assert problem(response, 409)["claim_ids"] == ["B-0"]
    assert gw.stream.claim_ids() == ["B-0"]


def test_batch_same_claim_twice_is_decided_once(gw: Gateway) -> None:
    response = gw.post(batch(claim_body(), claim_body()), "/api/v1/claims/batch")
    assert len(response.get_json()["decisions"]) == 2
    assert gw.stream.claim_ids() == ["C-000001"]


def test_batch_errors_are_problem_documents_too(gw: Gateway) -> None:
    problem(gw.client.post("/api/v1/claims/batch", data=b"[", content_type="application/json"),
            400)
    problem(gw.client.post("/api/v1/claims/batch", data=b"{}", content_type="text/plain"), 415)
    gw.stream.available = False
    problem(gw.post(batch(claim_body()), "/api/v1/claims/batch"), 503)


# -- CSV ---------------------------------------------------------------------------------------

CSV_HEADER = "claim_id,claim_amount,num_services,patient_age,provider_id,days_since_last_claim"


def post_csv(gw: Gateway, text: str, content_type: str = "text/csv") -> Any:
    return gw.client.post("/api/v1/claims/csv", data=text.encode(), content_type=content_type)


def test_csv_upload_decides_each_line_and_reports_bad_ones(gw: Gateway) -> None:
    text = "\n".join([
        CSV_HEADER + ",is_anomaly,pattern",
        "K-1,100.0,1,30,5,10,0,",
        "K-2,50000,3,70,5,1,1,upcoding",
        "K-3,abc,1,30,5,10,0,",
        "K-4,100,1,130,5,10,0,",
        ",200,1,30,5,10,0,",
        "K-1,999,1,30,5,10,0,",
        "K-5,100,1",
    ]) + "\n"
    response = post_csv(gw, text)
    assert response.status_code == 200
    body = response.get_json()
    rows = {row["line"]: row for row in body["rows"]}
    assert (body["accepted"], body["rejected"]) == (3, 4)
    assert rows[2]["decision"]["decision"] == "approve"
    assert rows[3]["decision"]["decision"] == "investigate"
    assert "claim_amount" in rows[4]["error"]
    assert "patient_age" in rows[5]["error"]
    assert rows[6]["decision"]["claim"]["claim_id"].startswith("gw-")
    assert "line 2" in rows[7]["error"]
    assert "expected 8 cells" in rows[8]["error"]
    assert len(gw.stream.produced) == 3
    assert not any(row["pending"] for row in rows.values())


def test_csv_lines_undecided_by_the_deadline_are_pending(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, decision_timeout_s=0.05)
    gw.stream.silent = True
    body = post_csv(gw, f"{CSV_HEADER}\nK-1,1,1,1,1,1\n").get_json()
    assert body["rows"][0]["pending"] is True
    assert body["rows"][0]["decision"] is None
    assert (body["accepted"], body["rejected"]) == (1, 0)
    gw.rt.close()


def test_csv_line_conflicting_with_an_earlier_submission_is_reported(gw: Gateway) -> None:
    gw.post(claim_body(claim_id="K-1", submitted_at=...))
    text = f"{CSV_HEADER}\nK-1,1234.5,3,44,7,30\nK-1X,1,1,1,1,1\n"
    rows = post_csv(gw, text).get_json()["rows"]
    assert rows[0]["replayed"] is True
    text = f"{CSV_HEADER}\nK-1,9.5,3,44,7,30\n"
    rows = post_csv(gw, text).get_json()["rows"]
    assert "already used" in rows[0]["error"]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("", ""),
        (CSV_HEADER + "\n", ""),
        (CSV_HEADER + ",colour\nK-1,1,1,1,1,1,red\n", "header.colour"),
        ("claim_id,claim_amount\nK-1,1\n", "header.num_services"),
    ],
)
def test_unusable_csv_file_is_422(gw: Gateway, text: str, path: str) -> None:
    body = problem(post_csv(gw, text), 422)
    assert path in error_paths(body)


def test_csv_needs_the_csv_content_type_and_utf8(gw: Gateway) -> None:
    problem(post_csv(gw, f"{CSV_HEADER}\nK-1,1,1,1,1,1\n", "application/json"), 415)
    response = gw.client.post("/api/v1/claims/csv", data=b"\xff\xfe\x00", content_type="text/csv")
    problem(response, 422)


def test_csv_with_more_lines_than_allowed_is_422(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, max_batch=2)
    text = CSV_HEADER + "\n" + "".join(f"K-{i},1,1,1,1,1\n" for i in range(3))
    problem(post_csv(gateway, text), 422)
    gateway.rt.close()


# -- outcome reads ------------------------------------------------------------------------------

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def stream_decision(i: int, decision: str, decided_at: datetime, version: str = "3") -> Decision:
    claim = json.dumps(claim_body(claim_id=f"S-{i:03d}", claim_amount=100.0 + i))
    result = fake_result(Claim.from_json(claim))
    return Decision(
        claim=Claim.from_json(claim), decision=decision,  # type: ignore[arg-type]
        anomaly_score=result.anomaly_score, threshold=0.5,
        model=ModelRef(name="claim-anomaly", version=version), reasons=[],
        decided_at=decided_at, source=StreamSource(topic="claims", partition=0, offset=i),
    )


def fill_view(rt: GatewayRuntime, n: int) -> list[Decision]:
    decisions = [stream_decision(i, "investigate" if i % 3 == 0 else "approve",
                                 T0 + timedelta(seconds=10 * i), version="3" if i < 10 else "4")
                 for i in range(n)]
    outcomes = [Outcome(d, f"claims.{d.decision}", 0, i, d.to_json())
                for i, d in enumerate(decisions)]
    rt.outcomes.add(outcomes, {("claims.approve", 0): n})
    return decisions


def test_outcomes_are_paged_newest_first_with_a_cursor(gw: Gateway) -> None:
    fill_view(gw.rt, 12)
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=5" + (f"&cursor={cursor}" if cursor else "")
        page = gw.client.get(f"/api/v1/outcomes{query}").get_json()
        seen += [item["decision"]["claim"]["claim_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"S-{i:03d}" for i in reversed(range(12))]


def test_outcomes_filter_by_decision(gw: Gateway) -> None:
    fill_view(gw.rt, 12)
    page = gw.client.get("/api/v1/outcomes?decision=investigate&limit=500").get_json()
    assert [item["decision"]["claim"]["claim_id"] for item in page["items"]] == [
        "S-009", "S-006", "S-003", "S-000"]
    assert page["next_cursor"] is None
    item = page["items"][0]
    assert (item["topic"], item["partition"], item["offset"]) == ("claims.investigate", 0, 9)


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "decision=maybe",
                                   "cursor=abc", "cursor=-1", "cursor=" + "9" * 30, "bogus=1"])
def test_bad_outcome_queries_are_422(gw: Gateway, query: str) -> None:
    problem(gw.client.get(f"/api/v1/outcomes?{query}"), 422)


def test_view_lookup_returns_the_published_decision(gw: Gateway) -> None:
    decisions = fill_view(gw.rt, 3)
    response = gw.client.get("/api/v1/claims/S-001")
    assert Decision.model_validate_json(response.get_data()) == decisions[1]


def test_stats_count_by_decision_time_and_model(gw: Gateway) -> None:
    fill_view(gw.rt, 12)  # decided at T0 + 0, 10, ..., 110 s
    gw.rt.clock = lambda: T0 + timedelta(seconds=119)
    stats = gw.client.get("/api/v1/stats?bucket_s=60&buckets=3").get_json()
    assert stats["totals"] == {"approve": 8, "investigate": 4, "total": 12,
                               "investigation_rate": pytest.approx(1 / 3)}
    assert [b["total"] for b in stats["timeline"]] == [0, 6, 6]
    assert stats["timeline"][1]["start"] == T0.isoformat()
    assert [b["investigate"] for b in stats["timeline"]] == [0, 2, 2]
    assert [(m["model_version"], m["total"]) for m in stats["by_model"]] == [("3", 10), ("4", 2)]


@pytest.mark.parametrize("query", ["bucket_s=0", "buckets=501", "bucket_s=1.5"])
def test_bad_stats_queries_are_422(gw: Gateway, query: str) -> None:
    problem(gw.client.get(f"/api/v1/stats?{query}"), 422)


# -- operations, page, docs ---------------------------------------------------------------------


def test_health_and_readiness(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, ready_cache_s=0)  # every probe checks again
    assert gw.client.get("/healthz").get_json() == {"status": "ok"}
    ready = gw.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"ready": True, "checks": {"broker": True}}
    gw.stream.available = False
    not_ready = gw.client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.get_json()["checks"]["broker"] is False
    gw.rt.close()


def test_metrics_count_requests_and_decisions(gw: Gateway) -> None:
    gw.post(claim_body(claim_amount=20_000.0))
    gw.post(claim_body(claim_amount=20_000.0))
    gw.post(claim_body(claim_id="bad id"))
    text = gw.client.get("/metrics").get_data(as_text=True)
    assert 'gateway_decisions_total{decision="investigate",replayed="false"} 1.0' in text
    assert 'gateway_decisions_total{decision="investigate",replayed="true"} 1.0' in text
    assert 'gateway_requests_total{method="POST",route="/api/v1/claims",status="422"} 1.0' in text
    assert 'gateway_request_seconds_count{method="POST",route="/api/v1/claims"} 3.0' in text


def test_page_is_a_static_shell_under_a_strict_content_security_policy(gw: Gateway) -> None:
    response = gw.client.get("/")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    html = response.get_data(as_text=True)
    assert "<script src=" in html
    assert "<script>" not in html
    assert "http://" not in html
    assert "https://" not in html
    with gw.client.get("/static/gateway.js") as static:
        js = static.get_data(as_text=True)
    assert "innerHTML" not in js
    assert "insertAdjacentHTML" not in js
    assert "document.write" not in js


def test_openapi_document_and_docs_page_are_served_locally(gw: Gateway) -> None:
    spec = gw.client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    ops = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert {("/api/v1/claims", "post"), ("/api/v1/claims/batch", "post"),
            ("/api/v1/claims/csv", "post"), ("/api/v1/outcomes", "get"),
            ("/api/v1/claims/{claim_id}", "get"), ("/api/v1/stats", "get")} <= ops
    schemas = spec["components"]["schemas"]
    assert [ref["$ref"].rpartition("/")[2] for ref in schemas["ClaimSubmission"]["oneOf"]] == [
        "ClaimSubmissionV1", "ClaimSubmissionV2"]
    for version in ("ClaimSubmissionV1", "ClaimSubmissionV2"):
        assert "claim_id" not in schemas[version]["required"]
        assert "submitted_at" not in schemas[version]["required"]
        assert schemas[version]["properties"]["claim_id"]["pattern"]
    assert {"member_id", "lines"} <= set(schemas["ClaimSubmissionV2"]["required"])
    line_ref = schemas["ClaimSubmissionV2"]["properties"]["lines"]["items"]["$ref"]
    assert line_ref == "#/components/schemas/ClaimLine"
    assert "ClaimLine" in schemas
    submit = spec["paths"]["/api/v1/claims"]["post"]["responses"]
    assert set(submit) == {"200", "201", "202", "400", "401", "409", "413", "415", "422", "503"}
    assert submit["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/Pending")
    assert "Pending" in schemas
    assert "application/problem+json" in submit["422"]["content"]
    docs = gw.client.get("/docs/swagger")
    assert docs.status_code == 200
    assert "https://" not in docs.get_data(as_text=True)


# -- contract version 2 ------------------------------------------------------------------------


def test_v2_claim_is_produced_keyed_by_member_and_decided(gw: Gateway) -> None:
    response = gw.post(without_labels(v2_claim(claim_id="C2-9")))
    assert response.status_code == 201, response.get_data(as_text=True)
    decision = Decision.from_json(response.get_data())
    assert decision.claim.schema_version == 2
    assert decision.claim_id == "C2-9"
    [sent] = gw.stream.produced
    assert sent.claim == decision.claim
    assert sent.key == decision.claim.member_id.encode()


@pytest.mark.parametrize(
    ("claim", "path", "kind"),
    [
        (v2_claim(lines=[{"procedure_code": "99213", "units": 1, "charge": 10.0}] * 3
                  + [{"procedure_code": "99213", "units": 0, "charge": 10.0}]),
         "lines.3.units", "greater_than_equal"),
        (v2_claim(claim_amount=1.0), "claim_amount", "sum_mismatch"),
        (v2_claim(num_services=99), "num_services", "sum_mismatch"),
        (v2_claim(service_date="20/11/2026"), "service_date", "date_parsing"),
        (v2_claim(diagnosis_codes=["E11 9"]), "diagnosis_codes.0", "string_pattern_mismatch"),
    ],
)
def test_invalid_v2_claim_is_422_with_its_field_path(
    gw: Gateway, claim: dict[str, Any], path: str, kind: str
) -> None:
    body = problem(gw.post(claim), 422)
    assert error_paths(body)[path] == kind
    batch = problem(gw.post({"claims": [v2_claim(claim_id="ok-1"), claim]},
                            "/api/v1/claims/batch"), 422)
    assert error_paths(batch)[f"claims.1.{path}"] == kind
    assert gw.stream.produced == []


def test_a_claim_the_stream_dead_letters_is_422_with_the_workers_reason(gw: Gateway) -> None:
    """The worker dead-letters claims the served model refuses: the client gets the reason
    (not a hang), and the id stays free for when a model that reads it serves."""
    gw.stream.reads_version = 2
    body = problem(gw.post(claim_body(claim_id="C-v1")), 422)
    assert body["type"].endswith("unsupported-version")
    assert error_paths(body) == {"schema_version": "unsupported_version"}
    assert "schema_version 2" in body["errors"][0]["msg"]
    batch = problem(gw.post({"claims": [v2_claim(claim_id="C-v2"), claim_body(claim_id="C-v1")]},
                            "/api/v1/claims/batch"), 422)
    assert error_paths(batch) == {"claims.1.schema_version": "unsupported_version"}
    assert gw.rt.service.lookup("C-v1") is None
    assert gw.rt.service.lookup("C-v2") is not None  # decided: resubmitting it replays
    rows = post_csv(gw, f"{CSV_HEADER}\nC-v1,1,1,1,1,1\n").get_json()["rows"]
    assert rows[0]["error"].startswith("set aside by the stream (unsupported_version)")
    gw.stream.reads_version = 1
    assert gw.post(claim_body(claim_id="C-v1")).status_code == 201
    text = gw.client.get("/metrics").get_data(as_text=True)
    assert 'gateway_undecided_total{cause="dead_letter"} 3.0' in text


def test_csv_upload_says_it_takes_version_1_only(gw: Gateway) -> None:
    csv = b"member_id,claim_amount,num_services,patient_age,provider_id,days_since_last_claim\n"
    body = problem(gw.client.post("/api/v1/claims/csv", data=csv + b"M-1,10,1,30,2,3\n",
                                  content_type="text/csv"), 422)
    [error] = body["errors"]
    assert error["path"] == "header.member_id"
    assert "version-1 claims only" in error["msg"]


# -- amplification -----------------------------------------------------------------------------


def test_error_list_is_capped_and_says_how_many_were_left_out(gw: Gateway) -> None:
    """Every unknown key was echoed as an error: a body of short keys came back ~10x larger."""
    body = claim_body(**{f"k{i}": 0 for i in range(5_000)})
    response = gw.post(body)
    answer = problem(response, 422)
    assert len(answer["errors"]) == 50
    assert answer["errors_omitted"] == 5_000 - 50
    assert len(response.get_data()) < len(json.dumps(body))
    columns = ",".join(f"c{i}" for i in range(2_000))
    csv_answer = problem(post_csv(gw, f"{CSV_HEADER},{columns}\nK-1,1,1,1,1,1\n"), 422)
    assert len(csv_answer["errors"]) == 50
    assert csv_answer["errors_omitted"] == 2_000 - 50


@pytest.mark.parametrize("path", ["/api/v1/claims/batch", "/api/v1/claims/csv"])
def test_submission_routes_advertise_only_what_is_documented(gw: Gateway, path: str) -> None:
    """The lookup route matched "batch" as a claim_id: OPTIONS advertised an undocumented GET."""
    allowed = {m.strip() for m in gw.client.options(path).headers["Allow"].split(",")}
    assert allowed == {"POST", "OPTIONS"}
    documented = gw.client.get("/openapi.json").get_json()["paths"][path]
    assert {m.upper() for m in documented} == allowed - {"OPTIONS"}
    problem(gw.client.get(path), 405)


def test_the_published_csv_schema_refuses_what_the_server_refuses(gw: Gateway) -> None:
    schema = gw.client.get("/openapi.json").get_json()["paths"]["/api/v1/claims/csv"]["post"][
        "requestBody"]["content"]["text/csv"]["schema"]
    pattern = re.compile(schema["pattern"])
    assert schema["minLength"] == 1
    good = f"{CSV_HEADER}\nK-1,1,1,1,1,1\n"
    assert pattern.search(good)
    assert post_csv(gw, good).status_code == 200
    for refused in ("", CSV_HEADER, CSV_HEADER + "\n\n", "claim_amount\n1\n"):
        assert not pattern.search(refused)
        problem(post_csv(gw, refused), 422)
