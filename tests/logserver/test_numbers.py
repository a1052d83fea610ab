"""Every number a request carries is read strictly: real log and witness processes answer 400.

``str.isdigit`` takes ``"²"``, which ``int`` refuses: seven endpoints answered 500 to it. Every
number of the log, its dashboard and the witness now goes through one strict grammar (ASCII
digits, no sign, no leading zero, bounded length).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from logserver.http.wire import decimal
from synchronicity.cmd_network import init_network
from synchronicity.launcher import free_ports
from tests.support.procs import ServerProcess, run_cli
from tests.support.rawhttp import Connection, request_bytes

HOSTILE = [
    "²",  # superscript two: isdigit() is True, int() raises
    "١",  # ARABIC-INDIC DIGIT ONE: int() takes it, the grammar does not
    "１",  # FULLWIDTH DIGIT ONE
    "01",
    "-1",
    "+1",
    " 1",
    "1 ",
    "1e3",
    "0x10",
    "1_000",
    "",
    "9" * 30,
    "9223372036854775808",  # 2^63: beyond any tree
]

# Each endpoint with {} where the number goes; the dashboard's pages are HTML for browsers.
API = [
    "/entry/{}",
    "/proof/inclusion?index={}&size=1",
    "/proof/inclusion?index=0&size={}",
    "/proof/consistency?old={}&new=1",
    "/proof/consistency?old=1&new={}",
    "/latest-checkpoint?after={}",
    "/latest-checkpoint?after=0&wait_ms={}",
    "/proof/tlog?index={}",
]
DASHBOARD = ["/builds?page={}", "/checkpoints?before={}"]


@pytest.fixture(scope="module")
def network_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A log in network mode (protocol entries), so the dashboard's pages are served too."""
    directory = tmp_path_factory.mktemp("numbers")
    init_network(directory, witnesses=1, ports=free_ports(2))
    log = ServerProcess(
        ["log", "serve", "--key", str(directory / "log.key"), "--data", str(directory / "log")]
        + ["--network", str(directory / "network.json"), "--listen", "127.0.0.1:0"]
    ).start()
    try:
        yield log
    finally:
        log.stop()


def test_the_grammar() -> None:
    assert [decimal(t) for t in ("0", "7", "10", "9223372036854775807")] == [
        0,
        7,
        10,
        (1 << 63) - 1,
    ]
    assert all(decimal(t) is None for t in HOSTILE)
    assert decimal("65535", 65536) == 65535 and decimal("65536", 65536) is None


@pytest.mark.parametrize("template", API + DASHBOARD)
def test_hostile_numbers_are_400_never_500(network_log: ServerProcess, template: str) -> None:
    with httpx.Client(base_url=network_log.url) as c:
        for raw in HOSTILE:
            r = c.get(template.format(quote(raw)))
            expected = 404 if raw == "" and "?" not in template else 400  # "/entry/": no route
            assert r.status_code == expected, (template, raw, r.status_code, r.text[:200])
            if template in DASHBOARD:
                assert r.headers["content-type"].startswith("text/html")
            else:
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["detail"]


@pytest.mark.parametrize("length", [b"\xc2\xb2", b"01", b"-1", b"1e3", b"9" * 30])
def test_hostile_content_length_is_a_problem(network_log: ServerProcess, length: bytes) -> None:
    """Whether uvicorn's parser or the route refuses it, the answer is a problem+json 400."""
    conn = Connection(network_log.url)
    r = conn.exchange(
        request_bytes("POST", "/add-entry", body=b"x", content_length=length), last=True
    )
    assert r.status == 400, (length, r)
    assert r.content_type == "application/problem+json" and b'"detail"' in r.body


def test_witness_reads_content_length_strictly(tmp_path: Path) -> None:
    """The witness's ``/add-checkpoint`` and ``/consensus`` read ``Content-Length`` strictly."""
    init_network(tmp_path, witnesses=1, ports=free_ports(2))
    witness = ServerProcess(
        ["witness", "run", "--config", str(tmp_path / "network.json")]
        + ["--key", str(tmp_path / "witness-1.key"), "--data", str(tmp_path / "w1")]
        + ["--listen", "127.0.0.1:0"]
    ).start()
    try:
        for path in ("/add-checkpoint", "/consensus"):
            for length in (b"\xc2\xb2", b"01", b"1e3"):
                conn = Connection(witness.url)
                r = conn.exchange(
                    request_bytes("POST", path, body=b"x", content_length=length), last=True
                )
                assert r.status == 400, (path, length, r)
                assert r.content_type == "application/problem+json"
        assert httpx.get(witness.url + "/status").status_code == 200
    finally:
        witness.stop()


@pytest.mark.parametrize("listen", ["127.0.0.1:²", "127.0.0.1:08700", "127.0.0.1:65536"])
def test_listen_port_is_strict(tmp_path: Path, listen: str) -> None:
    done = run_cli("keygen", "example.test/log", "--out", str(tmp_path / "k"))
    assert done.returncode == 0
    served = run_cli(
        *("log", "serve", "--key", str(tmp_path / "k"), "--data", str(tmp_path / "d")),
        *("--open", "--listen", listen),
    )
    assert served.returncode == 2, served.stderr
    assert served.stderr.strip().count("\n") == 0 and "--listen" in served.stderr
