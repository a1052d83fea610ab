"""``network init`` checks what it would write and refuses a network that cannot run: exit 2,
one line, nothing written. (``--log-port 0`` used to write URLs with ports 0 to 4.)"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from logserver.protocol.network import NetworkConfig
from tests.support.procs import run_cli

REFUSED = [
    (["--log-port", "0"], "--log-port"),
    (["--log-port", "-5"], "--log-port"),
    (["--log-port", "65532"], "--log-port"),  # witness 4 would be on 65536
    (["--log-port", "70000"], "--log-port"),
    (["--witnesses", "7", "--log-port", "65529"], "--log-port"),
    (["--witnesses", "0"], "3f+1"),
    (["--witnesses", "3"], "3f+1"),
    (["--witnesses", "103"], "3f+1"),
    (["--host", "bad_host"], "not a host name"),
    (["--host", "999.1.1.1"], "not a host name"),
    (["--host=-leading.example"], "not a host name"),
    (["--host", "wïtness.example"], "not a host name"),
    (["--host", ""], "not a host name"),
    (["--host", "a" * 64 + ".example"], "not a host name"),
    (["--hosts", "log,witness-1"], "one host for the log and one for each witness"),
    (["--hosts", "log,w1,w2,w3,w/4"], "not a host name"),
    (["--origin", "two words"], "--origin"),
]


@pytest.mark.parametrize(("args", "says"), REFUSED)
def test_refuses_what_cannot_run(tmp_path: Path, args: list[str], says: str) -> None:
    directory = tmp_path / "net"
    done = run_cli("network", "init", "--dir", str(directory), *args)
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("synchronicity: ")
    assert says in done.stderr
    assert not directory.exists() or not any(directory.iterdir())  # nothing written


@pytest.mark.parametrize(
    ("args", "urls"),
    [
        (["--log-port", "65531"], [f"http://127.0.0.1:{p}" for p in range(65531, 65536)]),
        (["--log-port", "1", "--witnesses", "1"], ["http://127.0.0.1:1", "http://127.0.0.1:2"]),
        (["--host", "::1", "--witnesses", "1"], ["http://[::1]:8700", "http://[::1]:8701"]),
        (
            ["--hosts", "log.example.org,node-1.example.org", "--witnesses", "1"],
            ["http://log.example.org:8700", "http://node-1.example.org:8701"],
        ),
    ],
)
def test_writes_what_it_checked(tmp_path: Path, args: list[str], urls: list[str]) -> None:
    done = run_cli("network", "init", "--dir", str(tmp_path), *args)
    assert done.returncode == 0, done.stderr
    config = NetworkConfig.parse((tmp_path / "network.json").read_bytes())
    assert [config.log.url] + [w.url for w in config.witnesses] == urls
    for url in urls:
        port = urlsplit(url).port
        assert port is not None and 1 <= port <= 65535
