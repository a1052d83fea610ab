"""``synchronicity install`` and ``fetch`` against a real protocol log whose reproduced crates'
artifacts are in its blob store (``tests.support.crate_fixtures``; the binaries are shell
scripts, so what is installed is run). No Docker: ``test_install_rebuilt.py`` does the same
with crates the network really rebuilt.

Shown here: the proven binary is installed, executable, and runs; its proof is kept and
verifies; a byte flipped in the log's blob store, or a mirror that serves other bytes, is
refused (exit 1) and nothing is written; a library, a not-reproduced crate and a not-reproduced
verdict newer than a reproduced one are refused with one line; ``fetch --bundle`` is
deterministic and ``verify --artifact`` checks the bundle with PyNaCl as the only package
installed; install and fetch run with the server and builder modules unimportable.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from logserver.core.errors import FormatError
from synchronicity.bundle import read_bundle
from tests.support.crate_fixtures import ARTIFACTS, CrateLog, start_crate_log
from tests.support.isolation import run_blocked, run_pynacl_only
from tests.support.paths import ROOT
from tests.support.procs import run_cli

HELLO = ARTIFACTS["hello-tool", "1.0.0"]["hello-tool"]


@pytest.fixture(scope="module")
def crate_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrateLog]:
    running = start_crate_log(tmp_path_factory.mktemp("crates"))
    try:
        yield running
    finally:
        running.stop()


def flip_one_byte(path: Path) -> bytes:
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return original


def test_install_puts_the_proven_binary_in_place_and_it_runs(
    crate_log: CrateLog, tmp_path: Path
) -> None:
    root = tmp_path / "cargo"
    env = {**os.environ, "CARGO_INSTALL_ROOT": str(root)}  # cargo's install root by default
    done = subprocess.run(
        [sys.executable, "-m", "synchronicity", "install", "hello-tool", *crate_log.source()],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    binary = root / "bin" / "hello-tool"
    assert f"installed {binary} (hello-tool@1.0.0)" in done.stdout  # the newest release
    assert binary.stat().st_mode & 0o777 == 0o755
    ran = subprocess.run([str(binary)], capture_output=True, text=True, check=True)
    assert ran.stdout == "hello-tool 1.0.0, reproduced\n"
    proof = root / ".synchronicity" / "hello-tool-1.0.0.tlog-proof"
    check = run_cli(
        *("verify", "--policy", str(crate_log.policy), "--proof", str(proof)),
        *("--artifact", str(binary)),
    )
    assert check.returncode == 0, check.stderr
    assert "is the reproduced hello-tool" in check.stdout
    # Another version replaces it in place (no temporary file is left behind).
    older = run_cli("install", "hello-tool@0.9.0", "--root", str(root), *crate_log.source())
    assert older.returncode == 0, older.stderr
    again = subprocess.run([str(binary)], capture_output=True, text=True, check=True)
    assert again.stdout.startswith("hello-tool 0.9.0")
    assert sorted(p.name for p in (root / "bin").iterdir()) == ["hello-tool"]


def test_a_flipped_byte_in_the_blob_store_is_refused(crate_log: CrateLog, tmp_path: Path) -> None:
    blob = crate_log.blob_path(HELLO)
    original = flip_one_byte(blob)
    try:
        root = tmp_path / "root"
        done = run_cli("install", "hello-tool@1.0.0", "--root", str(root), *crate_log.source())
        assert done.returncode == 1, done.stdout + done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert "is not the reproduced one" in done.stderr and crate_log.url in done.stderr
        assert not root.exists()  # nothing is written before every byte checks out
        fetched = run_cli(
            "fetch", "hello-tool@1.0.0", "--out", str(tmp_path / "o"), *crate_log.source()
        )
        assert fetched.returncode == 1 and not (tmp_path / "o").exists()
    finally:
        blob.write_bytes(original)


class _Mirror:
    """A static web server of a directory of blobs named by their SHA-256."""

    def __init__(self, directory: Path) -> None:
        handler = partial(SimpleHTTPRequestHandler, directory=str(directory))
        handler.log_message = lambda *args: None  # type: ignore[attr-defined]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/blobs"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_mirror_is_asked_first_and_checked_too(crate_log: CrateLog, tmp_path: Path) -> None:
    served = tmp_path / "www" / "blobs"
    served.mkdir(parents=True)
    name = hashlib.sha256(HELLO).hexdigest()
    (served / name).write_bytes(HELLO)
    mirror = _Mirror(tmp_path / "www")
    blob = crate_log.blob_path(HELLO)
    original = flip_one_byte(blob)  # the log's copy is bad: only the mirror's can be taken
    try:
        root = tmp_path / "root"
        install = ["install", "hello-tool@1.0.0", "--root", str(root), *crate_log.source()]
        done = run_cli(*install, "--mirror", mirror.url)
        assert done.returncode == 0, done.stderr
        assert (root / "bin" / "hello-tool").read_bytes() == HELLO
        flip_one_byte(served / name)
        bad = run_cli(*install, "--mirror", mirror.url)
        assert bad.returncode == 1 and f"from {mirror.url}/{name} is not the reproduced" in (
            bad.stderr
        )
    finally:
        blob.write_bytes(original)
        mirror.stop()


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("libonly", "libonly@2.0.0 has no binary to install (it is a library: rlib); get it "
         "with: synchronicity fetch libonly@2.0.0 --out DIR"),
        ("broken", "no release of broken has a reproduced verdict"),
        ("broken@0.1.0", "the newest verdict for broken@0.1.0 is not-reproduced"),
        ("hidden", "the newest verdict for hidden@1.0.0 is not-reproduced"),
        ("hidden@1.0.0", "an older reproduced verdict does not outweigh it"),
        ("nothing-here", "has no verdict for nothing-here"),
        ("hello-tool@3.0.0", "has no verdict for hello-tool@3.0.0"),
    ],
)  # fmt: skip
def test_what_is_not_a_reproduced_binary_is_refused_in_one_line(
    crate_log: CrateLog, tmp_path: Path, spec: str, says: str
) -> None:
    done = run_cli("install", spec, "--root", str(tmp_path / "root"), *crate_log.source())
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
    assert not (tmp_path / "root").exists()


def test_bad_arguments_are_usage_errors(crate_log: CrateLog, tmp_path: Path) -> None:
    for args in (
        ["install", "hello-tool@1.0", *crate_log.source()],
        ["install", "../x", *crate_log.source()],
        ["install", "hello-tool", "--log", crate_log.url],
        ["fetch", "hello-tool", "--out", str(tmp_path), "--network", "n.json", "--log", "x"],
    ):
        done = run_cli(*args)
        assert done.returncode == 2, (args, done.stderr)


def test_fetch_writes_every_artifact_and_a_deterministic_bundle(
    crate_log: CrateLog, tmp_path: Path
) -> None:
    plain = run_cli(
        "fetch", "hello-tool@1.0.0", "--out", str(tmp_path / "plain"), *crate_log.source()
    )
    assert plain.returncode == 0, plain.stderr
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "hello-tool",
        "hello-tool-1.0.0.tlog-proof",
        "libhello_tool.rlib",
    ]
    bundles = []
    for attempt in ("a", "b"):
        out = tmp_path / attempt
        done = run_cli(
            "fetch", "hello-tool@1.0.0", "--out", str(out), "--bundle", *crate_log.source()
        )
        assert done.returncode == 0, done.stderr
        bundles.append(out / "hello-tool-1.0.0.tar")
    assert bundles[0].read_bytes() == bundles[1].read_bytes()
    with tarfile.open(bundles[0]) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "hello-tool-1.0.0",
        "hello-tool-1.0.0/hello-tool",
        "hello-tool-1.0.0/hello-tool-1.0.0.tlog-proof",
        "hello-tool-1.0.0/libhello_tool.rlib",
    ]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert [m.mode for m in members] == [0o755, 0o755, 0o644, 0o644]
    # A library's artifacts too: fetch is for any reproduced artifact.
    lib = run_cli("fetch", "libonly@2.0.0", "--out", str(tmp_path / "lib"), *crate_log.source())
    assert lib.returncode == 0 and (tmp_path / "lib" / "liblibonly.rlib").exists()


def _bundle(crate_log: CrateLog, out: Path) -> Path:
    done = run_cli("fetch", "hello-tool@1.0.0", "--out", str(out), "--bundle", *crate_log.source())
    assert done.returncode == 0, done.stderr
    return out / "hello-tool-1.0.0.tar"


def test_verify_checks_a_bundle_with_pynacl_only(crate_log: CrateLog, tmp_path: Path) -> None:
    bundle = _bundle(crate_log, tmp_path)
    policy = str(crate_log.policy)
    ok = run_pynacl_only("verify", "--policy", policy, "--artifact", str(bundle))
    assert ok.returncode == 0, ok.stderr
    assert "OK: hello-tool@1.0.0 was reproduced by 4 builders" in ok.stdout
    assert f"OK: {bundle}:hello-tool is the reproduced hello-tool" in ok.stdout
    assert f"OK: {bundle}:libhello_tool.rlib is the reproduced" in ok.stdout
    proof = tmp_path / "p.tlog-proof"
    proof.write_bytes(read_bundle(bundle).proof)
    with_proof = run_pynacl_only(
        "verify", "--policy", policy, "--proof", str(proof), "--artifact", str(bundle)
    )
    assert with_proof.returncode == 0, with_proof.stderr
    # One byte of an artifact inside the bundle changed: refused.
    data = bytearray(bundle.read_bytes())
    at = data.index(b"reproduced'")
    data[at] ^= 0x01
    tampered = tmp_path / "tampered.tar"
    tampered.write_bytes(bytes(data))
    bad = run_pynacl_only("verify", "--policy", policy, "--artifact", str(tampered))
    assert bad.returncode == 1 and "is not the reproduced hello-tool" in bad.stderr, bad.stderr
    not_a_bundle = run_pynacl_only("verify", "--policy", policy, "--artifact", policy)
    assert not_a_bundle.returncode == 2 and "give --proof" in not_a_bundle.stderr


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("../x.tlog-proof", b"p")], "not TOP/FILE"),
        ([("/abs/x.tlog-proof", b"p")], "not TOP/FILE"),
        ([("a/b/c.tlog-proof", b"p")], "not TOP/FILE"),
        ([("a/x.tlog-proof", b"p"), ("b/y", b"y")], "not under a/"),
        ([("a/x.tlog-proof", b"p"), ("a/x.tlog-proof", b"p")], "appears twice"),
        ([("a/x.tlog-proof", b"p"), ("a/y.tlog-proof", b"q")], "exactly one"),
        ([("a/bin", b"x")], "exactly one"),
        ([("a/sp ace", b"x")], "manifest file name"),
    ],
)
def test_bundles_with_tricks_are_refused(
    tmp_path: Path, members: list[tuple[str, bytes]], reason: str
) -> None:
    path = tmp_path / "b.tar"
    path.write_bytes(_tar([(_member(name), data) for name, data in members]))
    with pytest.raises(FormatError, match=reason):
        read_bundle(path)


def test_links_and_too_many_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.tar"
    path.write_bytes(_tar([(_member("a/x", tarfile.SYMTYPE, "/etc/passwd"), b"")]))
    with pytest.raises(FormatError, match="link or special file"):
        read_bundle(path)
    path.write_bytes(_tar([(_member(f"a/f{i}"), b"") for i in range(1025)]))
    with pytest.raises(FormatError, match="more than 1024 members"):
        read_bundle(path)
    path.write_bytes(b"\x00" * 2048 + b"not a tar at all")
    with pytest.raises(FormatError):
        read_bundle(path)


def test_install_and_fetch_need_no_server_or_builder(crate_log: CrateLog, tmp_path: Path) -> None:
    """Only the client extra: fastapi, uvicorn, lmdb, docker and our server and builder
    modules cannot be imported."""
    root = tmp_path / "root"
    done = run_blocked("install", "hello-tool", "--root", str(root), *crate_log.source())
    assert done.returncode == 0, done.stderr
    assert (root / "bin" / "hello-tool").read_bytes() == HELLO
    fetched = run_blocked(
        "fetch", "hello-tool@1.0.0", "--out", str(tmp_path / "o"), "--bundle", *crate_log.source()
    )
    assert fetched.returncode == 0, fetched.stderr
    # The blocker does block: a server command cannot run under it.
    blocked = run_blocked("log", "serve", "--key", "k", "--data", str(tmp_path / "d"))
    assert blocked.returncode == 3 and "this command needs" in blocked.stderr, blocked.stderr
    assert str(ROOT)  # the wrapper runs this checkout
