"""A raw HTTP/1.1 client for hostile requests: it sends exactly the bytes it is given.

httpx refuses to send what a hostile client sends (a ``Content-Length`` that lies or is not a
number, non-ASCII header values, request targets with raw ``..``), so tests that play that
client speak HTTP over a plain socket. ``Connection`` keeps one connection alive across
requests and reconnects when the server closed it; ``request_bytes`` builds a request.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawResponse:
    """One response: status, headers (lower-case names; the last of repeated ones) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class NoResponse(Exception):
    """The server closed the connection without answering."""


def request_bytes(
    method: str,
    target: str | bytes,
    headers: list[tuple[str, str | bytes]] | None = None,
    body: bytes = b"",
    *,
    content_length: str | bytes | None = None,
) -> bytes:
    """A request with ``Host`` and ``Content-Length`` (``len(body)`` unless given, even a lie;
    none for a bodyless request without ``content_length``)."""
    raw_target = target.encode("latin-1") if isinstance(target, str) else target
    lines = [method.encode("latin-1") + b" " + raw_target + b" HTTP/1.1", b"Host: test"]
    for name, value in headers or []:
        raw = value.encode("latin-1") if isinstance(value, str) else value
        lines.append(name.encode("latin-1") + b": " + raw)
    if content_length is None and (body or method in ("POST", "PUT")):
        content_length = str(len(body))
    if content_length is not None:
        length = content_length.encode() if isinstance(content_length, str) else content_length
        lines.append(b"Content-Length: " + length)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Connection:
    """One keep-alive connection to ``url``, re-opened whenever the server closed it."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.address = (parts.hostname, parts.port)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection(self.address, timeout=self.timeout)
            self._buffer = b""
        return self._sock

    def exchange(self, data: bytes, *, head: bool = False, last: bool = False) -> RawResponse:
        """Send ``data`` and read one response (no body for ``head``); ``last`` half-closes the
        connection after sending and closes it after the answer (for requests that lie about
        their length: the server must not wait for the rest)."""
        sock = self._connect()
        try:
            sock.sendall(data)
            if last:
                sock.shutdown(socket.SHUT_WR)
            response = self._read_response(head)
        except (ConnectionError, TimeoutError, NoResponse):
            self.close()
            raise
        if last or response.headers.get("connection", "").lower() == "close":
            self.close()
        return response

    def send(self, data: bytes) -> None:
        """Send a request without waiting for its answer (``read`` takes it later)."""
        self._connect().sendall(data)

    def read(self, *, head: bool = False) -> RawResponse:
        """The next answer on this connection."""
        return self._read_response(head)

    def _fill(self) -> bool:
        assert self._sock is not None
        chunk = self._sock.recv(1 << 16)
        self._buffer += chunk
        return bool(chunk)

    def _read_response(self, head: bool) -> RawResponse:
        while b"\r\n\r\n" not in self._buffer:
            if not self._fill():
                raise NoResponse("the server closed the connection without an answer")
        raw_head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head or status in (204, 304) or 100 <= status < 200:
            return RawResponse(status, headers, b"")
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self._buffer) < length:
                if not self._fill():
                    raise NoResponse("the server closed the connection mid-body")
            body, self._buffer = self._buffer[:length], self._buffer[length:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:  # the body runs to the end of the connection
            while self._fill():
                pass
            body, self._buffer = self._buffer, b""
            self.close()
        return RawResponse(status, headers, body)

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self._buffer:
                if not self._fill():
                    raise NoResponse("the server closed the connection mid-chunk")
            size_line, self._buffer = self._buffer.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(self._buffer) < size + 2:
                if not self._fill():
                    raise NoResponse("the server closed the connection mid-chunk")
            body += self._buffer[:size]
            self._buffer = self._buffer[size + 2 :]
            if size == 0:
                return body
