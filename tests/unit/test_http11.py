"""The model client's HTTP/1.1 transport against scripted answers on a real loopback socket:
each way of framing a body, keep-alive and close, answers cut short, and answers that are
not HTTP."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from scorer.http11 import MAX_HEAD_BYTES, Http11Connection, ProtocolError


class ScriptedServer:
    """Accepts one connection; for each request it reads, sends the next scripted answer
    (raw bytes, possibly in several pieces); closes when the script ends."""

    def __init__(self, answers: list[list[bytes]]) -> None:
        self.requests: list[bytes] = []
        self._answers = answers
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            pending = b""
            for pieces in self._answers:
                while b"\r\n\r\n" not in pending:
                    pending += conn.recv(65536)
                head, _, rest = pending.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                pending = rest[length:]
                for piece in pieces:
                    conn.sendall(piece)

    def close(self) -> None:
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def scripted() -> Iterator[list[ScriptedServer]]:
    servers: list[ScriptedServer] = []
    yield servers
    for server in servers:
        server.close()


def connect(servers: list[ScriptedServer], *answers: list[bytes]) -> Http11Connection:
    servers.append(ScriptedServer(list(answers)))
    return Http11Connection("127.0.0.1", servers[-1].port, timeout_s=5)


def test_content_length_bodies_on_one_kept_alive_connection(
    scripted: list[ScriptedServer],
) -> None:
    conn = connect(scripted,
                   [b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", b'{"a":1}'],
                   [b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}"])
    assert conn.request("POST", "/score", b'{"claim":{}}') == (200, b'{"a":1}')
    assert not conn.closed
    assert conn.request("GET", "/readyz", None) == (503, b"{}")
    first, second = scripted[0].requests
    assert first.startswith(b"POST /score HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 12\r\n" in first
    assert first.endswith(b'\r\n\r\n{"claim":{}}')
    assert second.startswith(b"GET /readyz HTTP/1.1\r\n")
    assert b"Content-Length" not in second
    conn.close()


def test_chunked_body_with_extensions_and_trailers(scripted: list[ScriptedServer]) -> None:
    conn = connect(scripted, [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"4;ext=1\r\n[1,2\r\n", b"2\r\n,3\r\n1\r\n]\r\n0\r\nX-Trailer: y\r\n\r\n",
    ], [b"HTTP/1.1 204 No Content\r\n\r\n"])
    assert conn.request("POST", "/score_batch", b"{}") == (200, b"[1,2,3]")
    assert conn.request("POST", "/score_batch", b"{}") == (204, b"")
    conn.close()


def test_interim_answers_are_skipped(scripted: list[ScriptedServer]) -> None:
    conn = connect(scripted, [b"HTTP/1.1 100 Continue\r\n\r\n"
                              b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    assert conn.request("POST", "/x", b"{}") == (200, b"ok")
    conn.close()


def test_close_and_end_of_connection_framing(scripted: list[ScriptedServer]) -> None:
    said_close = connect(scripted, [b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                                    b"Content-Length: 2\r\n\r\nok"])
    assert said_close.request("GET", "/", None) == (200, b"ok")
    assert said_close.closed
    until_eof = connect(scripted, [b"HTTP/1.0 200 OK\r\n\r\n", b"all of ", b"it"])
    assert until_eof.request("GET", "/", None) == (200, b"all of it")
    assert until_eof.closed
    with pytest.raises(http.client.NotConnected):
        until_eof.request("GET", "/", None)


def test_a_peer_that_closes_or_garbles_raises_http_client_errors(
    scripted: list[ScriptedServer],
) -> None:
    silent_close = connect(scripted, [])
    # RemoteDisconnected if the close wins the race with the request, else a reset.
    with pytest.raises(ConnectionError):
        silent_close.request("GET", "/", None)
    cut_body = connect(scripted, [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])
    with pytest.raises(ConnectionResetError):
        cut_body.request("GET", "/", None)
    not_http = connect(scripted, [b"SSH-2.0-OpenSSH\r\n\r\n"])
    with pytest.raises(ProtocolError):
        not_http.request("GET", "/", None)
    bad_length = connect(scripted, [b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"])
    with pytest.raises(ProtocolError, match="Content-Length"):
        bad_length.request("GET", "/", None)
    bad_chunk = connect(scripted, [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   b"zz\r\n"])
    with pytest.raises(ProtocolError, match="chunk"):
        bad_chunk.request("GET", "/", None)
    for conn in (silent_close, cut_body, not_http, bad_length, bad_chunk):
        conn.close()


def test_a_head_answer_has_no_body_whatever_its_content_length(
    scripted: list[ScriptedServer],
) -> None:
    conn = connect(scripted, [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"],
                   [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    assert conn.request("HEAD", "/readyz", None) == (200, b"")
    assert conn.request("GET", "/readyz", None) == (200, b"ok")
    conn.close()


def test_an_answer_cut_short_raises_a_reset(scripted: list[ScriptedServer]) -> None:
    cut_head = connect(scripted, [b"HTTP/1.1 200 OK\r\nContent-Le"])
    cut_chunks = connect(scripted, [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"4\r\n[1,2\r\n"])
    said_close = connect(scripted, [b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                                    b"Content-Length: 10\r\n\r\nshort"])
    for conn in (cut_head, cut_chunks, said_close):
        with pytest.raises(http.client.RemoteDisconnected):
            conn.request("GET", "/", None)
        conn.close()


def test_a_head_without_end_is_refused(scripted: list[ScriptedServer]) -> None:
    endless = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * (MAX_HEAD_BYTES + 10)
    conn = connect(scripted, [endless])
    with pytest.raises(ProtocolError, match="headers"):
        conn.request("GET", "/", None)
    conn.close()


@pytest.mark.parametrize("head", [
    b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 abc OK", b"hello",
    b"HTTP/1.1 200 OK\r\nno colon", b"HTTP/1.1 200 OK\r\n: empty name",
    b"HTTP/1.1 200 OK\r\nSpace Before : x",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3",
])
def test_bad_status_and_header_lines_are_protocol_errors(
    scripted: list[ScriptedServer], head: bytes,
) -> None:
    conn = connect(scripted, [head + b"\r\n\r\nok"])
    with pytest.raises(ProtocolError):
        conn.request("GET", "/", None)
    conn.close()
