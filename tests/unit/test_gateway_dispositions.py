"""Dispositions through Flask's test client: the POST's rules (404, 409, 422, 401, 503), the
label it publishes, and the outcome view's labels (latest wins, the open filter)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.label_view import StoredLabel
from gateway.outcome_consumer import OutcomeConsumer
from gateway.outcome_store import Outcome, OutcomeStore
from schemas import Decision, Label
from tests.fake_message import FakeMessage
from tests.unit.gateway_fakes import (
    NOW,
    ODD,
    Gateway,
    OffsetsOnly,
    claim_body,
    make_gateway,
    problem,
)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path)
    yield gateway
    gateway.rt.close()


FRAUD = {"disposition": "fraud", "note": "billed twice", "investigator": "alice"}


# -- POST /claims/<id>/disposition ------------------------------------------------------------


def test_an_investigated_claim_is_labelled_and_the_label_published(gw: Gateway) -> None:
    decision = gw.submit("C-odd")
    response = gw.label("C-odd", FRAUD)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.headers["Location"] == "/api/v1/claims/C-odd/disposition"
    label = Label.model_validate_json(response.get_data())
    assert [label] == gw.labels.published
    assert (label.claim_id, label.disposition, label.note, label.investigator) == (
        "C-odd", "fraud", "billed twice", "alice")
    assert label.decided_at == NOW
    assert label.answers.model == decision.model
    assert (label.answers.anomaly_score, label.answers.decided_at) == (
        decision.anomaly_score, decision.decided_at)


def test_note_is_optional_and_a_second_label_is_published_too(gw: Gateway) -> None:
    gw.submit("C-odd")
    first = gw.label("C-odd", {"disposition": "needs_info", "investigator": "bob"})
    second = gw.label("C-odd", {"disposition": "legitimate", "investigator": "bob"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert [(lb.disposition, lb.note) for lb in gw.labels.published] == [
        ("needs_info", ""), ("legitimate", "")]


def test_unknown_claim_is_404(gw: Gateway) -> None:
    body = problem(gw.label("C-nobody", FRAUD), 404)
    assert body["claim_id"] == "C-nobody"
    assert gw.labels.published == []


def test_approved_claim_is_409_not_investigated(gw: Gateway) -> None:
    gw.submit("C-ok", amount=100.0)
    body = problem(gw.label("C-ok", FRAUD), 409)
    assert body["type"].endswith("not-investigated")
    assert gw.labels.published == []


@pytest.mark.parametrize(
    ("body", "path", "error_type"),
    [
        ({**FRAUD, "disposition": "closed"}, "disposition", "literal_error"),
        ({"disposition": "fraud"}, "investigator", "missing"),
        ({**FRAUD, "investigator": ""}, "investigator", "string_too_short"),
        ({**FRAUD, "note": "x" * 2001}, "note", "string_too_long"),
        ({**FRAUD, "note": 5}, "note", "string_type"),
        ({**FRAUD, "colour": "red"}, "colour", "extra_forbidden"),
    ],
)
def test_invalid_body_is_422_with_paths(gw: Gateway, body: dict[str, Any], path: str,
                                        error_type: str) -> None:
    gw.submit("C-odd")
    answer = problem(gw.label("C-odd", body), 422)
    assert {err["path"]: err["type"] for err in answer["errors"]}[path] == error_type
    assert gw.labels.published == []


def test_not_json_is_400_and_wrong_type_is_415(gw: Gateway) -> None:
    gw.submit("C-odd")
    problem(gw.client.post("/api/v1/claims/C-odd/disposition", data=b"{",
                           content_type="application/json"), 400)
    problem(gw.client.post("/api/v1/claims/C-odd/disposition", data=b"fraud",
                           content_type="text/plain"), 415)


def test_bad_claim_id_in_the_path_is_422(gw: Gateway) -> None:
    problem(gw.label("x" * 65, FRAUD), 422)


def test_broker_down_is_503_with_retry_after(gw: Gateway) -> None:
    gw.submit("C-odd")
    gw.labels.available = False
    response = gw.label("C-odd", FRAUD)
    problem(response, 503)
    assert response.headers["Retry-After"] == "5"


def test_write_needs_the_api_key_and_the_read_key_is_not_enough(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, api_key="s3cret-key", read_api_key="reader")
    try:
        gw.client.post("/api/v1/claims", json=claim_body(claim_id="C-odd", claim_amount=ODD),
                       headers={"X-API-Key": "s3cret-key"})
        problem(gw.label("C-odd", FRAUD), 401)
        problem(gw.label("C-odd", FRAUD, headers={"X-API-Key": "reader"}), 401)
        ok = gw.label("C-odd", FRAUD, headers={"Authorization": "Bearer s3cret-key"})
        assert ok.status_code == 201
        problem(gw.client.get("/api/v1/claims/C-odd/disposition"), 401)
        assert gw.client.get("/api/v1/claims/C-odd/disposition",
                             headers={"X-API-Key": "reader"}).status_code == 404  # not read yet
    finally:
        gw.rt.close()


# -- the outcome view's labels ------------------------------------------------------------


def view_decision(gw: Gateway, claim_id: str, offset: int) -> Decision:
    decision = gw.submit(claim_id)
    gw.rt.outcomes.add([Outcome(decision, "claims.investigate", 0, offset, decision.to_json())],
                       {("claims.investigate", 0): offset + 1})
    return decision


def view_label(gw: Gateway, decision: Decision, disposition: Any, offset: int,
               partition: int = 0) -> Label:
    label = Label.answering(decision, disposition, investigator="alice", decided_at=NOW)
    gw.rt.outcomes.add([], {("claims.labels", partition): offset + 1},
                       [StoredLabel(label, partition, offset, label.to_json())])
    return label


def queue(gw: Gateway, **params: str) -> list[tuple[str, str | None]]:
    response = gw.client.get("/api/v1/outcomes", query_string={"decision": "investigate",
                                                               **params})
    assert response.status_code == 200, response.get_data(as_text=True)
    return [(item["decision"]["claim"]["claim_id"],
             item["label"]["disposition"] if item["label"] else None)
            for item in response.get_json()["items"]]


def test_queue_items_carry_the_latest_label_and_open_hides_closed_claims(gw: Gateway) -> None:
    a, b, c = (view_decision(gw, f"C-{n}", i) for i, n in enumerate("abc"))
    view_label(gw, a, "fraud", 0)
    view_label(gw, b, "needs_info", 1)
    assert queue(gw) == [("C-c", None), ("C-b", "needs_info"), ("C-a", "fraud")]
    assert queue(gw, status="all") == queue(gw)
    assert queue(gw, status="open") == [("C-c", None), ("C-b", "needs_info")]
    view_label(gw, b, "legitimate", 2)
    view_label(gw, c, "fraud", 3)
    assert queue(gw, status="open") == []
    problem(gw.client.get("/api/v1/outcomes", query_string={"status": "closed"}), 422)


def test_a_later_label_wins_and_a_reread_older_one_changes_nothing(gw: Gateway) -> None:
    decision = view_decision(gw, "C-a", 0)
    view_label(gw, decision, "needs_info", 5)
    view_label(gw, decision, "fraud", 9)
    view_label(gw, decision, "legitimate", 5)  # an older offset read again
    response = gw.client.get("/api/v1/claims/C-a/disposition")
    assert response.status_code == 200
    assert json.loads(response.get_data())["disposition"] == "fraud"


def test_a_label_before_its_decision_shows_once_the_decision_arrives(gw: Gateway) -> None:
    decision = gw.submit("C-early")
    label = Label.answering(decision, "fraud", investigator="a", decided_at=NOW)
    gw.rt.outcomes.add([], {("claims.labels", 0): 1},
                       [StoredLabel(label, 0, 0, label.to_json())])
    assert queue(gw) == []
    gw.rt.outcomes.add([Outcome(decision, "claims.investigate", 0, 0, decision.to_json())],
                       {("claims.investigate", 0): 1})
    assert queue(gw) == [("C-early", "fraud")]
    assert queue(gw, status="open") == []


def test_get_disposition_is_404_without_a_label(gw: Gateway) -> None:
    body = problem(gw.client.get("/api/v1/claims/C-none/disposition"), 404)
    assert body["type"].endswith("no-disposition")


def test_openapi_documents_the_disposition_routes(gw: Gateway) -> None:
    doc = gw.client.get("/openapi.json").get_json()
    post = doc["paths"]["/api/v1/claims/{claim_id}/disposition"]["post"]
    assert {"201", "404", "409", "422", "503"} <= set(post["responses"])
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["disposition"]["enum"] == ["fraud", "legitimate", "needs_info"]
    assert "Label" in doc["components"]["schemas"]
    params = {p["name"] for p in doc["paths"]["/api/v1/outcomes"]["get"]["parameters"]}
    assert "status" in params


def test_the_open_queue_follows_the_latest_label_and_holds_investigated_claims_only(
    gw: Gateway,
) -> None:
    a, b = (view_decision(gw, f"C-{n}", i) for i, n in enumerate("ab"))
    approved = gw.submit("C-ok", amount=100.0)
    gw.rt.outcomes.add([Outcome(approved, "claims.approved", 0, 0, approved.to_json())],
                       {("claims.approved", 0): 1})
    view_label(gw, a, "fraud", 0)
    view_label(gw, b, "legitimate", 1)
    assert queue(gw, status="open") == []
    view_label(gw, a, "needs_info", 2)  # reopened: the latest label counts
    assert queue(gw, status="open") == [("C-a", "needs_info")]
    everything = gw.client.get("/api/v1/outcomes", query_string={"status": "open"}).get_json()
    assert [i["decision"]["claim"]["claim_id"] for i in everything["items"]] == ["C-a"]


def test_a_view_from_before_labels_gets_its_open_queue_filled(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path)
    try:
        a = view_decision(gw, "C-a", 0)
        view_decision(gw, "C-b", 1)
        view_label(gw, a, "fraud", 0)
        path = gw.rt.outcomes.path
    finally:
        gw.rt.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE open_queue")
    reopened = OutcomeStore(path)
    try:
        page = reopened.page("investigate", 10, None, only_open=True)
        items = json.loads(orjson.dumps(page.items))
        assert [item["decision"]["claim"]["claim_id"] for item in items] == ["C-b"]
    finally:
        reopened.close()


def test_open_pages_follow_the_cursor(gw: Gateway) -> None:
    for i in range(5):
        view_decision(gw, f"C-{i}", i)
    first = gw.client.get("/api/v1/outcomes", query_string={"status": "open", "limit": 2})
    body = first.get_json()
    assert [i["decision"]["claim"]["claim_id"] for i in body["items"]] == ["C-4", "C-3"]
    second = gw.client.get("/api/v1/outcomes", query_string={
        "status": "open", "limit": 2, "cursor": body["next_cursor"]}).get_json()
    assert [i["decision"]["claim"]["claim_id"] for i in second["items"]] == ["C-2", "C-1"]


def test_the_view_consumer_splits_decisions_and_labels_in_one_batch(gw: Gateway) -> None:
    decision = gw.submit("C-mix")
    label = Label.answering(decision, "fraud", investigator="a", decided_at=NOW)
    counted: list[tuple[int, int, int]] = []
    view = OutcomeConsumer(gw.rt.outcomes, "unused:9092", ["claims.investigate"], "g",
                           labels_topic="claims.labels",
                           on_stored=lambda *n: counted.append(n))
    batch = [FakeMessage(decision.to_json(), 7, _topic="claims.investigate"),
             FakeMessage(label.to_json(), 3, _topic="claims.labels"),
             FakeMessage(None, 4, _topic="claims.labels"),  # a tombstone: skipped
             FakeMessage(b'{"claim_id": "C-mix"}', 5, _topic="claims.labels")]  # invalid: skipped
    consumer = OffsetsOnly()
    view._handle(consumer, batch)  # type: ignore[arg-type]
    assert counted == [(1, 0, 2)]
    assert queue(gw) == [("C-mix", "fraud")]
    assert gw.rt.outcomes.positions() == {("claims.investigate", 0): 8, ("claims.labels", 0): 6}
    assert sorted((tp.topic, tp.offset) for tp in consumer.stored) == [
        ("claims.investigate", 8), ("claims.labels", 6)]
