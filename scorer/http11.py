"""A small HTTP/1.1 client connection: what the model-service client needs, and no more.

It sends one pre-joined request and reads the answer with httptools' response parser
(llhttp, the parser Node.js uses): a status line, headers, and a body framed by
Content-Length, chunked encoding or the end of the connection. Why not ``http.client``
and why httptools: docs/model-service.md ("The client's transport").

Errors keep ``http.client``'s types, so callers treat both alike: a peer that closes the
connection raises :class:`http.client.RemoteDisconnected` (a ``ConnectionResetError``), an
answer that is not HTTP raises :class:`ProtocolError` (an ``http.client.HTTPException``),
and a timeout raises ``TimeoutError``.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Final

import httptools

MAX_HEAD_BYTES: Final = 64 * 1024
_READ_BYTES: Final = 65536


class ProtocolError(http.client.HTTPException):
    """The peer's answer is not well-formed HTTP/1.x."""


class _Answer:
    """httptools' callbacks for one answer: the final status, its framing and its body.
    Interim (1xx) answers before it are parsed as messages of their own and skipped."""

    def __init__(self, method: str) -> None:
        self.head_only = method == "HEAD"
        self.head_done = False
        self.done = False
        self.framed = False  # by Content-Length or chunked, not by the end of the connection
        self.parts: list[bytes] = []
        self.status = 0
        self.keep_alive = False
        self._parser = httptools.HttpResponseParser(self)

    @property
    def parser(self) -> httptools.HttpResponseParser:
        return self._parser

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or (name == b"transfer-encoding"
                                         and b"chunked" in value.lower()):
            self.framed = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status >= 200:
            self.status = status
            self.head_done = True
            self.done = self.head_only
            self.keep_alive = self._parser.should_keep_alive()
        else:
            self.framed = False  # the final answer's headers decide

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.done = True
            # Asked here, not later: llhttp resets it for the next message.
            self.keep_alive = self._parser.should_keep_alive()

    def forget_parser(self) -> None:
        """The parser refers back to this object: unlinking them frees both at once, not
        at the cycle collector's next pass."""
        del self._parser


class Http11Connection:
    """One keep-alive connection. Not thread-safe: one per thread."""

    def __init__(self, host: str, port: int, timeout_s: float,
                 tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout_s)
        try:
            # Small request, small answer: send at once instead of waiting for Nagle's timer.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self._sock: socket.socket | None = sock
        name = f"[{host}]" if ":" in host else host  # an IPv6 literal is bracketed
        self._host_header = name if port in (80, 443) else f"{name}:{port}"

    @property
    def closed(self) -> bool:
        return self._sock is None

    def request(self, method: str, target: str, body: bytes | None) -> tuple[int, bytes]:
        """Send one request and read its answer: ``(status, body)``. Afterwards the
        connection is closed if the server said so (see :attr:`closed`)."""
        if self._sock is None:
            raise http.client.NotConnected("the connection is closed")
        head = (f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"
                "Accept: application/json\r\n")
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._sock.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
        answer = _Answer(method)
        try:
            self._read_answer(self._sock, answer)
        finally:
            answer.forget_parser()
        if not answer.keep_alive:
            self.close()
        return answer.status, b"".join(answer.parts)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def _read_answer(self, sock: socket.socket, answer: _Answer) -> None:
        head_bytes = 0
        while not answer.done:
            chunk = sock.recv(_READ_BYTES)
            if not chunk:
                if answer.head_done and not answer.framed:  # framed by the end of the connection
                    self.close()
                    return
                raise http.client.RemoteDisconnected("the server closed the connection")
            try:
                answer.parser.feed_data(chunk)
            except httptools.HttpParserError as exc:
                raise ProtocolError(f"not an HTTP/1.x answer: {exc}") from None
            if not answer.head_done:
                head_bytes += len(chunk)
                if head_bytes > MAX_HEAD_BYTES:
                    raise ProtocolError(f"no end of headers within {MAX_HEAD_BYTES} bytes")
