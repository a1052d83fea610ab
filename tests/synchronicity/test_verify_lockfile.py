"""A consumer's question, answered offline: which crates of my ``Cargo.lock`` were reproduced?

Real proofs from ``synchronicity rebuild`` on a local network (a log and four builder-witness
processes, Docker builds): itoa 1.0.11 from crates.io (reproduced) and a local crate whose build
fails on every builder (a ``failed`` verdict, whose proof carries its recipe too). A Cargo.lock
names both with their real checksums, a crate without a proof, a path and a git dependency;
``verify --proofs DIR --lockfile FILE`` reports each and exits 1, and 0 once only reproduced
crates are locked. A tampered proof is ``invalid``; a proof of other bytes is a ``mismatch``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import httpx
import pytest

from logserver.core import note
from tests.support.builder_helpers import pack_fixture
from tests.support.procs import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]

CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
GIT = "git+https://github.com/example/forked?rev=abc#0123456789abcdef0123456789abcdef01234567"


def crates_io_checksum(name: str, version: str) -> str:
    """The .crate SHA-256 the crates.io index lists (what cargo writes into Cargo.lock)."""
    prefix = f"{name[:2]}/{name[2:4]}" if len(name) >= 4 else f"{len(name)}/{name[0]}"
    r = httpx.get(f"https://index.crates.io/{prefix}/{name}", timeout=60)
    r.raise_for_status()
    for line in r.text.splitlines():
        release = json.loads(line)
        if release["vers"] == version:
            return str(release["cksum"])
    raise AssertionError(f"{name} {version} is not in the index")


def lockfile(*packages: tuple[str, str, str | None, str | None]) -> str:
    lines = ["version = 4", ""]
    for name, version, source, checksum in packages:
        lines += ["[[package]]", f'name = "{name}"', f'version = "{version}"']
        lines += [f'source = "{source}"'] if source else []
        lines += [f'checksum = "{checksum}"'] if checksum else []
        lines.append("")
    return "\n".join(lines)


def verify_lock(policy: str, proofs: Path, lock: Path, *more: str) -> tuple[int, str, str]:
    done = run_cli(
        *("verify", "--policy", policy, "--proofs", str(proofs), "--lockfile", str(lock), *more)
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def statuses(stdout: str) -> dict[str, str]:
    return {p["name"]: p["status"] for p in json.loads(stdout)["packages"]}


def test_a_lockfile_checked_against_real_proofs(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "proofs"
    itoa = run_cli(
        *("rebuild", "itoa@1.0.11", "--home", str(home), "--out", str(out), "--json"), timeout=900
    )
    assert itoa.returncode == 0, itoa.stderr
    policy = json.loads(itoa.stdout)["policy"]
    crate = pack_fixture("hostile-network", tmp_path)  # its build script always panics
    failing = run_cli(
        *("rebuild", str(crate), "--home", str(home), "--out", str(out), "--json"), timeout=900
    )
    assert failing.returncode == 1, failing.stderr
    assert json.loads(failing.stdout)["outcome"] == "failed"
    # Proofs are matched by what they say, not by their names.
    shutil.move(out / "itoa-1.0.11.tlog-proof", out / "a.tlog-proof")
    shutil.move(out / "hostile-network-0.1.0.tlog-proof", out / "b.tlog-proof")

    itoa_sum = crates_io_checksum("itoa", "1.0.11")
    failing_sum = hashlib.sha256(crate.read_bytes()).hexdigest()
    lock = tmp_path / "Cargo.lock"
    lock.write_text(
        lockfile(
            ("my-app", "0.1.0", None, None),
            ("itoa", "1.0.11", CRATES_IO, itoa_sum),
            ("hostile-network", "0.1.0", CRATES_IO, failing_sum),
            ("ryu", "1.0.18", CRATES_IO, hashlib.sha256(b"not proved").hexdigest()),
            ("forked", "0.3.0", GIT, None),
        )
    )
    code, table, _ = verify_lock(policy, out, lock)
    assert code == 1, table
    rows = {line.split()[0]: line.split()[2] for line in table.splitlines()[1:6]}
    assert rows == {
        "my-app": "skipped",
        "itoa": "reproduced",
        "hostile-network": "failed",
        "ryu": "missing",
        "forked": "skipped",
    }
    assert "a.tlog-proof: verdict #" in table and "4 builders agree" in table
    assert "a path dependency" in table and "a git dependency" in table
    assert "3 packages from crates.io: 1 reproduced, 1 failed, 1 missing; 2 skipped" in table
    code, report, _ = verify_lock(policy, out, lock, "--json")
    assert code == 1 and json.loads(report)["counts"]["failed"] == 1
    by_name = {p["name"]: p for p in json.loads(report)["packages"]}
    assert by_name["itoa"]["proof"]["file"] == "a.tlog-proof"
    assert by_name["hostile-network"]["proof"]["file"] == "b.tlog-proof"
    assert by_name["ryu"]["proof"] is None and by_name["forked"]["source"] == GIT

    # Only reproduced crates (and a path package): exit 0.
    lock.write_text(
        lockfile(("my-app", "0.1.0", None, None), ("itoa", "1.0.11", CRATES_IO, itoa_sum))
    )
    code, table, _ = verify_lock(policy, out, lock)
    assert code == 0, table
    assert "1 packages from crates.io: 1 reproduced; 1 skipped" in table
    assert "1 proof files are about no locked package" in table  # the failed one

    # The same name and version, other bytes: the proof is not about this package.
    lock.write_text(lockfile(("itoa", "1.0.11", CRATES_IO, failing_sum)))
    code, report, _ = verify_lock(policy, out, lock, "--json")
    assert code == 1 and statuses(report) == {"itoa": "mismatch"}

    # A tampered proof (one hash of its inclusion proof changed) is invalid, and says why.
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    lines = (out / "a.tlog-proof").read_bytes().split(b"\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(b"index ")) + 1
    raw = bytearray(note.b64decode_strict(lines[at].decode(), "hash"))
    raw[0] ^= 1
    lines[at] = note.b64encode(bytes(raw)).encode()
    (tampered / "itoa.tlog-proof").write_bytes(b"\n".join(lines))
    lock.write_text(lockfile(("itoa", "1.0.11", CRATES_IO, itoa_sum)))
    code, table, _ = verify_lock(policy, tampered, lock)
    assert code == 1
    assert table.splitlines()[1].split()[:3] == ["itoa", "1.0.11", "invalid"]
    assert "itoa.tlog-proof: " in table and "inclusion proof" in table

    # The failed verdict's proof verifies on its own, and says it is not reproduced.
    single = run_cli("verify", "--policy", policy, "--proof", str(out / "b.tlog-proof"))
    assert single.returncode == 1 and "'failed', not reproduced" in single.stderr
