"""The Docker API proxy's HTTP handling (synchronicity/dockerproxy/server.py) against a fake engine.

The fake engine is a unix socket server that records every request it parses (it would parse a
second request on a connection too) and answers like Docker: containers and volumes by name,
200 for the rest. Through the proxy: one request a connection reaches the engine, with
``Connection: close``, whatever the client pipelines after it; a refused call never reaches
the engine and is answered 403 with a Docker-style message; a container call is forwarded to
the full id the ownership lookup found; stream bodies are relayed byte for byte in their
framing (chunked wins over a Content-Length, which is not forwarded); JSON bodies are checked
and labelled; malformed requests get 400. No Docker needed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from synchronicity.dockerproxy.policy import LABEL_BUILD, LABEL_NODE, Repositories
from synchronicity.dockerproxy.server import Head, Proxy, _dechunk, read_body, read_head

MINE = "a" * 64
THEIRS = "b" * 64


@dataclass
class Seen:
    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeEngine:
    """Parses requests on each connection until it closes; answers JSON."""

    path: str
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (head := await read_head(reader)) is not None:
                body = await read_body(head, reader, 1 << 30)
                headers = {k.lower(): v for k, v in head.headers}
                self.seen.append(Seen(head.line, headers, body))
                status, answer = self.answer(head.line.split(" ")[1])
                data = json.dumps(answer).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        finally:
            writer.close()

    def answer(self, target: str) -> tuple[int, object]:
        path = target.split("?", maxsplit=1)[0]
        for name, owner in ((MINE, "witness-a"), (THEIRS, "witness-b")):
            if path.startswith((f"/containers/{name[:12]}", f"/containers/{name}")):
                labels = {LABEL_BUILD: "job", LABEL_NODE: owner}
                return 200, {"Id": name, "Config": {"Labels": labels}, "HostConfig": {}}
        if path.startswith(("/containers/", "/volumes/")) and path.endswith(("/json", "x")):
            return 404, {"message": "no such object"}
        if path.startswith("/volumes/"):
            return 404, {"message": "no such volume"}
        return 200, {"ok": True}


Scenario = Callable[[FakeEngine, str], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario) -> FakeEngine:
    async def main() -> FakeEngine:
        engine = FakeEngine(str(tmp_path / "engine.sock"))
        server = await asyncio.start_unix_server(engine.handle, engine.path)
        client_socket = str(tmp_path / "a.sock")
        proxy = Proxy(engine.path, {"witness-a": client_socket}, Repositories())
        await proxy.start()
        try:
            await asyncio.wait_for(scenario(engine, client_socket), 20)
        finally:
            await proxy.close()
            server.close()
        return engine

    return asyncio.run(main())


async def exchange(socket: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data``, read the whole answer (the proxy closes after one)."""
    reader, writer = await asyncio.open_unix_connection(socket)
    writer.write(data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def request(method: str, target: str, body: bytes = b"", extra: str = "") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: docker\r\n{extra}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def test_one_request_a_connection_reaches_the_engine(tmp_path: Path) -> None:
    answers: list[tuple[int, dict[str, str], bytes]] = []

    async def scenario(engine: FakeEngine, socket: str) -> None:
        pipelined = request("GET", "/v1.41/_ping") + request("POST", "/v1.41/swarm/init")
        answers.append(await exchange(socket, pipelined))

    engine = run(tmp_path, scenario)
    status, headers, body = answers[0]
    assert status == 200 and json.loads(body) == {"ok": True}
    assert headers["connection"] == "close"
    assert [s.line for s in engine.seen] == ["GET /v1.41/_ping HTTP/1.1"]
    assert engine.seen[0].headers["connection"] == "close"


def test_refused_calls_never_reach_the_engine(tmp_path: Path) -> None:
    answers: list[tuple[int, dict[str, str], bytes]] = []

    async def scenario(engine: FakeEngine, socket: str) -> None:
        for data in (
            request("POST", "/v1.41/images/create?fromImage=alpine&tag=latest"),
            request("GET", "/v1.41/containers/json?all=1"),
            request("POST", f"/v1.41/containers/{THEIRS}/kill"),
            request("GET", "/v1.41/containers/nosuchx/json"),
            request("POST", "/v1.41/containers/create", json.dumps({"Image": "x"}).encode()),
        ):
            answers.append(await exchange(socket, data))

    engine = run(tmp_path, scenario)
    assert [status for status, _, _ in answers] == [403] * 5
    messages = [json.loads(body)["message"] for _, _, body in answers]
    assert all(m.startswith("refused by the builder's docker proxy: ") for m in messages)
    assert "never pulled" in messages[0]
    assert "not a container of witness-a" in messages[2]
    assert "without the label" in messages[4]
    # only the ownership lookups reached the engine, never the calls themselves
    assert [s.line.split(" ")[1] for s in engine.seen] == [
        f"/containers/{THEIRS}/json",
        "/containers/nosuchx/json",
    ]


def test_container_calls_go_to_the_full_id_found(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine, socket: str) -> None:
        status, _, _ = await exchange(
            socket, request("POST", f"/v1.41/containers/{MINE[:12]}/wait")
        )
        assert status == 200
        target = f"/v1.41/commit?container={MINE[:12]}&repo=synchronicity-env-staging&tag=t"
        status, _, _ = await exchange(socket, request("POST", target))
        assert status == 200

    engine = run(tmp_path, scenario)
    lines = [s.line for s in engine.seen]
    assert lines[1] == f"POST /v1.41/containers/{MINE}/wait HTTP/1.1"
    assert lines[3].startswith(f"POST /v1.41/commit?container={MINE}&repo=")


def test_bodies(tmp_path: Path) -> None:
    archive = bytes(range(256)) * 1000
    chunked = (
        b"".join(
            b"%x\r\n" % len(archive[i : i + 7000]) + archive[i : i + 7000] + b"\r\n"
            for i in range(0, len(archive), 7000)
        )
        + b"0\r\n\r\n"
    )
    create = {"Image": "x", "Labels": {LABEL_BUILD: "job", LABEL_NODE: "witness-b"}}

    async def scenario(engine: FakeEngine, socket: str) -> None:
        put = f"/v1.41/containers/{MINE}/archive?path=%2Ffill%2F0"
        both = "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"
        status, _, _ = await exchange(socket, request("PUT", put, extra=both) + chunked)
        assert status == 200
        body = json.dumps(create).encode()
        status, _, _ = await exchange(socket, request("POST", "/v1.41/containers/create", body))
        assert status == 200
        status, _, answer = await exchange(
            socket, request("PUT", put, extra="Transfer-Encoding: gzip\r\n")
        )
        assert status == 400 and b"Transfer-Encoding" in answer
        status, _, _ = await exchange(socket, b"NONSENSE\r\n\r\n")
        assert status == 400

    engine = run(tmp_path, scenario)
    put = next(s for s in engine.seen if s.line.startswith("PUT"))
    assert put.body == archive
    assert "content-length" not in put.headers and put.headers["transfer-encoding"] == "chunked"
    created = next(s for s in engine.seen if s.line.startswith("POST /v1.41/containers/create"))
    assert json.loads(created.body)["Labels"] == {LABEL_BUILD: "job", LABEL_NODE: "witness-a"}
    assert created.headers["content-length"] == str(len(created.body))


def test_dechunk_and_heads() -> None:
    assert _dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n") == b"abcde"
    assert Head("GET / HTTP/1.1", [("Content-Length", "3")]).get("content-length") == "3"


PUT = b"PUT /v1.41/containers/" + MINE.encode() + b"/archive?path=%2F HTTP/1.1\r\n"


@pytest.mark.parametrize(
    "bad",
    [
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET /\r\n\r\n",
    ],
)
def test_malformed_requests_get_400(tmp_path: Path, bad: bytes) -> None:
    async def scenario(engine: FakeEngine, socket: str) -> None:
        status, _, _ = await exchange(socket, bad)
        assert status == 400

    assert run(tmp_path, scenario).seen == []


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: \u00b2\r\n\r\nab".encode("latin-1"),  # str.isdigit takes it
        b"Transfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",  # int(, 16) too
        b"Transfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n",
    ],
)
def test_a_body_framed_loosely_is_400_and_never_forwarded(tmp_path: Path, framing: bytes) -> None:
    async def scenario(engine: FakeEngine, socket: str) -> None:
        status, _, _ = await exchange(socket, PUT + b"Host: docker\r\n" + framing)
        assert status == 400

    assert not [s for s in run(tmp_path, scenario).seen if s.line.startswith("PUT")]
