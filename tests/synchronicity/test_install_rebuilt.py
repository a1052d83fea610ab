"""``install`` and ``fetch`` of crates a local network really rebuilt (four builder-witness
processes, Docker builds, crates.io for dependencies).

On one network: the local binary crate ``hello-bin`` (reproduced), the crates.io library
``itoa@1.0.11`` (reproduced) and the local ``unrepro`` (not reproduced) are rebuilt, at once.
Then: ``install hello-bin --local`` puts the binary into a temporary root and it runs; without
``--local`` the verdict of a local upload is refused; one byte flipped in the log's blob store
makes install refuse; ``unrepro`` is refused; ``itoa`` has no binary, and ``fetch --bundle``
gives a tar that ``verify`` checks with PyNaCl alone; install runs without the server and
builder modules; a monitor finds the log's crate index true to its leaves.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from synchronicity.localnet import LocalNetwork
from tests.support.builder_helpers import pack_fixture
from tests.support.isolation import run_blocked, run_pynacl_only
from tests.support.procs import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]


@dataclass
class Rebuilt:
    net: LocalNetwork
    config: str
    results: dict[str, dict[str, Any]]

    def source(self) -> list[str]:
        return ["--network", self.config]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rebuilt]:
    base = tmp_path_factory.mktemp("rebuilt")
    net = LocalNetwork.create(base / "network").start()
    config = str(base / "network" / "network.json")
    specs = {
        "hello-bin": str(pack_fixture("hello-bin", base)),
        "itoa": "itoa@1.0.11",
        "unrepro": str(pack_fixture("unrepro", base)),
    }
    try:
        running = {
            name: subprocess.Popen(
                [sys.executable, "-m", "synchronicity", "rebuild", spec, "--network", config]
                + ["--out", str(base / name), "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, spec in specs.items()
        }
        results = {}
        for name, proc in running.items():
            out, err = proc.communicate(timeout=1800)
            assert proc.returncode in (0, 1), err
            results[name] = json.loads(out)
        assert results["hello-bin"]["outcome"] == "reproduced", results
        assert results["itoa"]["outcome"] == "reproduced", results
        assert results["unrepro"]["outcome"] == "not-reproduced", results
        yield Rebuilt(net, config, results)
    finally:
        net.stop()


def test_install_a_rebuilt_binary_and_run_it(rebuilt: Rebuilt, tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = run_cli("install", "hello-bin", "--local", "--root", str(root), *rebuilt.source())
    assert done.returncode == 0, done.stderr
    assert "hello-bin@0.1.0: reproduced by 4 builders" in done.stdout
    binary = str(root / "bin" / "hello-bin")
    ran = subprocess.run([binary], capture_output=True, text=True, check=True)
    assert ran.stdout == "hello from synchronicity: 42\n"
    assert (root / ".synchronicity" / "hello-bin-0.1.0.tlog-proof").is_file()
    assert sorted(p.name for p in (root / "bin").iterdir()) == ["hello-bin"]  # no rlib here
    # The verdict is of a local upload, not of a crates.io release: taken only when asked.
    refused = run_cli("install", "hello-bin", "--root", str(tmp_path / "r2"), *rebuilt.source())
    assert refused.returncode == 1 and "give --local" in refused.stderr


def test_install_refuses_a_flipped_byte_in_the_blob_store(rebuilt: Rebuilt, tmp_path: Path) -> None:
    artifacts = rebuilt.results["hello-bin"]["artifacts"]
    [binary] = [Path(p) for p in artifacts if not p.endswith(".rlib")]
    name = hashlib.sha256(binary.read_bytes()).hexdigest()
    blob = rebuilt.net.dir / "log" / "blobs" / name[:2] / name
    original = blob.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    blob.write_bytes(bytes(flipped))
    try:
        root = tmp_path / "root"
        done = run_cli("install", "hello-bin", "--local", "--root", str(root), *rebuilt.source())
        assert done.returncode == 1, done.stdout + done.stderr
        assert "is not the reproduced one" in done.stderr and not root.exists()
    finally:
        blob.write_bytes(original)


def test_not_reproduced_and_libraries_are_refused(rebuilt: Rebuilt, tmp_path: Path) -> None:
    unrepro = run_cli("install", "unrepro", "--local", "--root", str(tmp_path), *rebuilt.source())
    assert unrepro.returncode == 1 and "no release of unrepro has a reproduced" in unrepro.stderr
    exact = run_cli("install", "unrepro@0.1.0", "--local", *rebuilt.source())
    assert exact.returncode == 1 and "is not-reproduced" in exact.stderr
    library = run_cli("install", "itoa", "--root", str(tmp_path), *rebuilt.source())
    assert library.returncode == 1, library.stderr
    assert "itoa@1.0.11 has no binary to install (it is a library: rlib)" in library.stderr
    assert "synchronicity fetch itoa@1.0.11" in library.stderr


def test_fetch_a_bundle_and_verify_it_with_pynacl_alone(rebuilt: Rebuilt, tmp_path: Path) -> None:
    fetched = run_blocked(
        "fetch", "itoa@1.0.11", "--out", str(tmp_path), "--bundle", *rebuilt.source()
    )
    assert fetched.returncode == 0, fetched.stderr
    bundle = tmp_path / "itoa-1.0.11.tar"
    policy = rebuilt.results["itoa"]["policy"]
    ok = run_pynacl_only("verify", "--policy", str(policy), "--artifact", str(bundle))
    assert ok.returncode == 0, ok.stderr
    assert "OK: itoa@1.0.11 was reproduced by 4 builders" in ok.stdout
    assert ".rlib is the reproduced" in ok.stdout
    # install needs only the client extra too.
    root = tmp_path / "root"
    done = run_blocked("install", "hello-bin", "--local", "--root", str(root), *rebuilt.source())
    assert done.returncode == 0, done.stderr


def test_a_monitor_finds_the_index_true_to_the_leaves(rebuilt: Rebuilt, tmp_path: Path) -> None:
    policy = str(rebuilt.net.dir / "policy")
    done = run_cli(
        *("monitor", "--policy", policy, "--state", str(tmp_path), "--once"),
        *("--network", rebuilt.config),
    )
    assert done.returncode == 0, done.stderr
    assert "crate index checked (3 of 3 crates asked)" in done.stdout
