"""The model-service client's transport, against a small real HTTP server on loopback.

The server is ``http.server`` in a thread, answering like the model service would (or not):
enough to pin down keep-alive reuse, the one retry on a connection the server closed, and
how failures map to ``ModelUnavailable`` / ``ModelServiceError``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from schemas import Claim
from scorer.client import ModelClient, ModelServiceError, ModelUnavailable
from tests.unit.gateway_fakes import claim_body, fake_result

Answer = Callable[[BaseHTTPRequestHandler, bytes], tuple[int, bytes]]


def score_answer(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, bytes]:
    claim = Claim.model_validate_json(json.dumps(json.loads(body)["claim"]))
    return 200, fake_result(claim).model_dump_json().encode()


class Server:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections: set[tuple[str, int]] = set()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests += 1
                outer.connections.add(self.client_address)
                status, content = outer.answer(self, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _serve  # noqa: N815 - http.server's naming

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], Server]]:
    servers: list[Server] = []

    def start(answer: Answer) -> Server:
        servers.append(Server(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def claim(i: int = 1) -> Claim:
    return Claim.model_validate_json(json.dumps(claim_body(claim_id=f"K-{i}")))


def test_calls_reuse_one_connection_per_thread(serve: Callable[[Answer], Server]) -> None:
    server = serve(score_answer)
    with ModelClient(server.url) as client:
        assert [client.score(claim(i)).claim_id for i in range(5)] == [f"K-{i}" for i in range(5)]
    assert server.requests == 5
    assert len(server.connections) == 1


def test_a_connection_closed_by_the_server_is_retried_once(
    serve: Callable[[Answer], Server],
) -> None:
    def close_after_answer(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, bytes]:
        handler.close_connection = True  # the server drops the kept-alive connection silently
        return score_answer(handler, body)

    server = serve(close_after_answer)
    with ModelClient(server.url) as client:
        for i in range(3):
            assert client.score(claim(i)).claim_id == f"K-{i}"
    assert server.requests == 3
    assert len(server.connections) == 3  # a fresh connection for each retried call


def test_outages_and_bad_answers_are_told_apart(serve: Callable[[Answer], Server]) -> None:
    busy = serve(lambda handler, body: (503, b'{"error": "queue full"}'))
    missing = serve(lambda handler, body: (404, b'{"error": "no such endpoint"}'))
    garbled = serve(lambda handler, body: (200, b'{"not": "a score"}'))
    with ModelClient(busy.url) as client, pytest.raises(ModelUnavailable, match="503"):
        client.score(claim())
    with ModelClient(missing.url) as client, pytest.raises(ModelServiceError, match="404"):
        client.score(claim())
    with ModelClient(garbled.url) as client, pytest.raises(ModelServiceError):
        client.score(claim())


def test_refused_and_silent_peers_are_outages() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refused_port = unused.getsockname()[1]
    with ModelClient(f"http://127.0.0.1:{refused_port}") as client:
        with pytest.raises(ModelUnavailable):
            client.score(claim())
        assert client.ready() is False
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with ModelClient(f"http://127.0.0.1:{silent.getsockname()[1]}",
                         timeout_s=0.2) as client, pytest.raises(ModelUnavailable):
            client.score(claim())


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="http"):
        ModelClient("localhost:3000")


def test_an_unreadable_shadow_part_never_fails_the_champions_answers(
    serve: Callable[[Answer], Server],
) -> None:
    """A model service older than the worker answers the challenger as a list of answers:
    the champion's results still route the batch; the shadow part is reported unreadable."""
    def old_shape(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, bytes]:
        claims = [Claim.model_validate_json(json.dumps(c)) for c in json.loads(body)["claims"]]
        results = [json.loads(fake_result(c).model_dump_json()) for c in claims]
        return 200, json.dumps({"results": results, "shadow": results}).encode()

    def columns(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, bytes]:
        claims = [Claim.model_validate_json(json.dumps(c)) for c in json.loads(body)["claims"]]
        results = [json.loads(fake_result(c).model_dump_json()) for c in claims]
        shadow = {"model": results[0]["model"], "threshold": 0.5,
                  "claim_ids": [r["claim_id"] for r in results],
                  "scores": [0.1] * len(results), "decisions": ["approve"] * len(results)}
        return 200, json.dumps({"results": results, "shadow": shadow}).encode()

    batch = [claim(1), claim(2)]
    with ModelClient(serve(old_shape).url) as client:
        answer = client.score_batch_shadow(batch)
    assert [r.claim_id for r in answer.results] == ["K-1", "K-2"]
    assert answer.shadow is None
    assert answer.unreadable is not None
    assert "first at" in answer.unreadable
    with ModelClient(serve(columns).url) as client:
        answer = client.score_batch_shadow(batch)
    assert answer.unreadable is None
    assert answer.shadow is not None
    assert answer.shadow.claim_ids == ["K-1", "K-2"]
