"""The command line: keys, note verification, offline verification, the monitor, exit codes."""

from __future__ import annotations

import http.server
import os
import stat
import threading
from pathlib import Path

import httpx

from logserver.core import cosignature, note
from logserver.core.checkpoint import Checkpoint
from logserver.core.policy import Policy
from tests.conftest import RunningLog, start_log
from tests.support.procs import ServerProcess
from tests.support.procs import run_cli as run


def test_keygen_writes_private_key_0600_and_vkey(tmp_path: Path) -> None:
    out = tmp_path / "log.key"
    done = run("keygen", "example.test/log", "--out", str(out))
    assert done.returncode == 0, done.stderr
    vkey = done.stdout.strip()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert (tmp_path / "log.key.vkey").read_text().strip() == vkey
    signer = note.Signer.from_private_key(out.read_text().strip())
    assert signer.vkey == vkey and signer.name == "example.test/log"
    again = run("keygen", "example.test/log", "--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr
    assert run("keygen", "bad name", "--out", str(tmp_path / "x")).returncode == 2


def test_keygen_cosignature_key(tmp_path: Path) -> None:
    out = tmp_path / "w.key"
    done = run("keygen", "witness.example", "--out", str(out), "--cosignature")
    assert done.returncode == 0, done.stderr
    assert isinstance(
        cosignature.load_verifier(done.stdout.strip()), cosignature.CosignatureVerifier
    )


def test_note_verify_exit_codes(tmp_path: Path) -> None:
    key = tmp_path / "k"
    vkey = run("keygen", "signer.example", "--out", str(key)).stdout.strip()
    signer = note.Signer.from_private_key(key.read_text().strip())
    signed = note.sign_note(b"a message\n", signer)
    (tmp_path / "note").write_bytes(signed)
    assert run("note", "verify", "--vkey", vkey, str(tmp_path / "note")).returncode == 0
    assert run("note", "verify", "--vkey", str(key) + ".vkey", stdin=signed).returncode == 0
    tampered = run(
        "note", "verify", "--vkey", vkey, stdin=signed.replace(b"a message", b"a massage")
    )
    assert tampered.returncode == 1 and tampered.stderr.count("\n") == 1
    other = run("keygen", "other.example", "--out", str(tmp_path / "o")).stdout.strip()
    assert run("note", "verify", "--vkey", other, stdin=signed).returncode == 1
    assert run("note", "verify", "--vkey", vkey, stdin=b"not a note").returncode == 2
    assert run("note", "verify", "--vkey", "garbage+1+2", stdin=signed).returncode == 2


def test_c2sp_signed_note_example_verifies() -> None:
    vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    text = (
        "This is an example message.\n\n"
        "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjO"
        "BH3mFXmRKuwHjG1Yu72IneyaQM=\n"
    )
    assert run("note", "verify", "--vkey", vkey, stdin=text.encode()).returncode == 0


def test_verify_usage_errors(tmp_path: Path) -> None:
    missing = run("verify", "--policy", str(tmp_path / "nope"), "--proof", str(tmp_path / "p"))
    assert missing.returncode == 2 and "nope" in missing.stderr
    (tmp_path / "policy").write_text("quorum nobody\n")
    (tmp_path / "proof").write_text("x")
    bad = run("verify", "--policy", str(tmp_path / "policy"), "--proof", str(tmp_path / "proof"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert run("verify").returncode == 2


def _policy(tmp_path: Path, log: RunningLog) -> Path:
    path = tmp_path / "policy"
    path.write_bytes(Policy.for_network(log.vkey, [], 0, log_url=log.url).to_bytes())
    return path


def test_monitor_follows_and_detects_a_fork(tmp_path: Path) -> None:
    log = start_log(tmp_path / "a")
    state = tmp_path / "state"
    policy = _policy(tmp_path, log)
    try:
        with httpx.Client(base_url=log.url) as c:
            for i in range(5):
                c.post("/add-entry", content=b"a%d" % i)
            first = run("monitor", "--policy", str(policy), "--state", str(state), "--once")
            assert first.returncode == 0, first.stderr
            assert "size 5" in first.stdout
            for i in range(5, 12):
                c.post("/add-entry", content=b"a%d" % i)
        second = run("monitor", "--policy", str(policy), "--state", str(state), "--once")
        assert second.returncode == 0 and "advanced to size 12" in second.stdout
    finally:
        log.proc.stop()

    # The same log key, signing a different history: a split view.
    twin_args = ["log", "serve", "--key", str(log.key), "--data", str(tmp_path / "fork")]
    twin = ServerProcess([*twin_args, "--listen", "127.0.0.1:0", "--open"]).start()
    try:
        with httpx.Client(base_url=twin.url) as c:
            for i in range(15):
                c.post("/add-entry", content=b"b%d" % i)
        alarm = run(
            "monitor", "--policy", str(policy), "--state", str(state), "--once", "--log", twin.url
        )
        assert alarm.returncode == 1
        assert "does not extend size 12" in alarm.stderr
        assert alarm.stderr.count(log.origin) >= 4  # both checkpoints, with their signatures
        # The state still holds the last good checkpoint.
        kept = note.open_note(
            (state / "checkpoint").read_bytes(), [note.Verifier.from_vkey(log.vkey)]
        )
        assert Checkpoint.parse(kept.text).size == 12
    finally:
        twin.stop()


def test_monitor_operational_errors(tmp_path: Path) -> None:
    log = start_log(tmp_path)
    policy = _policy(tmp_path, log)
    log.proc.stop()
    down = run("monitor", "--policy", str(policy), "--state", str(tmp_path / "s"), "--once")
    assert down.returncode == 3 and "cannot reach the log" in down.stderr
    (tmp_path / "s").mkdir(exist_ok=True)
    (tmp_path / "s" / "checkpoint").write_text("corrupt")
    log.proc.start()
    try:
        with httpx.Client(base_url=log.url) as c:
            c.post("/add-entry", content=b"x")
        corrupt = run("monitor", "--policy", str(policy), "--state", str(tmp_path / "s"), "--once")
        assert corrupt.returncode == 3 and "corrupt" in corrupt.stderr
    finally:
        log.proc.stop()


class _HtmlPage(http.server.BaseHTTPRequestHandler):
    """A 'log' that answers every GET with a web page, as a captive portal or a wrong URL does."""

    def do_GET(self) -> None:
        body = b"<!DOCTYPE html>\n<html><body><h1>Welcome</h1></body></html>\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_monitor_a_log_that_sends_garbage_is_an_operational_error(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        signer = note.Signer.from_private_key(note.generate_key("garbage.example/log")[0])
        policy = tmp_path / "policy"
        policy.write_bytes(Policy.for_network(signer.vkey, [], 0, log_url=url).to_bytes())
        done = run("monitor", "--policy", str(policy), "--state", str(tmp_path / "s"), "--once")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "does not parse" in done.stderr
    assert not (tmp_path / "s" / "checkpoint").exists()
