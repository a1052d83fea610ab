"""The Docker API proxy of the builder nodes (asyncio, standard library only).

One unix socket per node (``--client NAME=PATH``), each forwarded to the engine's socket
(``--docker``) after :mod:`synchronicity.dockerproxy.policy` allowed the call for that node;
anything else is answered ``403`` with a Docker-style ``{"message": ...}`` body, so that the
node's Docker client raises an APIError that says why. One request a connection: the proxy
reads the request head and body, asks the engine for what the policy needs to know (the
labels of a container or volume named in the call), forwards the request with
``Connection: close`` (an attach keeps its upgrade), and relays the answer until the engine
closes. So a client cannot slip a second request past the policy on a kept-alive connection.
Request bodies are relayed as they come (an archive or an image import can be gigabytes), with
their ``Content-Length`` or chunked framing checked; JSON bodies are read whole (bounded).

Every call is logged as one JSON line on stdout (and ``--log FILE``): the client, method, path,
decision, the rule or the reason, and for a container create its image and labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from synchronicity.dockerproxy.policy import (
    BODY_JSON,
    BODY_STREAM,
    MAX_JSON_BODY,
    MAX_SMALL_BODY,
    Forbidden,
    Repositories,
    Route,
    check_client_name,
    check_container_create,
    check_start,
    check_volume_create,
    owned,
    route,
)

MAX_HEAD = 64 << 10
_PIECE = 1 << 16
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}
Headers = list[tuple[str, str]]


class BadRequest(Exception):
    """The client sent something that is not HTTP/1.1 as this proxy reads it."""


@dataclass
class Head:
    """A request or status line and its headers."""

    line: str
    headers: Headers

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The head up to the blank line; None at a clean end of stream before any byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise BadRequest("the head ends early") from exc
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("the head is too large") from exc
    lines = raw.decode("latin-1").split("\r\n")[:-2]
    headers: Headers = []
    for text in lines[1:]:
        name, colon, value = text.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(f"a malformed header line {text[:80]!r}")
        headers.append((name, value.strip()))
    return Head(lines[0], headers)


async def _chunked(reader: asyncio.StreamReader, sink: Callable[[bytes], Awaitable[None]]) -> None:
    """Relay a chunked body, framing included, to ``sink``; BadRequest if it is malformed."""
    while True:
        line = await reader.readuntil(b"\r\n")
        digits = line.split(b";")[0].strip()
        if not _HEX.fullmatch(digits):  # int(, 16) would also take "0x", "_" and signs
            raise BadRequest("a malformed chunk size")
        size = int(digits, 16)
        await sink(line)
        if size == 0:
            while True:  # trailers, then the blank line
                trailer = await reader.readuntil(b"\r\n")
                await sink(trailer)
                if trailer == b"\r\n":
                    return
        await _exactly(reader, size + 2, sink)


async def _exactly(
    reader: asyncio.StreamReader, count: int, sink: Callable[[bytes], Awaitable[None]]
) -> None:
    """Pass the next ``count`` bytes to ``sink``, in pieces."""
    while count:
        piece = await reader.read(min(count, _PIECE))
        if not piece:
            raise BadRequest("the body ends early")
        await sink(piece)
        count -= len(piece)


def body_length(head: Head) -> int | None:
    """The body's length, or None when it is chunked; BadRequest for any other framing. With
    both headers the chunked framing counts (and only it is forwarded), as RFC 9112 says."""
    encoding = head.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower() != "chunked":
            raise BadRequest(f"a Transfer-Encoding other than chunked: {encoding[:40]!r}")
        return None
    length = head.get("content-length")
    if length is None:
        return 0
    if not (length.isascii() and length.isdigit()):  # str.isdigit alone takes "²"
        raise BadRequest("a malformed Content-Length")
    return int(length)


async def relay_body(
    head: Head, reader: asyncio.StreamReader, sink: Callable[[bytes], Awaitable[None]]
) -> None:
    """Relay the request body as framed by its headers."""
    length = body_length(head)
    if length is None:
        await _chunked(reader, sink)
    else:
        await _exactly(reader, length, sink)


async def read_body(head: Head, reader: asyncio.StreamReader, limit: int) -> bytes:
    """The whole (de-chunked) body, at most ``limit`` bytes."""
    parts: list[bytes] = []
    length = body_length(head)
    if length is None:
        raw = bytearray()

        async def keep(piece: bytes) -> None:
            raw.extend(piece)
            if len(raw) > limit + 4096:
                raise BadRequest("the body is too large")

        await _chunked(reader, keep)
        return _dechunk(bytes(raw))
    if length > limit:
        raise BadRequest("the body is too large")

    async def append(piece: bytes) -> None:
        parts.append(piece)

    await _exactly(reader, length, append)
    return b"".join(parts)


def _dechunk(raw: bytes) -> bytes:
    out = bytearray()
    at = 0
    while True:
        end = raw.index(b"\r\n", at)
        size = int(raw[at:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += raw[end + 2 : end + 2 + size]
        at = end + 2 + size + 2


def _request_bytes(method: str, target: str, headers: Headers, *, upgrade: bool) -> bytes:
    chunked = any(k.lower() == "transfer-encoding" for k, _ in headers)
    dropped = _HOP | ({"content-length"} if chunked else set())
    kept = [(k, v) for k, v in headers if k.lower() not in dropped]
    if upgrade:
        kept += [("Connection", "Upgrade"), ("Upgrade", "tcp")]
    else:
        kept.append(("Connection", "close"))
    lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in kept]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _with_body(headers: Headers, body: bytes) -> Headers:
    kept = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")]
    return kept + [("Content-Length", str(len(body)))]


def _answer(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Proxy:
    """Forwards each client's allowed calls to the engine at ``docker`` (a unix socket path)."""

    docker: str
    clients: dict[str, str]  # client name -> the path of its socket
    repositories: Repositories = field(default_factory=Repositories)
    log_file: IO[str] | None = None
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)

    def record(self, **event: Any) -> None:
        line = json.dumps({"time": round(time.time(), 3), **event}, sort_keys=True)
        print(line, flush=True)
        if self.log_file is not None:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    async def start(self) -> None:
        for name, path in self.clients.items():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a socket left by an earlier run

            def serve(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str = name
            ) -> Awaitable[None]:
                return self.handle(name, reader, writer)

            server = await asyncio.start_unix_server(serve, path, limit=MAX_HEAD)
            os.chmod(path, 0o666)  # noqa: S103 (the socket's directory is the node's alone)
            self._servers.append(server)
            self.record(event="listening", client=name, socket=path, docker=self.docker)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()

    async def handle(
        self, client: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await read_head(reader)
            if head is not None:
                await self._one(client, head, reader, writer)
        except (BadRequest, ValueError) as exc:
            self.record(client=client, decision="bad-request", reason=str(exc))
            with contextlib.suppress(OSError):
                writer.write(_answer(400, "Bad Request", f"docker proxy: {exc}"))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client or the engine went away
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _one(
        self, client: str, head: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        parts = head.line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest(f"not an HTTP/1.x request line: {head.line[:80]!r}")
        method, target = parts[0], parts[1]
        event: dict[str, Any] = {"client": client, "method": method, "path": target[:500]}
        try:
            allowed = route(method, target, client, self.repositories)
            event["rule"] = allowed.rule
            body, allowed = await self._checked(client, allowed, head, reader, event)
        except Forbidden as exc:
            self.record(**event, decision="refused", reason=str(exc))
            writer.write(_answer(403, "Forbidden", f"refused by the builder's docker proxy: {exc}"))
            await writer.drain()
            return
        target = allowed.path + (f"?{allowed.query}" if allowed.query else "")
        await self._forward(method, target, head, allowed, body, reader, writer, event)

    async def _checked(
        self,
        client: str,
        allowed: Route,
        head: Head,
        reader: asyncio.StreamReader,
        event: dict[str, Any],
    ) -> tuple[bytes | None, Route]:
        """The body to send (None: relay the client's) and the route with resolved ids."""
        if allowed.container is not None:
            allowed = await self._own_container(client, allowed)
        if allowed.volume is not None:
            await self._own_volume(client, allowed.volume)
        if allowed.body == BODY_STREAM:
            return None, allowed
        limit = MAX_JSON_BODY if allowed.body == BODY_JSON else MAX_SMALL_BODY
        raw = await read_body(head, reader, limit)
        if allowed.body != BODY_JSON:
            return raw, allowed
        try:
            document = json.loads(raw or b"{}")
        except ValueError as exc:
            raise Forbidden(f"{allowed.rule}: the body is not JSON") from exc
        if allowed.rule == "container-create":
            checked, volumes = check_container_create(document, client)
            for volume in volumes:
                await self._own_volume(client, volume)
            event["image"] = checked.get("Image")
            event["labels"] = checked.get("Labels")
        else:
            checked = check_volume_create(document, client)
            await self._new_volume(client, str(checked["Name"]))
            event["labels"] = checked.get("Labels")
        return json.dumps(checked).encode(), allowed

    async def _own_container(self, client: str, allowed: Route) -> Route:
        assert allowed.container is not None
        status, found = await self.engine_json(f"/containers/{quote(allowed.container)}/json")
        labels = (found.get("Config") or {}).get("Labels") if isinstance(found, dict) else None
        if status != 200 or not owned(labels, client):
            name = allowed.container[:80]
            raise Forbidden(f"{allowed.rule}: {name} is not a container of {client}")
        if allowed.rule == "container-start":
            check_start(found, client)
        full = str(found["Id"])
        if allowed.rule == "commit":
            query = allowed.query.replace(
                f"container={quote(allowed.container)}", f"container={full}", 1
            )
            return Route(allowed.rule, allowed.path, query, allowed.body, full)
        path = allowed.path.replace(f"/containers/{allowed.container}", f"/containers/{full}", 1)
        return Route(allowed.rule, path, allowed.query, allowed.body, full, upgrade=allowed.upgrade)

    async def _own_volume(self, client: str, name: str) -> None:
        status, found = await self.engine_json(f"/volumes/{quote(name)}")
        labels = found.get("Labels") if isinstance(found, dict) else None
        if status != 200 or not owned(labels, client):
            raise Forbidden(f"the volume {name[:80]} is not a volume of {client}")

    async def _new_volume(self, client: str, name: str) -> None:
        status, _ = await self.engine_json(f"/volumes/{quote(name)}")
        if status != 404:
            raise Forbidden(f"volume create: {name[:80]} exists already")

    async def engine_json(self, path: str) -> tuple[int, Any]:
        """GET ``path`` from the engine: its status and its JSON (None if it is not JSON)."""
        reader, writer = await asyncio.open_unix_connection(self.docker, limit=MAX_HEAD)
        try:
            request = f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            await writer.drain()
            head = await read_head(reader)
            if head is None:
                raise OSError("the engine closed the connection")
            status = int(head.line.split(" ")[1])
            if head.get("content-length") is None and head.get("transfer-encoding") is None:
                body = b""
                while len(body) <= MAX_JSON_BODY and (piece := await reader.read(_PIECE)):
                    body += piece
            else:
                body = await read_body(head, reader, MAX_JSON_BODY)
        finally:
            writer.close()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    async def _forward(
        self,
        method: str,
        target: str,
        head: Head,
        allowed: Route,
        body: bytes | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        event: dict[str, Any],
    ) -> None:
        engine_reader, engine_writer = await asyncio.open_unix_connection(
            self.docker, limit=MAX_HEAD
        )
        try:
            headers = head.headers if body is None else _with_body(head.headers, body)
            engine_writer.write(_request_bytes(method, target, headers, upgrade=allowed.upgrade))
            if body is None:

                async def send(piece: bytes) -> None:
                    engine_writer.write(piece)
                    await engine_writer.drain()

                await relay_body(head, reader, send)
            else:
                engine_writer.write(body)
            await engine_writer.drain()
            answer = await read_head(engine_reader)
            if answer is None:
                raise OSError("the engine closed the connection")
            status = answer.line.split(" ")[1] if " " in answer.line else "?"
            self.record(**event, decision="allowed", status=int(status) if status.isdigit() else 0)
            if not allowed.upgrade and status != "101":
                answer.headers = [(k, v) for k, v in answer.headers if k.lower() != "connection"]
                answer.headers.append(("Connection", "close"))
            lines = [answer.line] + [f"{k}: {v}" for k, v in answer.headers]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await _pump(engine_reader, writer, reader)
        finally:
            engine_writer.close()
            with contextlib.suppress(OSError):
                await engine_writer.wait_closed()


async def _pump(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, client: asyncio.StreamReader
) -> None:
    """Copy ``source`` to ``sink`` until it ends, or until the client hangs up."""

    async def copy() -> None:
        while piece := await source.read(_PIECE):
            sink.write(piece)
            await sink.drain()

    async def hang_up() -> None:
        while await client.read(_PIECE):
            pass  # nothing more is forwarded from the client: one request a connection

    copying = asyncio.ensure_future(copy())
    watching = asyncio.ensure_future(hang_up())
    try:
        await asyncio.wait({copying, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (copying, watching):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await task


def parse_clients(pairs: list[str]) -> dict[str, str]:
    """``NAME=PATH`` pairs: each client's socket."""
    clients: dict[str, str] = {}
    for pair in pairs:
        name, equals, path = pair.partition("=")
        if not equals or not path or name in clients:
            raise ValueError(f"--client {pair!r}: NAME=PATH, each name once")
        clients[check_client_name(name)] = path
    return clients


async def serve(proxy: Proxy, stop: asyncio.Event) -> None:
    await proxy.start()
    try:
        await stop.wait()
    finally:
        await proxy.close()


def socket_path(docker: str) -> str:
    """The engine's socket path from ``unix:///path`` or a plain path."""
    path = docker.removeprefix("unix://")
    if not path.startswith("/"):
        raise ValueError(f"--docker {docker!r}: a unix socket (unix:///var/run/docker.sock)")
    if not Path(path).exists():
        print(f"docker proxy: no socket at {path} yet", file=sys.stderr)
    return path
