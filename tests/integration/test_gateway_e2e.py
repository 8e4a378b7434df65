# ruff: noqa: F811 - pytest fixtures are imported from helper modules and used as arguments
"""The real gateway (``claimflow gateway``, granian) against the real broker and a real
``bentoml serve`` model service: decisions, topics, the outcome view, failures, restarts."""

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

from schemas import Claim, Decision, GatewaySource
from tests.integration import model_service_fixture
from tests.integration.kafka_helpers import consume_until
from tests.integration.model_service_fixture import ModelServiceProcess, free_port
from tests.integration.test_gateway_harness import (  # noqa: F401 - pytest fixtures
    GatewayServer,
    GatewayTopics,
    gateway_env,
    gateway_factory,
    gateway_model,
    gateway_topics,
    wait_until,
)
from tests.v2_factory import as_contract, v2_claim, v2_claims, without_labels

pytestmark = pytest.mark.integration

# The shared v2 model service (a champion that reads contract-version-2 claims).
v2_champion = model_service_fixture.v2_champion
_v2_model_service_session = model_service_fixture._v2_model_service_session
v2_model_service = model_service_fixture.v2_model_service

StartGateway = Callable[..., GatewayServer]


def claim(claim_id: str, amount: float = 1_250.0, **overrides: Any) -> dict[str, Any]:
    body = {"claim_id": claim_id, "claim_amount": amount, "num_services": 3,
            "patient_age": 47, "provider_id": 14_210, "days_since_last_claim": 32,
            "submitted_at": "2026-11-26T18:00:00Z"}
    body.update(overrides)
    return body


def unusual(claim_id: str) -> dict[str, Any]:
    return claim(claim_id, amount=480_000.0, num_services=60, patient_age=2,
                 days_since_last_claim=0)


@pytest.fixture
def gateway(gateway_factory: StartGateway, kafka_bootstrap: str,
            gateway_model: ModelServiceProcess, gateway_topics: GatewayTopics,
            group_id: str) -> GatewayServer:
    return gateway_factory(gateway_env(kafka_bootstrap, gateway_model.url, gateway_topics,
                                       group_id))


def keys_by_topic(bootstrap: str, topics: GatewayTopics, published: int
                  ) -> Counter[tuple[str, str]]:
    """Everything on the outcome topics. The gateway answers only after the broker confirmed,
    so ``published`` messages are there already; asking for one more and waiting a few seconds
    is what shows that nothing else (no duplicate) is."""
    messages = consume_until(bootstrap, [topics.approved, topics.investigate], published + 1,
                             timeout_s=6)
    return Counter((m.topic() or "", (m.key() or b"").decode()) for m in messages)


def test_submitted_claims_are_decided_published_once_and_viewable(
    gateway: GatewayServer, gateway_topics: GatewayTopics, kafka_bootstrap: str,
    gateway_model: ModelServiceProcess,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    bodies = [claim(f"{prefix}-ok"), unusual(f"{prefix}-odd")]
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        answers = [client.post("/api/v1/claims", json=body) for body in bodies]
        assert [a.status_code for a in answers] == [201, 201], answers[0].text
        decisions = [Decision.model_validate_json(a.content) for a in answers]

        # The decisions are the model's: same scores and routing as scikit-learn offline.
        claims = [Claim.from_json(json.dumps(b)) for b in bodies]
        scores, routes = gateway_model.champion.offline(claims)
        assert [d.decision for d in decisions] == routes == ["approve", "investigate"]
        assert [d.anomaly_score for d in decisions] == pytest.approx(list(scores), abs=1e-9)
        assert all(isinstance(d.source, GatewaySource) for d in decisions)
        assert decisions[1].reasons

        # Submitting again returns the first decision and publishes nothing new.
        again = client.post("/api/v1/claims", json=bodies[1])
        assert again.status_code == 200
        assert again.content == answers[1].content

        # Exactly once, on the right topic, keyed by claim_id.
        seen = keys_by_topic(kafka_bootstrap, gateway_topics, published=2)
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


def test_one_claim_submitted_at_once_to_both_workers_is_published_once(
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
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            start.wait(30)
            answer = client.post("/api/v1/claims", json=body)
            return answer.status_code, answer.content

    with ThreadPoolExecutor(racers) as pool:
        answers = list(pool.map(submit, range(racers)))
    assert Counter(status for status, _ in answers) == Counter({201: 1, 200: racers - 1})
    assert len({content for _, content in answers}) == 1  # everyone got the first decision
    seen = keys_by_topic(kafka_bootstrap, gateway_topics, published=1)
    assert seen == Counter({(gateway_topics.investigate, body["claim_id"]): 1})

    # Whichever worker answers the scrape, it counts every worker's requests.
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    route = 'method="POST",route="/api/v1/claims"'
    assert f'gateway_requests_total{{{route},status="201"}} 1.0' in metrics
    assert f'gateway_requests_total{{{route},status="200"}} {racers - 1.0}' in metrics


def test_batch_and_csv_use_the_real_model(
    gateway: GatewayServer, gateway_topics: GatewayTopics, kafka_bootstrap: str,
    gateway_model: ModelServiceProcess,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    bodies = [claim(f"{prefix}-b{i}", amount=900.0 + 50 * i) for i in range(8)]
    bodies.append(unusual(f"{prefix}-b8"))
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        batch = client.post("/api/v1/claims/batch", json={"claims": bodies})
        assert batch.status_code == 200, batch.text
        decided = [Decision.model_validate_json(json.dumps(d)) for d in batch.json()["decisions"]]
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
        assert "claim_amount" in rows[1]["error"]
        # b8 was submitted with an explicit submitted_at in the batch; here it has none, so
        # it is another claim under a used id.
        assert "already used" in rows[2]["error"]

        # Through granian too, an oversized body is a problem document.
        huge = client.post("/api/v1/claims", content=b" " * 2_000_000,
                           headers={"Content-Type": "application/json"})
        assert huge.status_code == 413
        assert huge.headers["content-type"] == "application/problem+json"

    seen = keys_by_topic(kafka_bootstrap, gateway_topics, published=10)
    assert sum(seen.values()) == 10
    assert max(seen.values()) == 1


def test_v2_claims_are_decided_by_a_v2_model_and_invalid_or_foreign_ones_are_422(
    gateway_factory: StartGateway, kafka_bootstrap: str, gateway_topics: GatewayTopics,
    group_id: str, v2_model_service: ModelServiceProcess,
) -> None:
    gateway = gateway_factory(gateway_env(kafka_bootstrap, v2_model_service.url,
                                          gateway_topics, group_id), name="gw-v2")
    prefix = uuid.uuid4().hex[:6]
    bodies = [without_labels(c) for c in v2_claims(3, seed=5, prefix=prefix)]
    line = {"procedure_code": "99213", "units": 1, "charge": 10.0}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        one = client.post("/api/v1/claims", json=bodies[0])
        assert one.status_code == 201, one.text
        decision = Decision.from_json(one.content)
        assert decision.claim.schema_version == 2
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
        assert foreign.status_code == 422
        [error] = foreign.json()["errors"]
        assert error["path"] == "schema_version"
        assert error["type"] == "unsupported_version"
        assert "schema_version 2; this claim is schema_version 1" in error["msg"]

    seen = keys_by_topic(kafka_bootstrap, gateway_topics, published=3)
    assert {key for _, key in seen} == {b["claim_id"] for b in bodies}


def test_idempotency_survives_a_gateway_restart(
    gateway: GatewayServer, gateway_topics: GatewayTopics, kafka_bootstrap: str
) -> None:
    body = unusual(f"restart-{uuid.uuid4().hex[:6]}")
    first = httpx.post(f"{gateway.url}/api/v1/claims", json=body, timeout=30)
    assert first.status_code == 201
    assert gateway.stop() == 0  # SIGTERM: a clean exit
    assert "gateway closed" in gateway.tail()
    gateway.start()
    again = httpx.post(f"{gateway.url}/api/v1/claims", json=body, timeout=30)
    assert again.status_code == 200
    assert again.content == first.content
    assert sum(keys_by_topic(kafka_bootstrap, gateway_topics, published=1).values()) == 1
    # The view resumes from its stored positions: still one row after the restart.
    stats = wait_until(
        lambda: httpx.get(f"{gateway.url}/api/v1/stats", timeout=5).json()["totals"]["total"],
        20, "the view")
    assert stats == 1


def test_model_service_down_is_503_and_nothing_is_published(
    gateway_factory: StartGateway, kafka_bootstrap: str, gateway_topics: GatewayTopics,
    group_id: str,
) -> None:
    dead_model = f"http://127.0.0.1:{free_port()}"
    server = gateway_factory(gateway_env(kafka_bootstrap, dead_model, gateway_topics, group_id),
                             wait_ready=False)
    response = httpx.post(f"{server.url}/api/v1/claims", json=claim("dead-model"), timeout=30)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["checks"]["model_service"] is False
    assert consume_until(kafka_bootstrap, [gateway_topics.approved, gateway_topics.investigate],
                         1, timeout_s=3) == []


def test_broker_unreachable_is_503_and_the_retry_returns_the_same_decision(
    gateway_factory: StartGateway, gateway_model: ModelServiceProcess,
    gateway_topics: GatewayTopics, group_id: str, kafka_bootstrap: str,
) -> None:
    # No broker listens there: publication cannot be confirmed within the budget.
    nowhere = f"127.0.0.1:{free_port()}"
    env = gateway_env(nowhere, gateway_model.url, gateway_topics, group_id,
                      GATEWAY_PUBLISH_TIMEOUT_S="1.5", GATEWAY_VIEW_ENABLED="false")
    server = gateway_factory(env, name="no-broker", wait_ready=False)
    body = unusual(f"nobroker-{uuid.uuid4().hex[:6]}")
    response = httpx.post(f"{server.url}/api/v1/claims", json=body, timeout=30)
    assert response.status_code == 503
    assert response.json()["type"].endswith("broker-unavailable")
    assert httpx.get(f"{server.url}/readyz", timeout=10).json()["checks"]["broker"] is False

    # Same home, now with the broker: the pending decision is published, not re-scored.
    server.stop()
    server.env_extra["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    server.start()
    retry = httpx.post(f"{server.url}/api/v1/claims", json=body, timeout=30)
    assert retry.status_code == 200
    decision = Decision.model_validate_json(retry.content)
    messages = consume_until(kafka_bootstrap, [gateway_topics.investigate], 1, timeout_s=20)
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
    GATEWAY_HEADER_READ_TIMEOUT_S (granian's default was 30 s, and nothing set it)."""
    env = gateway_env(kafka_bootstrap, f"http://127.0.0.1:{free_port()}", gateway_topics,
                      group_id, GATEWAY_HEADER_READ_TIMEOUT_S="2")
    server = gateway_factory(env, wait_ready=False)
    trickler = HeaderTrickler(server.port, connections=40)
    try:
        served = httpx.get(f"{server.url}/api/v1/stats", timeout=10)
        assert served.status_code == 200
        wait_until(trickler.all_closed_by_server, 20, "the server to close slow connections")
    finally:
        trickler.close()
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
