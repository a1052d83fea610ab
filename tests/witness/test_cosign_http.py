"""POST /add-checkpoint against a real uvicorn witness process, and its LMDB state.

Conformance with c2sp.org/tlog-witness status code by status code, exact content types,
concurrency (one winner from one old size), durability across SIGKILL, and the store's
check-and-persist directly. The pure rules are exhaustively tested in test_cosign_rules.py.
The witness process is ``synchronicity witness add-checkpoint``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from logserver.core.checkpoint import Checkpoint
from logserver.core.cosignature import CosignatureSigner, CosignatureVerifier
from logserver.core.errors import OperationalError
from logserver.core.note import Signer, open_note, sign_note, split_note
from logserver.core.tlog import MemoryHashStore, prove_tree
from witness.cosign.http import AddCheckpointHandler, add_routes
from witness.cosign.rules import (
    Accepted,
    Rejected,
    Submission,
    TreeHead,
    WitnessedLogs,
    decide,
    prepare,
)
from witness.cosign.store import CosignStore, encode_head

ORIGIN = "example.test/other-log"
PROBLEM = "application/problem+json"


def _seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


LOG_KEY = Signer(ORIGIN, _seed("http log"))
IMPOSTOR = Signer(ORIGIN, _seed("http impostor"))
WITNESS_KEY = CosignatureSigner("witness.test/http", _seed("http witness"))
WITNESS_VERIFIER: CosignatureVerifier = WITNESS_KEY.verifier()


def _tree(prefix: int, label: bytes) -> MemoryHashStore:
    store = MemoryHashStore()
    for i in range(64):
        store.append_record((b"entry %d" % i) if i < prefix else label + b" %d" % i)
    return store


TREE = _tree(64, b"")
FORK = _tree(16, b"fork")  # agrees with TREE on the first 16 entries


def note(size: int, tree: MemoryHashStore = TREE, key: Signer = LOG_KEY) -> bytes:
    return sign_note(Checkpoint(ORIGIN, size, tree.tree_hash(size)).to_bytes(), key)


def body(
    old: int, new: int, tree: MemoryHashStore = TREE, proof: Sequence[bytes] | None = None
) -> bytes:
    if proof is None:
        proof = prove_tree(new, old, tree) if 0 < old < new else []
    lines = b"".join(base64.b64encode(h) + b"\n" for h in proof)
    return b"old %d\n" % old + lines + b"\n" + note(new, tree)


class WitnessProcess:
    """``synchronicity witness add-checkpoint`` on 127.0.0.1 with a kernel-chosen port."""

    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "state"
        self.key_file = tmp / "witness.key"
        self.key_file.write_text(WITNESS_KEY.private_key + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self._drain: threading.Thread | None = None
        self.url = ""

    def start(self) -> WitnessProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "synchronicity",
                "witness",
                "add-checkpoint",
                "--data",
                str(self.data),
                "--key",
                str(self.key_file),
                "--log",
                ORIGIN,
                LOG_KEY.vkey,
                "--listen",
                "127.0.0.1:0",
                "--max-body",
                "65536",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        first = self.proc.stderr.readline()
        if not first:
            self.proc.wait(10)
            self.proc.stderr.close()
            raise OperationalError("the witness did not start")
        announced = json.loads(first)
        assert announced["vkeys"] == [WITNESS_KEY.vkey]
        self.url = "http://" + announced["listen"]
        stderr = self.proc.stderr

        def drain() -> None:  # so the server never blocks on a full pipe
            stderr.read()
            stderr.close()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        return self

    def _join(self) -> None:
        if self._drain is not None:
            self._drain.join(10)
            self._drain = None

    def post(self, content: bytes, **kwargs: object) -> httpx.Response:
        return httpx.post(self.url + "/add-checkpoint", content=content, timeout=30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._join()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._join()


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[WitnessProcess]:
    proc = WitnessProcess(tmp_path).start()
    try:
        yield proc
    finally:
        proc.stop()


def assert_cosigned(response: httpx.Response, size: int, tree: MemoryHashStore = TREE) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    lines = response.content.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 2
    assert lines[0].startswith("— witness.test/http ".encode())
    signed = note(size, tree)
    opened = open_note(signed + response.content, [WITNESS_VERIFIER])
    assert [s.name for s in opened.sigs] == ["witness.test/http"]
    raw = base64.b64decode(lines[0].split(b" ")[-1])
    ok, timestamp = WITNESS_VERIFIER.verify_with_timestamp(split_note(signed)[0], raw[4:])
    assert ok and timestamp is not None
    assert abs(timestamp - time.time()) < 60


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status and problem["detail"]


def assert_size_conflict(response: httpx.Response, size: int) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "text/x.tlog.size"
    assert response.content == b"%d\n" % size


# ----- conformance against the real server -----------------------------------------------------


def test_status_codes_in_order_of_the_spec(witness: WitnessProcess) -> None:
    # 200: first checkpoint, from old 0 with no proof.
    assert_cosigned(witness.post(body(0, 5)), 5)
    # 200: an extension with a real consistency proof.
    assert_cosigned(witness.post(body(5, 13)), 13)
    # 409: a stale old size, whether smaller, larger or zero.
    for old in (0, 5, 12, 14):
        assert_size_conflict(witness.post(body(old, 20)), 13)
    # 422: a proof that does not verify.
    proof = prove_tree(20, 13, TREE)
    bad = [*proof[:-1], hashlib.sha256(proof[-1]).digest()]
    assert_problem(witness.post(body(13, 20, proof=bad)), 422)
    assert_problem(witness.post(body(13, 20, proof=proof[:-1])), 422)
    # 404: an origin the witness is not configured for.
    stranger = Signer("stranger.test/log", _seed("stranger"))
    strange_note = sign_note(
        Checkpoint("stranger.test/log", 3, TREE.tree_hash(3)).to_bytes(), stranger
    )
    assert_problem(witness.post(b"old 0\n\n" + strange_note), 404)
    # 403: no valid signature by the log's key (other key; forged; witness key only).
    assert_problem(witness.post(b"old 13\n\n" + note(13, key=IMPOSTOR)), 403)
    _, sigs = split_note(note(13))
    forged = Checkpoint(ORIGIN, 13, TREE.tree_hash(12)).to_bytes() + b"\n" + sigs[0].to_line()
    assert_problem(witness.post(b"old 13\n\n" + forged), 403)
    text = Checkpoint(ORIGIN, 13, TREE.tree_hash(13)).to_bytes()
    assert_problem(witness.post(b"old 13\n\n" + sign_note(text, WITNESS_KEY)), 403)
    # 400: malformed bodies, and old above the checkpoint size.
    for malformed in (
        b"",
        b"old 13\n",
        b"old 013\n\n" + note(13),
        b"old 13\r\n\r\n" + note(13),
        b"old 13\nnot base64!\n\n" + note(13),
        b"old 13\n\n" + split_note(note(13))[0],
        b"old 13\n" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + b"\n" + note(20),
    ):
        assert_problem(witness.post(malformed), 400)
    assert_problem(witness.post(b"old 14\n\n" + note(13)), 400)
    # Nothing above changed the witness's state: the next extension still goes from 13.
    assert_cosigned(witness.post(body(13, 20)), 20)


def test_smaller_or_forked_checkpoints_are_never_cosigned(witness: WitnessProcess) -> None:
    assert_cosigned(witness.post(body(0, 30)), 30)
    # Smaller: old = stored size is above the checkpoint (400); old = its size is stale (409).
    assert_problem(witness.post(b"old 30\n\n" + note(20)), 400)
    assert_size_conflict(witness.post(b"old 20\n\n" + note(20)), 30)
    # Same size, other root: 409, with a problem body (the stored size is not news).
    response = witness.post(b"old 30\n\n" + note(30, FORK))
    assert_problem(response, 409)
    assert "fork" in response.json()["detail"]
    # The fork's extension from 30 has no valid proof: 422.
    assert_problem(witness.post(body(30, 40, FORK)), 422)
    # The same checkpoint again is fine, and the honest extension still works.
    assert_cosigned(witness.post(b"old 30\n\n" + note(30)), 30)
    assert_cosigned(witness.post(body(30, 31)), 31)


def test_body_size_limit_and_methods(witness: WitnessProcess) -> None:
    big = b"old 0\n\n" + note(3) + b"x" * 70_000
    assert_problem(witness.post(big), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while streaming
        yield b"old 0\n\n"
        for _ in range(100):
            yield b"x" * 1024

    response = httpx.post(witness.url + "/add-checkpoint", content=chunks(), timeout=30)
    assert_problem(response, 413)
    assert_problem(httpx.get(witness.url + "/add-checkpoint"), 405)
    assert_problem(httpx.post(witness.url + "/nothing-here", content=b""), 404)
    # After all that, the state is still empty.
    assert_cosigned(witness.post(body(0, 3)), 3)


def test_concurrent_requests_from_one_old_size_have_one_winner(witness: WitnessProcess) -> None:
    assert_cosigned(witness.post(body(0, 4)), 4)
    old, followed = 4, TREE
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(4):
            # Eight requests from the same old size: honest and forked checkpoints of several
            # sizes (the two trees differ beyond 16 entries), all racing.
            targets = [(tree, old + 1 + 5 * i) for i in range(4) for tree in (TREE, FORK)]
            requests = [body(old, size, tree) for tree, size in targets]
            responses = list(pool.map(witness.post, requests))
            codes = [r.status_code for r in responses]
            assert codes.count(200) == 1, codes
            winner = codes.index(200)
            tree, size = targets[winner]
            assert_cosigned(responses[winner], size, tree)
            # The winner extends what the witness cosigned before.
            assert followed.tree_hash(old) == tree.tree_hash(old)
            for (other, _), response in zip(targets, responses, strict=True):
                if response is responses[winner]:
                    continue
                if response.status_code == 422:  # a tree the witness no longer follows
                    assert other.tree_hash(old) != followed.tree_hash(old)
                    assert_problem(response, 422)
                else:
                    assert_size_conflict(response, size)
            old, followed = size, tree


def test_state_survives_sigkill(tmp_path: Path) -> None:
    proc = WitnessProcess(tmp_path).start()
    try:
        assert_cosigned(proc.post(body(0, 20)), 20)
        proc.kill()
        proc.start()
        assert_size_conflict(proc.post(body(0, 20)), 20)  # not a fresh witness
        assert_problem(proc.post(b"old 20\n\n" + note(20, FORK)), 409)  # no second root
        assert_size_conflict(proc.post(b"old 5\n\n" + note(5)), 20)  # no rollback
        assert_problem(proc.post(body(20, 30, FORK)), 422)  # no inconsistent extension
        assert_cosigned(proc.post(body(20, 30)), 30)
        proc.kill()
        proc.start()
        assert_size_conflict(proc.post(body(20, 35)), 30)
        assert_cosigned(proc.post(body(30, 35)), 35)
    finally:
        proc.stop()
    assert proc.proc is not None and proc.proc.returncode == 0  # SIGTERM: a clean stop


def test_corrupt_state_is_a_500_never_a_fresh_start(tmp_path: Path) -> None:
    import lmdb

    proc = WitnessProcess(tmp_path).start()
    try:
        assert_cosigned(proc.post(body(0, 20)), 20)
        proc.stop()
        env = lmdb.open(str(proc.data), max_dbs=2)
        with env.begin(write=True, db=env.open_db(b"add-checkpoint-heads-v1")) as txn:
            txn.put(hashlib.sha256(ORIGIN.encode()).digest(), b"garbage")
        env.close()
        proc.start()
        assert_problem(proc.post(body(0, 5)), 500)
        assert_problem(proc.post(body(20, 30)), 500)
    finally:
        proc.stop()


def test_runner_exit_codes(tmp_path: Path) -> None:
    key_file = tmp_path / "witness.key"
    key_file.write_text(WITNESS_KEY.private_key)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "synchronicity", "witness", "add-checkpoint", "--data"]
        return subprocess.run(
            [*command, str(tmp_path / "state"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    bad_vkey = run("--key", str(key_file), "--log", ORIGIN, "not-a-vkey")
    assert bad_vkey.returncode == 2 and "verifier key" in bad_vkey.stderr
    own_key = run("--key", str(key_file), "--log", ORIGIN, WITNESS_KEY.vkey)  # type 0x04
    assert own_key.returncode == 2
    missing = run("--key", str(tmp_path / "absent.key"), "--log", ORIGIN, LOG_KEY.vkey)
    assert missing.returncode == 3 and "absent.key" in missing.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        taken = run("--key", str(key_file), "--listen", f"127.0.0.1:{port}")
        assert taken.returncode == 3 and "cannot listen" in taken.stderr
    finally:
        busy.close()


# ----- mounting on an existing app -------------------------------------------------------------


async def _exercise_mounted(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://witness") as client:
        assert (await client.get("/healthz")).json() == {"ok": "yes"}
        response = await client.post("/witness/add-checkpoint", content=body(0, 4))
        assert response.status_code == 200
        raw = base64.b64decode(response.content.split(b" ")[-1])
        ok, timestamp = WITNESS_VERIFIER.verify_with_timestamp(split_note(note(4))[0], raw[4:])
        assert ok and timestamp == 1_750_000_000  # the injected clock, in whole seconds
        stale = await client.post("/witness/add-checkpoint", content=body(0, 4))
        assert stale.status_code == 409 and stale.content == b"4\n"
        assert stale.headers["content-type"] == "text/x.tlog.size"
        assert (await client.post("/add-checkpoint", content=body(0, 4))).status_code == 404


def test_routes_mount_on_an_existing_app_with_a_prefix(tmp_path: Path) -> None:
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"ok": "yes"}

    clock_value = 1_750_000_000.7
    handler = AddCheckpointHandler(
        WitnessedLogs.from_pairs([(ORIGIN, LOG_KEY.vkey)]),
        [WITNESS_KEY],
        CosignStore(tmp_path / "state"),
        clock=lambda: clock_value,
    )
    add_routes(app, handler, prefix="/witness")
    try:
        asyncio.run(_exercise_mounted(app))
        # The synchronous path gives the same answers.
        decision, out = handler.process(body(4, 9))
        assert isinstance(decision, Accepted) and out
        decision, out = handler.process(body(4, 9))
        assert isinstance(decision, Rejected) and decision.known_size == 9 and out == b""
    finally:
        handler.close()


# ----- the LMDB state directly -----------------------------------------------------------------


def _submission(old: int, new: int, tree: MemoryHashStore = TREE) -> Submission:
    prepared = prepare(body(old, new, tree), WitnessedLogs.from_pairs([(ORIGIN, LOG_KEY.vkey)]))
    assert isinstance(prepared, Submission)
    return prepared


def test_state_check_and_persist_is_atomic_under_threads(tmp_path: Path) -> None:
    state = CosignStore(tmp_path / "state")
    try:
        assert state.latest(ORIGIN) is None
        barrier = threading.Barrier(16)

        def attempt(new: int) -> bool:
            submission = _submission(0, new)
            barrier.wait()
            decision = state.check_and_persist(ORIGIN, lambda s: decide(submission, s))
            return isinstance(decision, Accepted)

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(attempt, range(1, 17)))
        assert results.count(True) == 1
        winner = results.index(True) + 1
        assert state.latest(ORIGIN) == TreeHead(winner, TREE.tree_hash(winner))
    finally:
        state.close()
    reopened = CosignStore(tmp_path / "state")
    try:
        assert reopened.latest(ORIGIN) == TreeHead(winner, TREE.tree_hash(winner))
        rejected = reopened.check_and_persist(ORIGIN, lambda s: decide(_submission(0, 3), s))
        assert isinstance(rejected, Rejected) and rejected.known_size == winner
        assert reopened.latest(ORIGIN) == TreeHead(winner, TREE.tree_hash(winner))
    finally:
        reopened.close()


def test_state_refuses_corrupt_records(tmp_path: Path) -> None:
    import lmdb

    CosignStore(tmp_path / "state").close()
    key = hashlib.sha256(ORIGIN.encode()).digest()
    head = TreeHead(7, TREE.tree_hash(7))
    for value in (
        b"short",
        encode_head("another.test/log", head),  # a record that is not this origin's
        (1 << 63).to_bytes(8, "big") + bytes(32) + ORIGIN.encode(),  # size out of range
    ):
        env = lmdb.open(str(tmp_path / "state"), max_dbs=2)
        with env.begin(write=True, db=env.open_db(b"add-checkpoint-heads-v1")) as txn:
            txn.put(key, value)
        env.close()
        reopened = CosignStore(tmp_path / "state")
        try:
            with pytest.raises(OperationalError):
                reopened.latest(ORIGIN)
            with pytest.raises(OperationalError):
                reopened.check_and_persist(ORIGIN, lambda s: decide(_submission(0, 3), s))
        finally:
            reopened.close()


def test_state_refuses_a_decision_for_another_origin(tmp_path: Path) -> None:
    state = CosignStore(tmp_path / "state")
    try:
        submission = _submission(0, 3)
        with pytest.raises(OperationalError):
            state.check_and_persist("another.test/log", lambda s: decide(submission, s))
        assert state.latest("another.test/log") is None
    finally:
        state.close()
