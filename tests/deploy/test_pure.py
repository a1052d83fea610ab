"""Pure parts of deploy/: dependency pins, container commands and config, per-node host names."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy.config import CLIENT_FILE, client_config
from deploy.dockernet import config_archive, node_command, node_names, write_container_config
from deploy.image import build_key
from deploy.pins import Installed, lock_text, resolve_pins
from logserver.core.errors import FormatError, UsageError
from logserver.protocol.network import NetworkConfig
from synchronicity.cmd_network import init_network
from tests.support.procs import run_cli

LINUX_311 = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"}


def test_pins_follow_requirements_extras_and_markers() -> None:
    table = {
        "web": Installed(
            "1.0", ("core>=2", 'tls; extra == "secure"', 'win; sys_platform == "win32"')
        ),
        "core": Installed("2.5", ("web",)),  # a cycle is fine
        "tls": Installed("0.3", ()),
        "win": Installed("9", ()),
        "unused": Installed("1", ()),
    }
    assert resolve_pins(["web"], table.get, LINUX_311) == {"core": "2.5", "web": "1.0"}
    assert resolve_pins(["Web[Secure]>=1"], table.get, LINUX_311) == {
        "core": "2.5",
        "tls": "0.3",
        "web": "1.0",
    }
    assert resolve_pins(['web; python_version < "3"'], table.get, LINUX_311) == {}


def test_pins_refuse_missing_or_excluded_versions() -> None:
    table = {"web": Installed("1.0", ("core>=3",)), "core": Installed("2.5", ())}
    with pytest.raises(UsageError, match=r"core 2\.5 is installed"):
        resolve_pins(["web"], table.get)
    with pytest.raises(UsageError, match="absent is required"):
        resolve_pins(["absent"], table.get)
    with pytest.raises(FormatError):
        resolve_pins(["not a requirement!"], table.get)


@given(
    st.lists(st.lists(st.integers(0, 9), max_size=4), min_size=10, max_size=10),
    st.sets(st.integers(0, 9), max_size=3),
)
def test_pins_are_exactly_what_is_reachable(edges: list[list[int]], roots: set[int]) -> None:
    table = {f"p{i}": Installed(f"{i}.0", tuple(f"p{j}" for j in edges[i])) for i in range(10)}
    reachable: set[int] = set()
    frontier = list(roots)
    while frontier:
        i = frontier.pop()
        if i not in reachable:
            reachable.add(i)
            frontier.extend(edges[i])
    pins = resolve_pins([f"p{i}" for i in roots], table.get)
    assert pins == {f"p{i}": f"{i}.0" for i in sorted(reachable)}
    assert lock_text(pins).splitlines() == sorted(f"{n}=={v}" for n, v in pins.items())


def test_build_key_depends_on_wheel_and_lock() -> None:
    keys = {build_key(w, lock) for w in ("a" * 64, "b" * 64) for lock in ("x==1\n", "x==2\n")}
    assert len(keys) == 4
    assert build_key("a" * 64, "x==1\n") == build_key("a" * 64, "x==1\n")


def test_hosts_give_each_node_its_url(tmp_path: Path) -> None:
    config = write_container_config(tmp_path, round_ms=300, max_round_ms=2000, entries="open")
    assert config.log.url == "http://log:8700"
    assert [w.url for w in config.witnesses] == [
        f"http://witness-{i}:{8700 + i}" for i in range(1, 5)
    ]
    assert node_names(4) == ["log", "witness-1", "witness-2", "witness-3", "witness-4"]
    assert config.timeouts.round_ms == 300 and config.entries == "open"
    default = init_network(tmp_path / "default", log_port=9000)
    assert default.log.url == "http://127.0.0.1:9000"
    assert default.witnesses[3].url == "http://127.0.0.1:9004"
    with pytest.raises(UsageError):
        init_network(tmp_path / "bad", hosts=["log", "witness-1"])


def test_node_commands_listen_on_all_interfaces(tmp_path: Path) -> None:
    config = write_container_config(tmp_path, entries="protocol")
    log = node_command("log", config)
    assert log[:2] == ["log", "serve"] and "--open" not in log
    assert log[log.index("--listen") + 1] == "0.0.0.0:8700"
    witness = node_command("witness-3", config)
    assert witness[witness.index("--key") + 1] == "/config/witness-3.key"
    assert witness[witness.index("--listen") + 1] == "0.0.0.0:8703"
    opened = write_container_config(tmp_path / "open", entries="open")
    assert "--open" in node_command("log", opened)


def testconfig_archive_holds_only_the_nodes_own_key(tmp_path: Path) -> None:
    write_container_config(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(config_archive(tmp_path, "witness-2"))) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert set(members) == {"network.json", "policy", "witness-2.key"}
        assert members["witness-2.key"].mode == 0o600
        assert all(m.uid == m.gid == 10001 for m in members.values())
        key = archive.extractfile("witness-2.key")
        assert key is not None
        assert key.read() == (tmp_path / "witness-2.key").read_bytes()


def test_deploy_config_command_writes_once(tmp_path: Path) -> None:
    net = tmp_path / "net"
    done = run_cli("deploy", "config", "--dir", str(net), "--entries", "open", "--witnesses", "4")
    assert done.returncode == 0, done.stderr
    assert "log at http://log:8700" in done.stdout and "http://witness-4:8704" in done.stdout
    assert (net / "network.json").is_file() and (net / "witness-4.key").is_file()
    again = run_cli("deploy", "config", "--dir", str(net))
    assert again.returncode == 2 and "--force" in again.stderr
    assert run_cli("deploy", "config", "--dir", str(net), "--force").returncode == 0


def test_client_config_is_the_network_at_the_published_ports(tmp_path: Path) -> None:
    network = write_container_config(tmp_path, entries="open")
    client = client_config(network)
    assert client.log.url == "http://127.0.0.1:8700"
    assert [w.url for w in client.witnesses] == [
        f"http://127.0.0.1:{8700 + i}" for i in range(1, 5)
    ]
    assert network.witnesses[0].url == "http://witness-1:8701"
    # the same network otherwise: id, keys, names, rules
    assert (client.log.origin, client.log.vkey) == (network.log.origin, network.log.vkey)
    assert (client.network_id, client.f, client.entries) == (network.network_id, 1, "open")
    assert [w.vkey for w in client.witnesses] == [w.vkey for w in network.witnesses]
    chosen = client_config(network, [9000, 9001, 9002, 9003, 9004])
    assert chosen.witnesses[3].url == "http://127.0.0.1:9004"
    with pytest.raises(ValueError):
        client_config(network, [9000, 9001])
    # deploy config writes it beside network.json
    done = run_cli("deploy", "config", "--dir", str(tmp_path / "net"))
    assert done.returncode == 0, done.stderr
    written = NetworkConfig.parse((tmp_path / "net" / CLIENT_FILE).read_bytes())
    assert written == client_config(
        NetworkConfig.parse((tmp_path / "net" / "network.json").read_bytes())
    )
