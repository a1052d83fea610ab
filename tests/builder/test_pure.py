"""Pure builder logic: Cargo.lock parsing, index entries, manifests, artifact kinds, diff reports,
tree digests, the sandbox contract, and safe tar extraction (on temporary directories)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder.archive import ExtractLimits, safe_extract
from builder.debian import (
    BUILD_PACKAGES,
    DIFF_PACKAGES,
    installed_packages,
    lock_differences,
    lock_text,
    parse_lock,
)
from builder.diff import DiffLimits, FileFacts, builtin_report, diff_outputs, diffoscope_command
from builder.fstree import tree_digest
from builder.image import lock_path
from builder.lockfile import dependency_of, parse_cargo_lock, root_package
from builder.manifest import Artifact, Manifest, artifact_kind, collect_manifest, manifest_from_json
from builder.sandbox import SandboxJob, cargo_arguments, sandbox_command, sandbox_environment
from builder.sources import cargo_config_text, index_cksum_from_entries, index_path
from builder.standins import activating_features, requested_features, stub_manifest, tree_line
from builder.toolchain import parse_rustc_version
from logserver.core.errors import FormatError, UsageError

REGISTRY = "registry+https://github.com/rust-lang/crates.io-index"
SUM = "49f1f14873335454500d59611f1cf4a4b0f786f9ac11f4312a78e4cf2566695b"

LOCK_V4 = f"""# generated
version = 4

[[package]]
name = "hello"
version = "0.1.0"
dependencies = ["itoa"]

[[package]]
name = "itoa"
version = "1.0.11"
source = "{REGISTRY}"
checksum = "{SUM}"
"""

LOCK_V1 = f"""[[package]]
name = "hello"
version = "0.1.0"
dependencies = [
 "itoa 1.0.11 ({REGISTRY})",
]

[[package]]
name = "itoa"
version = "1.0.11"
source = "{REGISTRY}"

[metadata]
"checksum itoa 1.0.11 ({REGISTRY})" = "{SUM}"
"""


@pytest.mark.parametrize("text", [LOCK_V4, LOCK_V4.replace("version = 4", "version = 3"), LOCK_V1])
def test_lockfile_versions(text: str) -> None:
    packages = parse_cargo_lock(text)
    assert [(p.name, p.version, p.from_crates_io, p.checksum) for p in packages] == [
        ("hello", "0.1.0", False, None),
        ("itoa", "1.0.11", True, SUM),
    ]
    assert root_package(packages, "hello", "0.1.0").name == "hello"
    with pytest.raises(FormatError):
        root_package(packages, "itoa", "1.0.11")


@pytest.mark.parametrize(
    "text",
    [
        "this is not toml [",
        "version = 5\n[[package]]\nname='a'\nversion='1.0.0'\n",
        "version = 4\n",
        "version = 4\nextra = 1\n[[package]]\nname='a'\nversion='1.0.0'\n",
        LOCK_V4.replace(REGISTRY, "git+https://example.com/x#abc"),
        LOCK_V4.replace(REGISTRY, "registry+https://example.com/other-index"),
        LOCK_V4.replace(f'checksum = "{SUM}"', ""),
        LOCK_V4.replace(SUM, SUM.upper()),
        LOCK_V4.replace('name = "itoa"', 'name = "it oa"'),
        LOCK_V4.replace('"1.0.11"', '"1.0"'),
        LOCK_V4 + f'\n[[package]]\nname = "itoa"\nversion = "1.0.11"\nsource = "{REGISTRY}"\n'
        f'checksum = "{SUM}"\n',
        LOCK_V4 + '\n[metadata]\n"checksum a" = "b"\n',
        LOCK_V4.replace(
            'dependencies = ["itoa"]', 'dependencies = ["itoa"]\nchecksum = "' + SUM + '"'
        ),
        LOCK_V4.replace('dependencies = ["itoa"]', "patch = 1"),
        LOCK_V1.replace('" = "', '" = "0'),
    ],
)
def test_lockfile_rejects(text: str) -> None:
    with pytest.raises(FormatError):
        parse_cargo_lock(text)


@given(st.text(max_size=300))
def test_lockfile_parser_only_raises_format_errors(text: str) -> None:
    with contextlib.suppress(FormatError):
        parse_cargo_lock(text)


def test_index_paths_and_entries() -> None:
    assert [index_path(n) for n in ("a", "ab", "abc", "itoa", "Serde")] == [
        "1/a",
        "2/ab",
        "3/a/abc",
        "it/oa/itoa",
        "se/rd/serde",
    ]
    lines = "\n".join(
        json.dumps({"name": "itoa", "vers": v, "cksum": c})
        for v, c in (("1.0.10", "0" * 64), ("1.0.11", SUM))
    )
    assert index_cksum_from_entries(lines, "itoa", "1.0.11") == SUM
    with pytest.raises(UsageError):
        index_cksum_from_entries(lines, "itoa", "9.9.9")
    with pytest.raises(FormatError):
        index_cksum_from_entries("{not json", "itoa", "1.0.11")
    assert 'directory = "/build/deps/vendor"' in cargo_config_text()


def test_artifact_kinds() -> None:
    assert artifact_kind("libitoa.rlib", False) == "rlib"
    assert artifact_kind("libfoo.a", False) == "staticlib"
    assert artifact_kind("libfoo.so", True) == "cdylib"
    assert artifact_kind("hello-bin", True) == "bin"
    assert artifact_kind("hello-bin", False) is None
    assert artifact_kind("hello-bin.d", False) is None
    assert artifact_kind("libitoa.d", False) is None
    assert artifact_kind(".cargo-lock", False) is None
    assert artifact_kind("libitoa.rmeta", False) is None


def test_manifest_encoding_and_digest() -> None:
    manifest = Manifest.of([Artifact("zeta", 2, "b" * 64), Artifact("libz.rlib", 1, "a" * 64)])
    expected = (
        b'{"artifacts":[{"path":"libz.rlib","sha256":"' + b"a" * 64 + b'","size":1},'
        b'{"path":"zeta","sha256":"' + b"b" * 64 + b'","size":2}],'
        b'"schema":"synchronicity/manifest/v1"}'
    )
    assert manifest.to_json() == expected
    assert manifest.output_digest == hashlib.sha256(expected).hexdigest()
    assert manifest_from_json(expected) == manifest
    assert manifest.find("b" * 64) == Artifact("zeta", 2, "b" * 64)
    assert manifest.find("c" * 64) is None
    assert Manifest.of([]).output_digest != manifest.output_digest


@pytest.mark.parametrize(
    "data",
    [
        b'{"artifacts":[],"schema":"synchronicity/manifest/v2"}',
        b'{"artifacts":[],"extra":1,"schema":"synchronicity/manifest/v1"}',
        b'{"artifacts":[{"path":"b","sha256":"'
        + b"a" * 64
        + b'","size":1},{"path":"a","sha256":"'
        + b"a" * 64
        + b'","size":1}],"schema":"synchronicity/manifest/v1"}',
        b'{"artifacts":[{"path":"../x","sha256":"' + b"a" * 64 + b'","size":1}],'
        b'"schema":"synchronicity/manifest/v1"}',
        b'{"artifacts":[{"path":"x","sha256":"' + b"a" * 64 + b'","size":-1}],'
        b'"schema":"synchronicity/manifest/v1"}',
        b'{"artifacts":[{"path":"x","sha256":"' + b"a" * 64 + b'","size":true}],'
        b'"schema":"synchronicity/manifest/v1"}',
        b'{"artifacts":[{"path":"x","sha256":"zz","size":1}],"schema":"synchronicity/manifest/v1"}',
        b'{"schema":"synchronicity/manifest/v1","artifacts":[]}',
    ],
)
def test_manifest_rejects(data: bytes) -> None:
    with pytest.raises(FormatError):
        manifest_from_json(data)


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True),
        st.tuples(st.integers(0, 2**40), st.binary(min_size=32, max_size=32)),
        max_size=8,
    )
)
def test_manifest_round_trip_fuzz(files: dict[str, tuple[int, bytes]]) -> None:
    manifest = Manifest.of([Artifact(p, size, digest.hex()) for p, (size, digest) in files.items()])
    assert manifest_from_json(manifest.to_json()) == manifest


def test_collect_manifest(tmp_path: Path) -> None:
    (tmp_path / "libhello.rlib").write_bytes(b"rlib")
    (tmp_path / "hello").write_bytes(b"elf")
    (tmp_path / "hello").chmod(0o755)
    (tmp_path / "hello.d").write_bytes(b"deps")
    (tmp_path / ".cargo-lock").write_bytes(b"")
    (tmp_path / "deps").mkdir()
    manifest = collect_manifest(tmp_path)
    assert [a.path for a in manifest.artifacts] == ["hello", "libhello.rlib"]
    assert manifest.artifacts[0].sha256 == hashlib.sha256(b"elf").hexdigest()
    assert [a.path for a in collect_manifest(tmp_path, ("rlib",)).artifacts] == ["libhello.rlib"]


def test_builtin_diff_report() -> None:
    same = FileFacts(3, "a" * 64)
    report = builtin_report(
        {"x": same, "y": FileFacts(3, "b" * 64), "only-left": same},
        {"x": same, "y": FileFacts(4, "c" * 64), "only-right": same},
        {"y": 2},
    ).decode()
    assert "same: x" in report
    assert "DIFFERENT: y" in report
    assert "first differing byte at offset 2" in report
    assert "only in left: only-left" in report
    assert "only in right: only-right" in report
    assert "3 of 4 files differ" in report


def test_diff_outputs_builtin(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "bin").write_bytes(b"hello world")
    (tmp_path / "b" / "bin").write_bytes(b"hello World")
    report = diff_outputs(tmp_path / "a", tmp_path / "b", use_diffoscope=False).decode()
    assert "DIFFERENT: bin" in report
    assert "first differing byte at offset 6" in report


def test_tree_digest_ignores_mtime_but_not_content_or_mode(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x")
    (tmp_path / "l").symlink_to("d/f")
    first = tree_digest(tmp_path)

    os.utime(tmp_path / "d" / "f", (1, 1))
    assert tree_digest(tmp_path) == first
    (tmp_path / "d" / "f").chmod(0o600)
    assert tree_digest(tmp_path) != first
    (tmp_path / "d" / "f").chmod(0o644)
    (tmp_path / "d" / "f").write_bytes(b"y")
    assert tree_digest(tmp_path) != first


def test_rustc_version_parsing() -> None:
    text = (
        "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\ncommit-hash: "
        + "5" * 40
        + ("\nrelease: 1.95.0\nhost: x86_64-unknown-linux-gnu\n")
    )
    assert parse_rustc_version(text) == ("1.95.0", "5" * 40)
    with pytest.raises(FormatError):
        parse_rustc_version(text.replace("5" * 40, "unknown"))


def test_sandbox_contract() -> None:
    job = SandboxJob(
        job_id="j" * 64,
        image="synchronicity-build:0123456789abcdef",
        src_dir=Path("/host/src"),
        deps_dir=Path("/host/deps"),
        toolchain_dir=Path("/host/rust"),
        crate_name="itoa",
        crate_version="1.0.11",
        target="x86_64-unknown-linux-gnu",
        features=("a", "b"),
        default_features=False,
    )
    env = sandbox_environment(job)
    assert env["SOURCE_DATE_EPOCH"] == "315532800"
    assert env["TZ"] == "UTC" and env["LC_ALL"] == "C.UTF-8" and env["CARGO_INCREMENTAL"] == "0"
    assert "--remap-path-prefix=/build/src=/rust/src/itoa-1.0.11" in env["RUSTFLAGS"].split()
    arguments = cargo_arguments(job)
    assert arguments[:4] == ["cargo", "build", "--locked", "--offline"]
    assert arguments[-3:] == ["--no-default-features", "--features", "a,b"]
    script = sandbox_command(job)[2]
    assert "umask 022" in script and "1>&2" in script
    assert "/build/target/x86_64-unknown-linux-gnu/release" in script


def _tar(members: list[tarfile.TarInfo], payload: bytes = b"data") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for member in members:
            if member.isreg():
                member.size = len(payload)
                archive.addfile(member, io.BytesIO(payload))
            else:
                archive.addfile(member)
    buffer.seek(0)
    return buffer


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o4755 if name.endswith("suid") else 0o644
    return info


def test_safe_extract_accepts_a_normal_crate(tmp_path: Path) -> None:
    archive = _tar(
        [
            _member("c-1.0.0/", tarfile.DIRTYPE),
            _member("c-1.0.0/src/lib.rs"),
            _member("c-1.0.0/suid"),
        ]
    )
    files = safe_extract(archive, tmp_path, what="t", strip_prefix="c-1.0.0")
    assert sorted(str(f) for f in files) == ["src/lib.rs", "suid"]
    assert (tmp_path / "src" / "lib.rs").read_bytes() == b"data"
    assert (tmp_path / "suid").stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize(
    "members",
    [
        [_member("/etc/passwd")],
        [_member("c-1.0.0/../../escape")],
        [_member("c-1.0.0/a/../../b")],
        [_member("other-1.0.0/file")],
        [_member("c-1.0.0/./x")],
        [_member("c-1.0.0//x")],
        [_member("c-1.0.0/link", tarfile.SYMTYPE, "/etc/passwd")],
        [_member("c-1.0.0/link", tarfile.SYMTYPE, "../../x")],
        [_member("c-1.0.0/hard", tarfile.LNKTYPE, "c-1.0.0/x")],
        [_member("c-1.0.0/dev", tarfile.CHRTYPE)],
        [_member("c-1.0.0/fifo", tarfile.FIFOTYPE)],
        [_member("c-1.0.0/x"), _member("c-1.0.0/x")],
        [_member("c-1.0.0")],
        [_member("c-1.0.0/a\\b")],
    ],
)
def test_safe_extract_rejects(tmp_path: Path, members: list[tarfile.TarInfo]) -> None:
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(FormatError):
        safe_extract(_tar(members), destination, what="t", strip_prefix="c-1.0.0")
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "b").exists()


def test_safe_extract_size_bounds(tmp_path: Path) -> None:
    members = [_member(f"c-1.0.0/f{i}") for i in range(5)]
    with pytest.raises(FormatError, match="members"):
        safe_extract(
            _tar(members),
            tmp_path,
            what="t",
            strip_prefix="c-1.0.0",
            limits=ExtractLimits(max_members=3),
        )
    with pytest.raises(FormatError, match="unpacked size"):
        safe_extract(
            _tar(members),
            tmp_path / "x",
            what="t",
            strip_prefix="c-1.0.0",
            limits=ExtractLimits(max_total_bytes=10),
        )
    with pytest.raises(FormatError, match="too large"):
        safe_extract(
            _tar(members, b"x" * 100),
            tmp_path / "y",
            what="t",
            strip_prefix="c-1.0.0",
            limits=ExtractLimits(max_file_bytes=10),
        )
    with pytest.raises(FormatError, match="not a valid tar"):
        safe_extract(io.BytesIO(b"garbage" * 100), tmp_path, what="t", compressed=True)


def test_safe_extract_does_not_follow_existing_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "src").symlink_to(outside)
    with pytest.raises(FormatError):
        safe_extract(
            _tar([_member("c-1.0.0/src/lib.rs")]), destination, what="t", strip_prefix="c-1.0.0"
        )
    assert list(outside.iterdir()) == []


DPKG_STATUS = """Package: zlib1g
Status: install ok installed
Version: 1:1.2.13.dfsg-1
Description: compression library
 a continuation line: Version: 9

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: adduser
Status: install ok installed
Version: 3.134
"""


def test_image_locks_read_and_compare_package_sets() -> None:
    installed = installed_packages(DPKG_STATUS)
    assert installed == {"adduser": "3.134", "zlib1g": "1:1.2.13.dfsg-1"}
    text = lock_text(
        "synchronicity-build",
        installed,
        suite="bookworm",
        variant="minbase",
        architecture="amd64",
        packages=("zlib1g",),
    )
    assert text.endswith("\nadduser=3.134\nzlib1g=1:1.2.13.dfsg-1\n")
    assert parse_lock(text) == installed
    assert lock_differences(installed, {"adduser": "3.135", "extra": "1"}) == [
        "adduser: locked 3.134, installed 3.135",
        "extra: locked (absent), installed 1",
        "zlib1g: locked 1:1.2.13.dfsg-1, installed (absent)",
    ]
    for bad in ("b=1\na=1\n", "a=1\na=2\n", "a 1\n", "A=1\n"):
        with pytest.raises(FormatError):
            parse_lock(bad)


def test_the_committed_image_locks_pin_every_requested_package() -> None:
    for name, packages in (("build", BUILD_PACKAGES), ("diff", DIFF_PACKAGES)):
        pins = parse_lock(lock_path(name).read_text())
        assert set(packages) <= set(pins), name
    build = parse_lock(lock_path("build").read_text())
    for needed in ("pkg-config", "libssl-dev", "zlib1g-dev", "libclang-dev", "protobuf-compiler"):
        assert needed in build


def test_diffoscope_command_is_bounded() -> None:
    command = diffoscope_command(DiffLimits(report_bytes=1000, wall_seconds=60))
    assert command[0] == "diffoscope"
    assert "--max-text-report-size=1000" in command
    assert "--timeout=30" in command
    assert command[-2:] == ["/diff/left", "/diff/right"]


LOCK_WITH_DEV = f"""version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["itoa", "toml 0.8.2", "toml 0.9.0", "trybuild"]

[[package]]
name = "itoa"
version = "1.0.11"
source = "{REGISTRY}"
checksum = "{SUM}"

[[package]]
name = "toml"
version = "0.8.2"
source = "{REGISTRY}"
checksum = "{"1" * 64}"

[[package]]
name = "toml"
version = "0.9.0"
source = "{REGISTRY}"
checksum = "{"2" * 64}"
dependencies = ["toml_parser"]

[[package]]
name = "toml_parser"
version = "1.0.0"
source = "{REGISTRY}"
checksum = "{"3" * 64}"

[[package]]
name = "trybuild"
version = "1.0.125"
source = "{REGISTRY}"
checksum = "{"4" * 64}"
dependencies = ["itoa", "toml 0.8.2", "toml 0.9.0"]
"""


def test_lockfile_dependency_edges() -> None:
    packages = parse_cargo_lock(LOCK_WITH_DEV)
    app = root_package(packages, "app", "0.1.0")
    assert dependency_of(packages, "itoa").spec == "itoa@1.0.11"
    assert dependency_of(packages, "toml 0.9.0").spec == "toml@0.9.0"
    assert dependency_of(packages, f"itoa 1.0.11 ({REGISTRY})").spec == "itoa@1.0.11"
    assert [dependency_of(packages, e).spec for e in app.dependencies][-1] == "trybuild@1.0.125"
    for ambiguous_or_absent in ("toml", "serde", "itoa 2.0.0", "bad name!"):
        with pytest.raises(FormatError):
            dependency_of(packages, ambiguous_or_absent)


def test_stand_in_manifest_reproduces_the_locked_dependencies() -> None:
    packages = parse_cargo_lock(LOCK_WITH_DEV)
    trybuild = dependency_of(packages, "trybuild")
    root_manifest = {
        "dependencies": {"itoa": "1"},
        "dev-dependencies": {
            "trybuild": {"version": "1.0.108", "features": ["diff", "not a feature!"]},
        },
        "target": {"cfg(unix)": {"dev-dependencies": {"tb": {"package": "trybuild"}}}},
        "features": {"x": ["tb?/extra"]},
    }
    asked = requested_features(root_manifest, "trybuild")
    assert asked == {"diff", "extra"}
    toml_manifest = {
        "dependencies": {
            "toml_parser": {"version": "1", "optional": True},
            "serde": {"optional": True},
        },
        "features": {"parse": ["dep:toml_parser"], "default": ["parse", "display"], "display": []},
    }
    toml_09 = dependency_of(packages, "toml 0.9.0")
    assert activating_features(toml_manifest, {"toml_parser"}) == {"parse"}
    assert activating_features({"dependencies": {"serde": {"optional": True}}}, {"serde"}) == {
        "serde"
    }
    assert activating_features(toml_manifest, set()) == set()
    text = stub_manifest(trybuild, packages, asked, {toml_09: {"parse"}})
    stub = tomllib.loads(text)
    assert stub["package"] == {"name": "trybuild", "version": "1.0.125", "edition": "2015"}
    assert stub["features"] == {"diff": [], "extra": []}
    assert stub["dependencies"] == {
        "itoa": {
            "package": "itoa",
            "version": "=1.0.11",
            "default-features": False,
            "features": [],
        },
        "toml-0_8_2": {
            "package": "toml",
            "version": "=0.8.2",
            "default-features": False,
            "features": [],
        },
        "toml-0_9_0": {
            "package": "toml",
            "version": "=0.9.0",
            "default-features": False,
            "features": ["parse"],
        },
    }
    assert tree_line(trybuild) == "trybuild v1.0.125"
