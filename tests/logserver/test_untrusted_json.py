"""Every JSON from the network is read with size and depth limits (``canonical_json.parse``).

Python's ``json`` recurses: a document nested deeper than the recursion limit raises
``RecursionError``, which is no ``SynchronicityError``: in a route it was a 500, in a client
it escaped every ``except`` of a witness thread. Real processes get deep bodies and answer 4xx;
the client raises ``RemoteError`` for a log that answers deep JSON.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from builder.manifest import manifest_from_json
from logserver.client import LogClient
from logserver.core import canonical_json
from logserver.core.errors import FormatError, RemoteError
from synchronicity.localnet import LocalNetwork


def nested(depth: int) -> bytes:
    """A canonical JSON object nested ``depth`` deep: {"a":{"a":...{"a":1}...}}."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_parse_limits() -> None:
    assert canonical_json.parse(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    assert canonical_json.parse(nested(31)) is not None  # 32 levels with the leaf
    for bad in (
        nested(32),
        nested(600),
        nested_arrays(100_000),
        b'{"a": 1, "a": 2}',
        b"NaN",
        b"[1" + b"0" * 5000 + b"]",
        b"\xff",
        b" " * (canonical_json.DEFAULT_MAX_BYTES + 1),
    ):
        with pytest.raises(FormatError):
            canonical_json.parse(bad)
    for depth in (600, 100_000):
        with pytest.raises(FormatError):
            canonical_json.decode(nested(depth))
        with pytest.raises(FormatError):
            manifest_from_json(b'{"artifacts":' + nested_arrays(depth) + b',"schema":1}')


# ----- a log that answers deep JSON ----------------------------------------------------------


class _Deep(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = nested_arrays(100_000)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def deep_log() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Deep)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_log_answering_deep_json_is_a_remote_error(deep_log: str) -> None:
    with LogClient(deep_log) as log:
        for call in (log.size, lambda: log.inclusion_proof(0, 1)):
            with pytest.raises(RemoteError):
                call()


# ----- deep bodies sent to a real log and witness --------------------------------------------


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """A log in protocol mode and its one witness (with a build worker), as real processes."""
    net = LocalNetwork.create(tmp_path_factory.mktemp("deep"), witnesses=1).start()
    try:
        yield net
    finally:
        net.stop()


def test_deep_bodies_are_4xx_and_kill_no_thread(network: LocalNetwork) -> None:
    log, witness = network.log.url, network.witnesses[0].url
    sent = [
        (log + "/add-entry", nested(600)),  # parsed on the sequencer thread
        (log + "/add-entry", nested_arrays(32_000)),  # the most an entry can hold
        (log + "/add-entry", nested_arrays(100_000)),  # more than an entry may be: 413
        (log + "/cosignature", nested_arrays(30_000)),
        (witness + "/request", nested(600)),  # a recipe, parsed by the witness
        (witness + "/request", nested_arrays(100_000)),
        (witness + "/add-checkpoint", nested_arrays(100_000)),
        (witness + "/consensus", nested_arrays(100_000)),
    ]
    with httpx.Client(timeout=30) as c:
        for url, body in sent:
            r = c.post(url, content=body)
            assert 400 <= r.status_code < 500, (url, len(body), r.status_code, r.text[:200])
            assert r.headers["content-type"] == "application/problem+json"
        # Every thread still runs: the sequencer appends, the witness is ready.
        assert c.get(log + "/readyz").status_code == 200
        assert c.get(witness + "/readyz").status_code == 200, c.get(witness + "/readyz").text
    for proc in (network.log, *network.witnesses):
        assert not [line for line in proc.stderr_lines if "Traceback" in line]


def test_network_config_nested_deep_is_a_usage_error(tmp_path: Path) -> None:
    from tests.support.procs import run_cli

    config = tmp_path / "network.json"
    config.write_bytes(nested_arrays(100_000))
    done = run_cli("status", "--network", str(config))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "network config" in done.stderr
