# ruff: noqa: F811 - pytest fixtures are imported from helper modules and used as arguments
"""The real gateway (``claimflow gateway``, granian) against the real broker, a real stream
worker (``claimflow score``) and a real ``bentoml serve`` model service: claims submitted over
HTTP are produced to the claims topic and decided by the worker; the gateway answers with the
worker's decision, replays, conflicts (also with ids first seen on the stream), 202 when the
worker is late, 422 when it dead-letters, restarts and a broker outage."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil
import pytest
from confluent_kafka import Producer

from schemas import Claim, DeadLetter, Decision, StreamSource
from tests.integration import model_service_fixture
from tests.integration.gateway_harness import (  # noqa: F401 - pytest fixtures
    GatewayServer,
    GatewayTopics,
    StreamWorker,
    claim,
    gateway_env,
    gateway_factory,
    gateway_model,
    gateway_topics,
    stream_worker_factory,
    unusual,
    wait_until,
)
from tests.integration.kafka_helpers import consume_until
from tests.integration.model_service_fixture import ModelServiceProcess, free_port
from tests.v2_factory import as_contract, v2_claim, v2_claims, without_labels

pytestmark = pytest.mark.integration

# The shared v2 model service (a champion that reads contract-version-2 claims).
v2_champion = model_service_fixture.v2_champion
_v2_model_service_session = model_service_fixture._v2_model_service_session
v2_model_service = model_service_fixture.v2_model_service

StartGateway = Callable[..., GatewayServer]
StartWorker = Callable[..., StreamWorker]
# Generous: the first decision waits for the worker's first batch after it joined its group.
DECISION_TIMEOUT_S = "30"


@pytest.fixture
def worker(stream_worker_factory: StartWorker,
           gateway_model: ModelServiceProcess) -> StreamWorker:
    return stream_worker_factory(gateway_model.url).wait_assigned()


@pytest.fixture
def gateway(gateway_factory: StartGateway, kafka_bootstrap: str, worker: StreamWorker,
            gateway_topics: GatewayTopics, group_id: str) -> GatewayServer:
    return gateway_factory(gateway_env(kafka_bootstrap, gateway_topics, group_id,
                                       GATEWAY_DECISION_TIMEOUT_S=DECISION_TIMEOUT_S))


def keys_by_topic(bootstrap: str, topics: list[str], expected: int
                  ) -> Counter[tuple[str, str]]:
    """Everything on ``topics`` (read_committed). The gateway answers only after the worker
    committed, so ``expected`` messages are there already; asking for one more and waiting a
    few seconds is what shows that nothing else (no duplicate) is."""
    messages = consume_until(bootstrap, topics, expected + 1, timeout_s=6)
    return Counter((m.topic() or "", (m.key() or b"").decode()) for m in messages)


def outcome_topics(topics: GatewayTopics) -> list[str]:
    return [topics.approved, topics.investigate]


def test_submitted_claims_are_decided_by_the_stream_worker_once_and_viewable(
    gateway: GatewayServer, gateway_topics: GatewayTopics, kafka_bootstrap: str,
    gateway_model: ModelServiceProcess,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    bodies = [claim(f"{prefix}-ok"), unusual(f"{prefix}-odd")]
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        answers = [client.post("/api/v1/claims", json=body) for body in bodies]
        assert [a.status_code for a in answers] == [201, 201], answers[0].text
        decisions = [Decision.model_validate_json(a.content) for a in answers]

        # Decided by the worker: it read the claim from the claims topic (source), with the
        # model's scores and routing (same as scikit-learn offline).
        for decision in decisions:
            assert isinstance(decision.source, StreamSource)
            assert decision.source.topic == gateway_topics.claims
        claims = [Claim.from_json(json.dumps(b)) for b in bodies]
        scores, routes = gateway_model.champion.offline(claims)
        assert [d.decision for d in decisions] == routes == ["approve", "investigate"]
        assert [d.anomaly_score for d in decisions] == pytest.approx(list(scores), abs=1e-9)
        assert decisions[1].reasons

        # Submitting again returns the first decision and produces nothing new.
        again = client.post("/api/v1/claims", json=bodies[1])
        assert again.status_code == 200
        assert again.content == answers[1].content

        # Each claim once on the claims topic (keyed by claim_id: v1), each decision once.
        produced = keys_by_topic(kafka_bootstrap, [gateway_topics.claims], 2)
        assert produced == Counter({(gateway_topics.claims, f"{prefix}-ok"): 1,
                                    (gateway_topics.claims, f"{prefix}-odd"): 1})
        seen = keys_by_topic(kafka_bootstrap, outcome_topics(gateway_topics), 2)
        assert seen == Counter({(gateway_topics.approved, f"{prefix}-ok"): 1,
                                (gateway_topics.investigate, f"{prefix}-odd"): 1})

        # The outcome view (a consumer of those topics) has both, in the API.
        def in_view() -> dict[str, Any] | None:
            stats = client.get("/api/v1/stats").json()
            return stats if stats["totals"]["total"] == 2 else None

        stats = wait_until(in_view, 20, "the outcome view to hold both decisions")
        assert stats["totals"]["investigate"] == 1
        assert stats["by_model"] == [{"model_name": "claim-anomaly", "model_version": "1",
                                      "approve": 1, "investigate": 1, "total": 2,
                                      "investigation_rate": 0.5}]
        queue = client.get("/api/v1/outcomes", params={"decision": "investigate"}).json()
        [item] = queue["items"]
        assert item["topic"] == gateway_topics.investigate
        assert item["decision"] == json.loads(answers[1].content)
        looked_up = client.get(f"/api/v1/claims/{prefix}-ok")
        assert looked_up.json() == json.loads(answers[0].content)

        metrics = client.get("/metrics").text
        assert 'gateway_view_messages_total{result="inserted"} 2.0' in metrics
        ready = client.get("/readyz").json()
        assert ready == {"ready": True, "checks": {"broker": True, "replies": True,
                                                   "outcome_view": True}}


def test_one_claim_submitted_at_once_to_both_workers_is_produced_once(
    gateway: GatewayServer, gateway_topics: GatewayTopics, kafka_bootstrap: str,
) -> None:
    assert gateway.process is not None
    workers = psutil.Process(gateway.process.pid).children()
    assert len(workers) == 2, "the default gateway runs two worker processes"
    body = unusual(f"{uuid.uuid4().hex[:6]}-race")
    racers = 12
    start = threading.Barrier(racers)

    def submit(_: int) -> tuple[int, bytes]:
        # One connection each: granian's workers accept them in turn.
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            start.wait(30)
            answer = client.post("/api/v1/claims", json=body)
            return answer.status_code, answer.content

    with ThreadPoolExecutor(racers) as pool:
        answers = list(pool.map(submit, range(racers)))
    assert Counter(status for status, _ in answers) == Counter({201: 1, 200: racers - 1})
    assert len({content for _, content in answers}) == 1  # everyone got the first decision
    produced = keys_by_topic(kafka_bootstrap, [gateway_topics.claims], 1)
    assert produced == Counter({(gateway_topics.claims, body["claim_id"]): 1})
    seen = keys_by_topic(kafka_bootstrap, outcome_topics(gateway_topics), 1)
    assert seen == Counter({(gateway_topics.investigate, body["claim_id"]): 1})

    # Whichever worker answers the scrape, it counts every worker's requests.
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    route = 'method="POST",route="/api/v1/claims"'
    assert f'gateway_requests_total{{{route},status="201"}} 1.0' in metrics
    assert f'gateway_requests_total{{{route},status="200"}} {racers - 1.0}' in metrics


def test_batch_and_csv_are_decided_by_the_stream(
    gateway: GatewayServer, gateway_topics: GatewayTopics, kafka_bootstrap: str,
    gateway_model: ModelServiceProcess,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    bodies = [claim(f"{prefix}-b{i}", amount=900.0 + 50 * i) for i in range(8)]
    bodies.append(unusual(f"{prefix}-b8"))
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        batch = client.post("/api/v1/claims/batch", json={"claims": bodies})
        assert batch.status_code == 200, batch.text
        assert batch.json()["pending"] == []
        decided = [Decision.model_validate_json(json.dumps(d)) for d in batch.json()["decisions"]]
        assert [d.claim_id for d in decided] == [b["claim_id"] for b in bodies]
        assert all(isinstance(d.source, StreamSource) for d in decided)
        claims = [Claim.from_json(json.dumps(b)) for b in bodies]
        _, routes = gateway_model.champion.offline(claims)
        assert [d.decision for d in decided] == routes

        csv = ("claim_id,claim_amount,num_services,patient_age,provider_id,"
               "days_since_last_claim\n"
               f"{prefix}-c1,1100,2,50,14210,20\n"
               f"{prefix}-c2,-1,2,50,14210,20\n"
               f"{prefix}-b8,480000,60,2,14210,0\n")
        upload = client.post("/api/v1/claims/csv", content=csv.encode(),
                             headers={"Content-Type": "text/csv"})
        assert upload.status_code == 200, upload.text
        rows = upload.json()["rows"]
        assert rows[0]["decision"]["decision"] == "approve"
        assert rows[0]["decision"]["source"]["kind"] == "stream"
        assert "claim_amount" in rows[1]["error"]
        # b8 was submitted with an explicit submitted_at in the batch; here it has none, so
        # it is another claim under a used id.
        assert "already used" in rows[2]["error"]

        # Through granian too, an oversized body is a problem document.
        huge = client.post("/api/v1/claims", content=b" " * 2_000_000,
                           headers={"Content-Type": "application/json"})
        assert huge.status_code == 413
        assert huge.headers["content-type"] == "application/problem+json"

    produced = keys_by_topic(kafka_bootstrap, [gateway_topics.claims], 10)
    assert sum(produced.values()) == 10
    seen = keys_by_topic(kafka_bootstrap, outcome_topics(gateway_topics), 10)
    assert sum(seen.values()) == 10
    assert max(seen.values()) == 1


def test_v2_claims_keyed_by_member_are_decided_and_a_refused_claim_is_a_clear_422(
    gateway_factory: StartGateway, kafka_bootstrap: str, gateway_topics: GatewayTopics,
    group_id: str, v2_model_service: ModelServiceProcess, stream_worker_factory: StartWorker,
) -> None:
    """The worker's model reads v2 claims only: a v1 claim is dead-lettered by the worker
    (unsupported_version), and the client gets that as a 422, not a hang or a 202."""
    stream_worker_factory(v2_model_service.url).wait_assigned()
    gateway = gateway_factory(gateway_env(kafka_bootstrap, gateway_topics, group_id,
                                          GATEWAY_DECISION_TIMEOUT_S=DECISION_TIMEOUT_S),
                              name="gw-v2")
    prefix = uuid.uuid4().hex[:6]
    bodies = [without_labels(c) for c in v2_claims(3, seed=5, prefix=prefix)]
    line = {"procedure_code": "99213", "units": 1, "charge": 10.0}
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        one = client.post("/api/v1/claims", json=bodies[0])
        assert one.status_code == 201, one.text
        decision = Decision.from_json(one.content)
        assert decision.claim.schema_version == 2
        assert isinstance(decision.source, StreamSource)
        [claim_v2] = as_contract([bodies[0]])
        scores, routes = v2_model_service.champion.offline([claim_v2])
        assert decision.decision == routes[0]
        assert abs(decision.anomaly_score - scores[0]) <= 1e-9
        batch = client.post("/api/v1/claims/batch", json={"claims": bodies[1:]})
        assert batch.status_code == 200, batch.text
        assert len(batch.json()["decisions"]) == 2

        bad = v2_claim(claim_id=f"{prefix}-bad", lines=[line] * 3 + [{**line, "units": 0}])
        invalid = client.post("/api/v1/claims", json=bad)
        assert invalid.status_code == 422
        assert {e["path"] for e in invalid.json()["errors"]} == {"lines.3.units"}

        foreign = client.post("/api/v1/claims", json=claim(f"{prefix}-v1"))
        assert foreign.status_code == 422, foreign.text
        assert foreign.json()["type"].endswith("unsupported-version")
        [error] = foreign.json()["errors"]
        assert error["path"] == "schema_version"
        assert error["type"] == "unsupported_version"
        assert "schema_version 2; this claim is schema_version 1" in error["msg"]
        # Dead-lettered, not decided: the id is not taken; its lookup gives the reason.
        looked_up = client.get(f"/api/v1/claims/{prefix}-v1")
        assert looked_up.status_code == 422
        assert looked_up.json()["errors"] == foreign.json()["errors"]

    # v2 claims are produced keyed by member_id, as the producer does; decisions by claim_id.
    produced = consume_until(kafka_bootstrap, [gateway_topics.claims], 5, timeout_s=20)
    keys = {(m.key() or b"").decode() for m in produced}
    assert {b["member_id"] for b in bodies} <= keys
    seen = keys_by_topic(kafka_bootstrap, outcome_topics(gateway_topics), 3)
    assert {key for _, key in seen} == {b["claim_id"] for b in bodies}
    [letter] = consume_until(kafka_bootstrap, [gateway_topics.deadletter], 1, timeout_s=20)
    assert b"unsupported_version" in (letter.value() or b"")


def produce_claim(bootstrap: str, topic: str, body: dict[str, Any]) -> None:
    """A claim from the producer, not through the gateway (v1: keyed by claim_id, v2: by
    member_id)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    key = body.get("member_id", body["claim_id"])
    producer.produce(topic, key=key.encode(), value=json.dumps(body).encode())
    assert producer.flush(30) == 0


def test_a_claim_stored_before_a_gateway_crash_and_sent_again_is_decided_once(
    gateway_factory: StartGateway, kafka_bootstrap: str, gateway_topics: GatewayTopics,
    group_id: str, v2_model_service: ModelServiceProcess, stream_worker_factory: StartWorker,
) -> None:
    """The crash window: the broker stored a claim, its gateway died before recording that,
    and the client's retry (without submitted_at: the gateway fills in another) reaches a
    gateway that produces it again. The worker decides the claim once, from the first copy,
    and sets the second aside (``duplicate_claim_id``); the retry gets the first decision."""
    gateway = gateway_factory(gateway_env(kafka_bootstrap, gateway_topics, group_id,
                                          GATEWAY_DECISION_TIMEOUT_S="1"), name="gw-crash")
    [body] = [without_labels(c) for c in v2_claims(1, seed=11, prefix=uuid.uuid4().hex[:6])]
    produce_claim(kafka_bootstrap, gateway_topics.claims, body)  # before the crash
    retry = {k: v for k, v in body.items() if k != "submitted_at"}
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        accepted = client.post("/api/v1/claims", json=retry)
        assert accepted.status_code == 202, accepted.text  # no worker runs yet
        stream_worker_factory(v2_model_service.url).wait_assigned()
        location = accepted.headers["Location"]
        decided = wait_until(lambda: (r := client.get(location)).status_code == 200 and r,
                             60, "the stream's decision at the Location")
        decision = Decision.from_json(decided.content)
        assert isinstance(decision.source, StreamSource)
        assert decision.source.offset == 0  # the first copy's
        replay = client.post("/api/v1/claims", json=retry)
        assert replay.status_code == 200, replay.text
        assert replay.content == decided.content
    assert sum(keys_by_topic(kafka_bootstrap, [gateway_topics.claims], 2).values()) == 2
    assert sum(keys_by_topic(kafka_bootstrap, outcome_topics(gateway_topics), 1).values()) == 1
    [letter] = consume_until(kafka_bootstrap, [gateway_topics.deadletter], 1, timeout_s=20)
    copy = DeadLetter.from_json(letter.value() or b"")
    assert (copy.error_kind, copy.source.offset) == ("duplicate_claim_id", 1)


def test_a_dead_letter_after_the_202_turns_the_location_into_the_422(
    gateway_factory: StartGateway, kafka_bootstrap: str, gateway_topics: GatewayTopics,
    group_id: str, v2_model_service: ModelServiceProcess, stream_worker_factory: StartWorker,
) -> None:
    """The request gave up (202) before the worker ran; the worker then dead-letters the
    claim (its model reads v2 only): the reply consumer records it and the Location answers
    the 422 with the worker's reason instead of 202 for ever."""
    gateway = gateway_factory(gateway_env(kafka_bootstrap, gateway_topics, group_id,
                                          GATEWAY_DECISION_TIMEOUT_S="1"), name="gw-late-dl")
    body = claim(f"late-dl-{uuid.uuid4().hex[:6]}")
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        accepted = client.post("/api/v1/claims", json=body)
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["Location"]
        stream_worker_factory(v2_model_service.url).wait_assigned()
        refused = wait_until(lambda: (r := client.get(location)).status_code == 422 and r,
                             60, "the worker's dead letter at the Location")
        problem = refused.json()
        assert problem["type"].endswith("unsupported-version")
        [error] = problem["errors"]
        assert error["type"] == "unsupported_version"
        assert "this claim is schema_version 1" in error["msg"]


def test_an_id_first_decided_on_the_stream_is_replayed_or_a_conflict(
    gateway: GatewayServer, gateway_topics: GatewayTopics, kafka_bootstrap: str,
) -> None:
    """The hole of issue 17: a client must not be able to take a stream claim's id."""
    body = unusual(f"stream-{uuid.uuid4().hex[:6]}")
    produce_claim(kafka_bootstrap, gateway_topics.claims, body)
    url = f"{gateway.url}/api/v1/claims/{body['claim_id']}"
    looked_up = wait_until(lambda: (r := httpx.get(url, timeout=5)).status_code == 200 and r,
                           30, "the stream's decision in the outcome view")
    stream_decision = Decision.model_validate_json(looked_up.content)
    assert stream_decision.decision == "investigate"

    harmless = {**body, "claim_amount": 100.0, "num_services": 1}
    conflict = httpx.post(f"{gateway.url}/api/v1/claims", json=harmless, timeout=60)
    assert conflict.status_code == 409
    assert conflict.json()["claim_ids"] == [body["claim_id"]]
    replay = httpx.post(f"{gateway.url}/api/v1/claims", json=body, timeout=60)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == looked_up.content
    # The gateway produced nothing: the one claim on the topic is the producer's.
    produced = keys_by_topic(kafka_bootstrap, [gateway_topics.claims], 1)
    assert sum(produced.values()) == 1


def test_no_decision_by_the_deadline_is_202_and_the_later_get_has_the_decision(
    gateway_factory: StartGateway, kafka_bootstrap: str, gateway_topics: GatewayTopics,
    group_id: str, stream_worker_factory: StartWorker, gateway_model: ModelServiceProcess,
) -> None:
    """No worker runs (and the gateway needs no model service to be ready): the claim waits
    on the claims topic, the client gets 202 + Location; once a worker runs, the Location
    has the stream's decision and a resubmission replays it."""
    gateway = gateway_factory(gateway_env(kafka_bootstrap, gateway_topics, group_id,
                                          GATEWAY_DECISION_TIMEOUT_S="1"), name="gw-late")

    def answers_ready() -> dict[str, Any] | None:
        ready: dict[str, Any] = httpx.get(f"{gateway.url}/readyz", timeout=10).json()
        return ready if ready["ready"] else None

    # Each of the two worker processes is ready once its own consumers have polled; the
    # start waited for one ready answer, and this request may reach the other process.
    ready = wait_until(answers_ready, 20, "the gateway ready without a model service")
    assert "model_service" not in ready["checks"]
    body = unusual(f"late-{uuid.uuid4().hex[:6]}")
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        accepted = client.post("/api/v1/claims", json=body)
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["Location"]
        assert location == f"/api/v1/claims/{body['claim_id']}"
        assert accepted.json()["status"] == "pending"
        assert client.get(location).status_code == 202
        assert client.post("/api/v1/claims", json=body).status_code == 202  # waits again
        assert client.post("/api/v1/claims",
                           json={**body, "patient_age": 60}).status_code == 409

        stream_worker_factory(gateway_model.url).wait_assigned()
        decided = wait_until(lambda: (r := client.get(location)).status_code == 200 and r,
                             60, "the stream's decision at the Location")
        decision = Decision.model_validate_json(decided.content)
        assert isinstance(decision.source, StreamSource)
        assert decision.decision == "investigate"
        replay = client.post("/api/v1/claims", json=body)
        assert replay.status_code == 200
        assert replay.content == decided.content
        metrics = client.get("/metrics").text
        assert 'gateway_undecided_total{cause="timeout"} 2.0' in metrics
    produced = keys_by_topic(kafka_bootstrap, [gateway_topics.claims], 1)
    assert sum(produced.values()) == 1  # the retries produced nothing


def test_idempotency_survives_a_gateway_restart(
    gateway: GatewayServer, gateway_topics: GatewayTopics, kafka_bootstrap: str
) -> None:
    body = unusual(f"restart-{uuid.uuid4().hex[:6]}")
    first = httpx.post(f"{gateway.url}/api/v1/claims", json=body, timeout=60)
    assert first.status_code == 201
    assert gateway.stop() == 0  # SIGTERM: a clean exit
    assert "gateway closed" in gateway.tail()
    gateway.start()
    again = httpx.post(f"{gateway.url}/api/v1/claims", json=body, timeout=60)
    assert again.status_code == 200
    assert again.content == first.content
    assert sum(keys_by_topic(kafka_bootstrap, [gateway_topics.claims], 1).values()) == 1
    assert sum(keys_by_topic(kafka_bootstrap, outcome_topics(gateway_topics), 1).values()) == 1
    # The view resumes from its stored positions: still one row after the restart.
    stats = wait_until(
        lambda: httpx.get(f"{gateway.url}/api/v1/stats", timeout=5).json()["totals"]["total"],
        20, "the view")
    assert stats == 1


def test_broker_unreachable_is_503_and_the_retry_is_decided_once(
    gateway_factory: StartGateway, worker: StreamWorker,
    gateway_topics: GatewayTopics, group_id: str, kafka_bootstrap: str,
) -> None:
    # No broker listens there: the claim cannot be confirmed within the budget.
    nowhere = f"127.0.0.1:{free_port()}"
    env = gateway_env(nowhere, gateway_topics, group_id, GATEWAY_PUBLISH_TIMEOUT_S="1.5",
                      GATEWAY_VIEW_ENABLED="false",
                      GATEWAY_DECISION_TIMEOUT_S=DECISION_TIMEOUT_S)
    server = gateway_factory(env, name="no-broker", wait_ready=False)
    body = unusual(f"nobroker-{uuid.uuid4().hex[:6]}")
    response = httpx.post(f"{server.url}/api/v1/claims", json=body, timeout=60)
    assert response.status_code == 503
    assert response.json()["type"].endswith("broker-unavailable")
    assert httpx.get(f"{server.url}/readyz", timeout=10).json()["checks"]["broker"] is False

    # Same home, now with the broker: the claim is produced now, and decided once.
    server.stop()
    server.env_extra["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    server.start()
    retry = httpx.post(f"{server.url}/api/v1/claims", json=body, timeout=60)
    assert retry.status_code == 201, retry.text
    decision = Decision.model_validate_json(retry.content)
    messages = consume_until(kafka_bootstrap, [gateway_topics.investigate], 2, timeout_s=6)
    assert [Decision.from_json(m.value() or b"") for m in messages] == [decision]


class HeaderTrickler:
    """Connections that send their request headers one byte at a time and never finish
    (slowloris). The interval between bytes is how slow the client is, not a wait in the
    test: every assertion below polls until a deadline."""

    HEAD = b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 4096

    def __init__(self, port: int, connections: int) -> None:
        self.sockets = [socket.create_connection(("127.0.0.1", port), timeout=5)
                        for _ in range(connections)]
        self.closed: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        position = 0
        while not self._stop.wait(0.2) and position < len(self.HEAD):
            for index, sock in enumerate(self.sockets):
                if index not in self.closed:
                    try:
                        sock.sendall(self.HEAD[position:position + 1])
                    except OSError:
                        self.closed.add(index)
            position += 1

    def all_closed_by_server(self) -> bool:
        for index, sock in enumerate(self.sockets):
            if index in self.closed:
                continue
            sock.setblocking(False)
            try:
                if sock.recv(65536) == b"":
                    self.closed.add(index)
            except BlockingIOError:
                pass
            except OSError:
                self.closed.add(index)
        return len(self.closed) == len(self.sockets)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()


def test_slow_headers_pin_no_request_thread_and_are_cut_off(
    gateway_factory: StartGateway, kafka_bootstrap: str, gateway_topics: GatewayTopics,
    group_id: str,
) -> None:
    """More trickling connections than the gateway has request threads (2 workers x 8):
    another client is still served, and the server closes them after
    GATEWAY_HEADER_READ_TIMEOUT_S, which the gateway passes to granian."""
    env = gateway_env(kafka_bootstrap, gateway_topics, group_id,
                      GATEWAY_HEADER_READ_TIMEOUT_S="2", GATEWAY_THREADS="8")
    server = gateway_factory(env, wait_ready=False)
    trickler = HeaderTrickler(server.port, connections=40)
    try:
        served = httpx.get(f"{server.url}/api/v1/stats", timeout=10)
        assert served.status_code == 200
        wait_until(trickler.all_closed_by_server, 20, "the server to close slow connections")
    finally:
        trickler.close()
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
