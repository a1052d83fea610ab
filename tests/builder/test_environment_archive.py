"""Environment archives and sources without Docker: canonical bytes, strict reading, digests,
chunking, and every source verified before anything is kept.

- a tree's canonical archive has the tree digest of builder.fstree, reads back with tar tools,
  and is the same bytes every time (and so is its gzip);
- anything but the canonical archive of a tree is refused: another tar writer's archive of the
  same tree, out of order, missing parents, hard links, garbage after the end; a flipped byte
  is refused or changes the digests;
- fetching tries each source in turn, keeps only an archive whose tree digest (and archive
  digest) is the recipe's, and says what each source answered; a deadline ends it;
- export and chunked upload round-trip through a directory, an HTTP server and a blob store;
- recipes: the new optional members round-trip, old recipes keep their bytes; the dist
  components are read from rustup's files; network configs name environment sources strictly.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import json
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder import envarchive, fstree
from builder.envarchive import (
    CHUNK_BYTES,
    KIND_ROOTFS,
    KIND_TOOLCHAIN,
    ArchiveHasher,
    ArchiveIndex,
    Encoder,
    GunzipReader,
    archive_name,
    read_archive,
    verify_archive,
)
from builder.environment import (
    EnvironmentOptions,
    EnvironmentSpec,
    export_environment,
    upload_environment,
)
from builder.envsource import (
    BlobSource,
    DirectorySource,
    EnvironmentUnavailable,
    UrlSource,
    fetch_archive,
    parse_source,
)
from builder.image import archive_path, write_archive
from builder.recipe import DistComponent, Recipe, Toolchain, from_json
from builder.toolchain import dist_components, toolchain_digest
from logserver.core import canonical_json
from logserver.core.errors import FormatError, OperationalError, UsageError
from logserver.protocol.network import NetworkConfig


def _quiet(line: str) -> None:
    del line


def make_tree(root: Path) -> Path:
    """A small tree with what real trees have: long and non-ASCII names, links, modes."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "lib" / ("d" * 120)).mkdir(parents=True)
    (root / "lib" / ("d" * 120) / "deep.txt").write_bytes(b"deep")
    (root / "lib" / "é ü.txt").write_text("unicode")
    (root / "lib" / "empty").write_bytes(b"")
    (root / "lib" / "big.bin").write_bytes(os.urandom(70_000))
    (root / "lib" / "link").symlink_to("big.bin")
    (root / "lib" / "long-link").symlink_to("x" * 150)
    (root / "a-b").write_text("sorts before a/")
    return root


def encode(root: Path, kind: str) -> tuple[bytes, str]:
    encoder = Encoder(kind)
    data = b"".join(encoder.encode(envarchive.tree_entries(root, kind)))
    assert encoder.tree_sha256 is not None
    return data, encoder.tree_sha256


@pytest.mark.parametrize(("kind", "owners"), [(KIND_ROOTFS, True), (KIND_TOOLCHAIN, False)])
def test_canonical_archive_has_the_tree_digest_and_reads_back(
    tmp_path: Path, kind: str, owners: bool
) -> None:
    root = make_tree(tmp_path / "tree")
    data, digest = encode(root, kind)
    assert digest == fstree.tree_digest(root, owners=owners)
    assert len(data) % 10240 == 0
    assert encode(root, kind)[0] == data  # the same bytes every time
    verified = verify_archive(io.BytesIO(data), kind)
    assert verified.index.tree_sha256 == digest
    assert verified.index.sha256 == hashlib.sha256(data).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:  # any tar reader agrees
        names = archive.getnames()
        assert names == sorted(names, key=lambda name: name.encode())
        assert archive.getmember("lib/long-link").linkname == "x" * 150
        member = archive.extractfile(f"lib/{'d' * 120}/deep.txt")
        assert member is not None and member.read() == b"deep"
    (tmp_path / "a.tar").write_bytes(data)
    listing = subprocess.run(
        ["tar", "-tf", str(tmp_path / "a.tar")], check=False, capture_output=True
    )
    assert listing.returncode == 0 and b"lib/\xc3\xa9 \xc3\xbc.txt" in listing.stdout
    gz = b"".join(envarchive.gzip_pieces([data]))
    assert b"".join(envarchive.gzip_pieces([data[:5000], data[5000:]])) == gz
    assert gzip.decompress(gz) == data and GunzipReader(io.BytesIO(gz)).read() == data


def _refused(data: bytes, kind: str = KIND_ROOTFS) -> str:
    with pytest.raises(FormatError) as caught:
        verify_archive(io.BytesIO(data), kind)
    return str(caught.value)


def test_only_the_canonical_archive_of_a_tree_is_read(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    data, _ = encode(root, KIND_ROOTFS)
    other = io.BytesIO()
    with tarfile.open(fileobj=other, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in fstree.walk(root):
            archive.add(root / entry.path, entry.path, recursive=False)
    assert "not canonical" in _refused(other.getvalue())
    assert "trailer" in _refused(data + b"\0" * 10240)
    assert "trailer" in _refused(data + b"x")
    assert "ends" in _refused(data[: -10240 - 700])

    def made(path: str, kind: str = "d") -> envarchive.Entry:
        size = 1 if kind == "f" else 0
        tree_entry = fstree.TreeEntry(path, kind, 0o755, 0, 0, size, "", "")
        return tree_entry, ((b"x",) if kind == "f" else ())

    for entries, reason in [
        ([made("b"), made("a")], "out of order"),
        ([made("a"), made("a")], "out of order"),
        ([made("a/b")], "parent"),
        ([made("a", "f"), made("a/b")], "parent"),
        ([made("../x")], "plain relative path"),
    ]:
        with pytest.raises(FormatError, match=reason):
            b"".join(Encoder(KIND_ROOTFS).encode(entries))
    owned = fstree.TreeEntry("x", "f", 0o644, 1000, 1000, 1, "", "")
    with pytest.raises(FormatError, match="toolchain entry"):
        b"".join(Encoder(KIND_TOOLCHAIN).encode([(owned, (b"x",))]))
    hard = io.BytesIO()
    with tarfile.open(fileobj=hard, mode="w") as archive:
        info = tarfile.TarInfo("a")
        info.type = tarfile.LNKTYPE
        info.linkname = "b"
        archive.addfile(info)
    assert "tar type" in _refused(hard.getvalue())


def test_a_flipped_byte_is_refused_or_changes_the_digests(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    data, digest = encode(root, KIND_ROOTFS)
    index = verify_archive(io.BytesIO(data), KIND_ROOTFS).index
    gz = b"".join(envarchive.gzip_pieces([data]))
    for position in range(0, len(data), 97):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        try:
            seen = verify_archive(io.BytesIO(bytes(flipped)), KIND_ROOTFS).index
        except FormatError:
            continue
        assert seen.tree_sha256 != digest and seen.digest != index.digest, position
    for position in range(10, len(gz) - 8, 211):
        flipped = bytearray(gz)
        flipped[position] ^= 0x01
        try:
            seen = verify_archive(GunzipReader(io.BytesIO(bytes(flipped))), KIND_ROOTFS).index
        except FormatError:
            continue
        assert seen.tree_sha256 != digest, position


def test_archive_index_and_chunks() -> None:
    hasher = ArchiveHasher()
    data = os.urandom(2 * CHUNK_BYTES + 500)
    for piece in (data[:10], data[10 : CHUNK_BYTES + 7], data[CHUNK_BYTES + 7 :]):
        hasher.update(piece)
    index = hasher.index(KIND_ROOTFS, "a" * 64)
    starts = (0, CHUNK_BYTES, 2 * CHUNK_BYTES)
    assert index.chunks == tuple(
        hashlib.sha256(data[i : i + CHUNK_BYTES]).hexdigest() for i in starts
    )
    assert index.sha256 == hashlib.sha256(data).hexdigest() and index.chunk_size(2) == 500
    assert ArchiveIndex.from_json(index.to_json()) == index
    assert index.digest == hashlib.sha256(index.to_json()).hexdigest()
    value: dict[str, object] = json.loads(index.to_json())
    changes: list[dict[str, object]] = [
        {"size": len(data) + CHUNK_BYTES},
        {"kind": "other"},
        {"chunks": []},
        {"extra": 1},
        {"chunk_bytes": 1 << 20},  # one archive, one index: the chunk size is fixed
    ]
    for change in changes:
        with pytest.raises(FormatError):
            ArchiveIndex.from_json(canonical_json.encode(value | change))
    assert archive_name(KIND_TOOLCHAIN, "b" * 64) == f"toolchain-{'b' * 64}.tar.gz"


def test_gunzip_refuses_corrupt_streams() -> None:
    gz = gzip.compress(os.urandom(5000), mtime=0)
    for bad in (gz[:-3], gz + b"junk", gz[:20] + bytes([gz[20] ^ 0xFF]) + gz[21:]):
        with pytest.raises(FormatError):
            GunzipReader(io.BytesIO(bad)).read()


# ----- sources -----------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own SYNCHRONICITY_CACHE."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SYNCHRONICITY_CACHE", str(path))
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served by http.server on 127.0.0.1, and its URL."""
    directory = tmp_path / "served"
    directory.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield directory, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_tries_each_source_and_keeps_only_a_verified_archive(
    tmp_path: Path, cache: Path, served: tuple[Path, str]
) -> None:
    root = make_tree(tmp_path / "tree")
    data, digest = encode(root, KIND_TOOLCHAIN)
    index = verify_archive(io.BytesIO(data), KIND_TOOLCHAIN).index
    name = archive_name(KIND_TOOLCHAIN, digest)
    empty, bad, good = (tmp_path / d for d in ("empty", "bad", "good"))
    for directory in (empty, bad, good):
        directory.mkdir()
    gz = b"".join(envarchive.gzip_pieces([data]))
    flipped = bytearray(gz)
    flipped[len(gz) // 2] ^= 0x01
    (bad / name).write_bytes(bytes(flipped))
    (good / name).write_bytes(gz)
    dest = archive_path(KIND_TOOLCHAIN, digest)
    sources = (DirectorySource(empty), DirectorySource(bad), DirectorySource(good))
    lines: list[str] = []
    verified = fetch_archive(
        KIND_TOOLCHAIN, digest, index.digest, sources, dest,
        deadline=time.monotonic() + 60, progress=lines.append,
    )  # fmt: skip
    assert verified.index == index and dest.read_bytes() == data
    assert any("gave no good archive" in line for line in lines)
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no partial file left
    dest.unlink()
    (served[0] / name).write_bytes(gz)  # the same layout over HTTP
    fetch_archive(
        KIND_TOOLCHAIN, digest, None, (parse_source(served[1]),), dest,
        deadline=time.monotonic() + 60, progress=_quiet,
    )  # fmt: skip
    assert dest.read_bytes() == data
    assert isinstance(parse_source(served[1]), UrlSource)
    assert isinstance(parse_source(str(good)), DirectorySource)
    with pytest.raises(UsageError):
        UrlSource("file:///etc")
    dest.unlink()
    with pytest.raises(EnvironmentUnavailable) as caught:  # the wrong archive digest pinned
        fetch_archive(
            KIND_TOOLCHAIN, digest, "0" * 64, (DirectorySource(good),), dest,
            deadline=time.monotonic() + 60, progress=_quiet,
        )  # fmt: skip
    assert "archive's digest" in str(caught.value) and not dest.exists()
    with pytest.raises(EnvironmentUnavailable) as caught:
        fetch_archive(
            KIND_TOOLCHAIN, digest, None, (DirectorySource(bad), UrlSource(served[1] + "/no")),
            dest, deadline=time.monotonic() + 60, progress=_quiet,
        )  # fmt: skip
    assert str(bad) in str(caught.value) and "/no" in str(caught.value)
    with pytest.raises(EnvironmentUnavailable, match="in time"):
        fetch_archive(
            KIND_TOOLCHAIN, digest, None, sources, dest,
            deadline=time.monotonic() - 1, progress=_quiet,
        )  # fmt: skip
    assert not dest.exists()


def _small_environment(tmp_path: Path, big: int = 0) -> tuple[EnvironmentSpec, EnvironmentOptions]:
    """A stand-in environment: a small root file system archive in this host's cache and a
    small 'toolchain' directory (digests real, contents not; ``big`` bytes more in it)."""
    rootfs = make_tree(tmp_path / "rootfs")
    index = write_archive(
        envarchive.tree_entries(rootfs, KIND_ROOTFS), KIND_ROOTFS, tmp_path / "rootfs.tar"
    )
    os.replace(tmp_path / "rootfs.tar", archive_path(KIND_ROOTFS, index.tree_sha256))
    toolchain = make_tree(tmp_path / "toolchain")
    (toolchain / "bin" / "rustc").write_bytes(b"not really rustc" + os.urandom(big))
    files = toolchain_digest(toolchain)
    spec = EnvironmentSpec(index.tree_sha256, Toolchain("1.95.0", "a" * 40, files))
    return spec, EnvironmentOptions(toolchain_dir=toolchain)


def test_export_is_deterministic_and_a_directory_of_it_is_a_source(
    tmp_path: Path, cache: Path
) -> None:
    spec, options = _small_environment(tmp_path)
    client = None  # this environment needs no Docker: an archive in the cache, a directory
    first = export_environment(
        spec, tmp_path / "one", client=client, options=options, progress=_quiet
    )
    second = export_environment(
        spec, tmp_path / "two", client=client, options=options, progress=_quiet
    )
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    summary = json.loads((tmp_path / "one" / "environment.json").read_text())
    assert {a["kind"] for a in summary["archives"]} == {KIND_ROOTFS, KIND_TOOLCHAIN}
    dest = tmp_path / "fetched" / "toolchain.tar"
    verified = fetch_archive(
        KIND_TOOLCHAIN, spec.toolchain.files_sha256, None, (DirectorySource(tmp_path / "one"),),
        dest, deadline=time.monotonic() + 60, progress=_quiet,
    )  # fmt: skip
    assert verified.index.tree_sha256 == spec.toolchain.files_sha256


def test_chunked_upload_to_a_blob_store_and_back(tmp_path: Path, cache: Path) -> None:
    spec, options = _small_environment(tmp_path, big=2 * CHUNK_BYTES + 1)
    store: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        name = hashlib.sha256(data).hexdigest()
        store[name] = data
        return name

    def fetch(name: str) -> bytes:
        if name not in store:
            raise OperationalError(f"GET /blob/{name}: the log answered 404")
        return store[name]

    digests = upload_environment(
        spec, put, lambda name: name in store, client=None, options=options, progress=_quiet,
    )  # fmt: skip
    toolchain_index = ArchiveIndex.from_json(store[digests[KIND_TOOLCHAIN]])
    assert len(toolchain_index.chunks) > 2 and all(c in store for c in toolchain_index.chunks)
    source = BlobSource(fetch)
    dest = tmp_path / "from-blobs.tar"
    verified = fetch_archive(
        KIND_TOOLCHAIN, spec.toolchain.files_sha256, digests[KIND_TOOLCHAIN], (source,), dest,
        deadline=time.monotonic() + 60, progress=_quiet,
    )  # fmt: skip
    assert verified.index.digest == digests[KIND_TOOLCHAIN]
    store[toolchain_index.chunks[1]] = b"another chunk"  # a lying store: refused before use
    dest.unlink()
    with pytest.raises(EnvironmentUnavailable, match="chunk 1"):
        fetch_archive(
            KIND_TOOLCHAIN, spec.toolchain.files_sha256, digests[KIND_TOOLCHAIN], (source,),
            dest, deadline=time.monotonic() + 60, progress=_quiet,
        )  # fmt: skip
    assert not dest.exists()
    with pytest.raises(EnvironmentUnavailable, match="no archive digest"):  # an older recipe
        fetch_archive(
            KIND_ROOTFS, spec.rootfs_sha256, None, (source,), dest,
            deadline=time.monotonic() + 60, progress=_quiet,
        )  # fmt: skip


# ----- recipes, provenance, network configs --------------------------------------------------


def test_recipes_pin_archives_and_dist_and_old_recipes_keep_their_bytes() -> None:
    toolchain = Toolchain("1.95.0", "a" * 40, "b" * 64)
    old = Recipe("itoa", "1.0.11", "c" * 64, "version = 3\n", toolchain, "d" * 64)
    old_value = json.loads(old.to_json())
    assert set(old_value["toolchain"]) == {"commit_hash", "files_sha256", "rustc_version"}
    assert set(old_value["build_env"]) == {"rootfs_sha256"}
    assert from_json(old.to_json()).job_id == old.job_id
    dist = (
        DistComponent("https://static.rust-lang.org/dist/x/cargo.tar.xz", "e" * 64),
        DistComponent("https://static.rust-lang.org/dist/x/rustc.tar.xz", "f" * 64),
    )
    new = dataclasses.replace(
        old,
        toolchain=dataclasses.replace(toolchain, archive_sha256="1" * 64, dist=dist),
        rootfs_archive_sha256="2" * 64,
    )
    assert from_json(new.to_json()) == new and new.job_id != old.job_id
    value = json.loads(new.to_json())
    for path, bad in [
        (("toolchain", "dist"), []),
        (("toolchain", "dist"), list(reversed(value["toolchain"]["dist"]))),
        (("toolchain", "dist"), [{"url": "http://insecure/x", "sha256": "e" * 64}]),
        (("toolchain", "archive_sha256"), None),
        (("build_env", "rootfs_archive_sha256"), "XYZ"),
        (("build_env", "other"), "x"),
    ]:
        changed = json.loads(new.to_json())
        changed[path[0]][path[1]] = bad
        with pytest.raises(FormatError):
            from_json(canonical_json.encode(changed))


MANIFEST = """manifest-version = "2"
date = "2026-04-16"
[pkg.rustc.target.x86_64-unknown-linux-gnu]
available = true
url = "https://static.rust-lang.org/dist/2026-04-16/rustc.tar.gz"
hash = "{}"
xz_url = "https://static.rust-lang.org/dist/2026-04-16/rustc.tar.xz"
xz_hash = "{}"
[pkg.rust-src.target."*"]
available = true
url = "https://static.rust-lang.org/dist/2026-04-16/rust-src.tar.gz"
hash = "{}"
""".format("1" * 64, "2" * 64, "3" * 64)
CONFIG = """config_version = "1"
[[components]]
pkg = "rustc"
target = "x86_64-unknown-linux-gnu"
[[components]]
pkg = "rust-src"
target = "*"
"""


def test_dist_components_come_from_rustups_files() -> None:
    assert dist_components(CONFIG, MANIFEST) == (
        DistComponent("https://static.rust-lang.org/dist/2026-04-16/rust-src.tar.gz", "3" * 64),
        DistComponent("https://static.rust-lang.org/dist/2026-04-16/rustc.tar.xz", "2" * 64),
    )
    with pytest.raises(FormatError):
        dist_components(CONFIG.replace("rust-src", "rust-analysis"), MANIFEST)


def test_network_config_names_environment_sources_strictly(tmp_path: Path) -> None:
    from synchronicity.cmd_network import init_network

    init_network(tmp_path, witnesses=4, ports=[9000, 9001, 9002, 9003, 9004])
    config = json.loads((tmp_path / "network.json").read_text())
    assert "environment_sources" not in config
    assert NetworkConfig.parse(json.dumps(config).encode()).environment_sources == ()
    urls = ["https://envs.example/one", "http://10.0.0.2:8000/"]
    parsed = NetworkConfig.parse(json.dumps(config | {"environment_sources": urls}).encode())
    assert parsed.environment_sources == tuple(urls)
    assert NetworkConfig.parse(parsed.to_json()) == parsed
    for bad in (["/a/dir"], ["ftp://x"], [urls[0], urls[0]], "https://x", [1], [""]):
        with pytest.raises(FormatError):
            NetworkConfig.parse(json.dumps(config | {"environment_sources": bad}).encode())


def test_an_archive_read_in_pieces_is_the_same(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    data, _ = encode(root, KIND_ROOTFS)

    class Trickle:
        def __init__(self) -> None:
            self.stream = io.BytesIO(data)

        def read(self, size: int = -1, /) -> bytes:
            return self.stream.read(min(size, 7) if size >= 0 else 7)

    paths = [entry.path for entry, data in read_archive(io.BytesIO(data)) if not list(data)]
    assert "lib" in paths  # entries with their data read in order
    assert (
        verify_archive(Trickle(), KIND_ROOTFS).index
        == verify_archive(io.BytesIO(data), KIND_ROOTFS).index
    )
