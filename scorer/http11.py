"""A small HTTP/1.1 client connection: what the model-service client needs, and no more.

Not ``http.client``: it parses every response's headers with the ``email`` package. In a
profile of the gateway at ~600 req/s, the model-service calls were a quarter of the
process's Python time and ``http.client``'s header parsing and request building half of
that. This sends one pre-joined request and reads the answer from a buffer: a status line,
headers, and a body framed by Content-Length, chunked encoding or the end of the connection.

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

MAX_HEAD_BYTES: Final = 64 * 1024
_READ_BYTES: Final = 65536
_NO_BODY: Final = frozenset({204, 304})


class ProtocolError(http.client.HTTPException):
    """The peer's answer is not well-formed HTTP/1.x."""


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
        self._buffer = bytearray()

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
        status, headers, keep_alive = self._read_head()
        if status in _NO_BODY or method == "HEAD":
            content = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            content = self._read_chunked()
        elif "content-length" in headers:
            content = self._read_exactly(_content_length(headers["content-length"]))
        else:  # framed by the end of the connection
            content = self._read_to_end()
            keep_alive = False
        if not keep_alive:
            self.close()
        return status, content

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buffer.clear()

    # -- reading ------------------------------------------------------------------------

    def _read_head(self) -> tuple[int, dict[str, str], bool]:
        while True:
            lines = self._read_until(b"\r\n\r\n", MAX_HEAD_BYTES).split(b"\r\n")
            version, status = parse_status_line(lines[0])
            if 100 <= status < 200:  # an interim answer (e.g. 100 Continue): the real one follows
                continue
            headers = parse_headers(lines[1:])
            connection = headers.get("connection", "").lower()
            keep_alive = version == "HTTP/1.1" and "close" not in connection
            return status, headers, keep_alive

    def _read_until(self, marker: bytes, limit: int) -> bytes:
        while (end := self._buffer.find(marker)) < 0:
            if len(self._buffer) > limit:
                raise ProtocolError(f"no {marker!r} within {limit} bytes")
            self._fill()
        found = bytes(self._buffer[:end])
        del self._buffer[:end + len(marker)]
        return found

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        content = bytes(self._buffer[:size])
        del self._buffer[:size]
        return content

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self._read_until(b"\r\n", 1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
            if size < 0:
                raise ProtocolError(f"bad chunk size {size_line[:40]!r}")
            if size == 0:
                while self._read_until(b"\r\n", MAX_HEAD_BYTES):  # trailers, then a blank line
                    pass
                return b"".join(parts)
            parts.append(self._read_exactly(size))
            if self._read_exactly(2) != b"\r\n":
                raise ProtocolError("a chunk does not end with CRLF")

    def _read_to_end(self) -> bytes:
        while self._fill(eof_ok=True):
            pass
        content = bytes(self._buffer)
        self._buffer.clear()
        return content

    def _fill(self, eof_ok: bool = False) -> bool:
        assert self._sock is not None
        chunk = self._sock.recv(_READ_BYTES)
        if not chunk:
            if eof_ok:
                return False
            raise http.client.RemoteDisconnected("the server closed the connection")
        self._buffer += chunk
        return True


def parse_status_line(line: bytes) -> tuple[str, int]:
    """``b"HTTP/1.1 200 OK"`` -> ``("HTTP/1.1", 200)``."""
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 \
            or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {line[:80]!r}")
    return parts[0].decode("ascii"), int(parts[1])


def parse_headers(lines: list[bytes]) -> dict[str, str]:
    """Header lines -> lower-cased names to values (a repeated name keeps the last one)."""
    headers = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line[:80]!r}")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


def _content_length(value: str) -> int:
    if not value.isdigit():
        raise ProtocolError(f"bad Content-Length {value[:40]!r}")
    return int(value)
