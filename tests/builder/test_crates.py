"""Real crates of the coverage run (issue 12) build in the sandbox, as a user would ask for them.

Each build is a real ``cargo build --release`` in the Docker sandbox from crates.io. Some tests
see crates.io through ``GappyMirror``, which reproduces what a cache between a builder and the
registry did in that run: a copy of the sparse index older than the one the requester saw, and
``.crate`` downloads that fail. Needs a running Docker engine (fails, never skips, without one)
and crates.io.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from builder.build import build_crate, resolve_recipe
from builder.container import LABEL_BUILD
from builder.image import docker_client
from builder.recipe import Features
from builder.sandbox import EXIT_STAND_IN_COMPILED, SandboxLimits
from builder.sources import CrateStore, index_path
from logserver.core.errors import OperationalError, VerificationError
from tests.support.builder_helpers import pack_fixture
from tests.support.procs import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]

LIMITS = SandboxLimits(memory_bytes=3 << 30, cpus=2, pids=1024, wall_seconds=900)


class GappyMirror(CrateStore):
    """crates.io behind a stale cache: some index lines missing, some downloads failing."""

    def __init__(
        self,
        *,
        stale: dict[str, set[str]] | None = None,
        gone: set[str] = frozenset(),  # type: ignore[assignment]
        cksums: dict[str, str] | None = None,
    ) -> None:
        super().__init__()  # the machine's crate cache: downloads are shared between tests
        self.stale = stale or {}
        self.gone = set(gone)
        self.cksums = cksums or {}

    def index_file(self, name: str) -> str:
        lines = []
        for line in super().index_file(name).splitlines():
            entry = json.loads(line)
            if entry["vers"] in self.stale.get(name, ()):
                continue
            entry["cksum"] = self.cksums.get(f"{name}@{entry['vers']}", entry["cksum"])
            lines.append(json.dumps(entry))
        return "\n".join(lines) + "\n"

    def fetch(self, name: str, version: str, sha256: str, pinned_by: str = "expected") -> bytes:
        if name in self.gone:
            raise OperationalError(
                f"cannot fetch https://static.crates.io/crates/{name}/{name}-{version}.crate: "
                "HTTP Error 404: Not Found"
            )
        return super().fetch(name, version, sha256, pinned_by)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    connection = docker_client()
    yield connection
    connection.close()


def _quiet(line: str) -> None:
    del line


def _no_build_containers(client: docker.DockerClient) -> bool:
    return not client.containers.list(all=True, filters={"label": LABEL_BUILD})


def test_mirror_double_sees_a_stale_index() -> None:
    mirror = GappyMirror(stale={"anyhow": {"1.0.105"}})
    assert index_path("anyhow") == "an/yh/anyhow"
    versions = [json.loads(line)["vers"] for line in mirror.index_file("anyhow").splitlines()]
    assert "1.0.104" in versions and "1.0.105" not in versions


def test_anyhow_builds_from_a_stale_index_without_its_dev_dependency(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    recipe = resolve_recipe("anyhow@1.0.105", client=client, progress=_quiet)
    assert 'name = "trybuild"\nversion = "1.0.125"' in recipe.cargo_lock  # a dev-dependency
    # The builder's view: the index predates anyhow 1.0.105 and trybuild 1.0.125, and
    # trybuild's .crate cannot be downloaded. Only the lockfile's checksums decide.
    mirror = GappyMirror(stale={"anyhow": {"1.0.105"}, "trybuild": {"1.0.125"}}, gone={"trybuild"})
    lines: list[str] = []
    result = build_crate(
        recipe, tmp_path / "out", store=mirror, limits=LIMITS, client=client, progress=lines.append
    )
    assert result.ok, result.detail
    assert result.manifest is not None
    assert [a.path for a in result.manifest.artifacts] == ["libanyhow.rlib"]
    assert any("trybuild@1.0.125 not fetched" in line for line in lines)
    log = result.log.decode()
    assert "stand-ins for locked packages that could not be fetched:\ntrybuild v1.0.125" in log
    assert "Compiling anyhow v1.0.105" in log
    assert _no_build_containers(client)

    # A copy of the index that contradicts the recipe is still evidence, never ignored.
    liar = GappyMirror(cksums={"anyhow@1.0.105": "0" * 64})
    with pytest.raises(VerificationError, match=r"anyhow@1\.0\.105: crates.io index cksum 0{64}"):
        build_crate(recipe, tmp_path / "liar", store=liar, client=client, progress=_quiet)


def test_uuid_builds_without_an_optional_dependency_it_does_not_compile(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    # toml_edit is locked (below uuid's optional borsh-derive) but a build with uuid's default
    # features does not compile it. (uuid's docs.rs selection, with borsh, would.)
    recipe = resolve_recipe("uuid@1.29.3", features=Features(), client=client, progress=_quiet)
    mirror = GappyMirror(gone={"toml_edit", "trybuild"})
    result = build_crate(
        recipe, tmp_path / "out", store=mirror, limits=LIMITS, client=client, progress=_quiet
    )
    assert result.ok, result.detail
    assert result.manifest is not None
    assert [a.path for a in result.manifest.artifacts] == ["libuuid.rlib"]
    assert "toml_edit v0.25.19+spec-1.1.0" in result.log.decode()


def test_clap_builds(client: docker.DockerClient, tmp_path: Path) -> None:
    result = build_crate(
        "clap@4.6.9", tmp_path / "out", limits=LIMITS, client=client, progress=_quiet
    )
    assert result.ok, result.detail
    assert result.manifest is not None
    assert [a.path for a in result.manifest.artifacts] == ["libclap.rlib", "stdio-fixture"]


def test_a_build_that_needs_a_missing_package_fails_saying_which(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    crate = pack_fixture("hello-bin", tmp_path)
    recipe = resolve_recipe(crate, client=client, progress=_quiet)
    result = build_crate(
        recipe,
        tmp_path / "out",
        store=GappyMirror(gone={"itoa"}),
        limits=LIMITS,
        client=client,
        progress=_quiet,
    )
    assert not result.ok
    assert result.reason == "nonzero-exit"
    assert f"exited with status {EXIT_STAND_IN_COMPILED}" in result.detail
    assert "compiles locked packages that could not be fetched:\nitoa v1.0.11" in result.detail
    assert "Compiling" not in result.log.decode()


@pytest.mark.parametrize("spec", ["openssl-sys@0.9.118", "libdbus-sys@0.2.7"])
def test_sys_crates_find_their_system_libraries(
    client: docker.DockerClient, tmp_path: Path, spec: str
) -> None:
    result = build_crate(spec, tmp_path / "out", limits=LIMITS, client=client, progress=_quiet)
    assert result.ok, result.detail
    assert result.manifest is not None
    name = spec.split("@", maxsplit=1)[0].replace("-", "_")
    assert [a.path for a in result.manifest.artifacts] == [f"lib{name}.rlib"]


def test_build_by_name_takes_the_newest_release(tmp_path: Path) -> None:
    index = [json.loads(line) for line in CrateStore().index_file("itoa").splitlines()]
    releases = [e["vers"] for e in index if not e["yanked"] and "-" not in e["vers"]]
    newest = max(releases, key=lambda v: tuple(int(part) for part in v.split(".")))
    done = run_cli("build", "itoa", "--out", str(tmp_path / "out"), timeout=900)
    assert done.returncode == 0, done.stderr
    recipe = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert (recipe["name"], recipe["version"]) == ("itoa", newest)
    assert f"itoa: newest version not yanked is {newest}" in done.stderr
    assert "default features (the crate's defaults)" in done.stderr


def test_a_feature_asked_on_the_command_line_is_built(tmp_path: Path) -> None:
    # buildtime_bindgen: bindgen with libclang generates the bindings from sqlite3.h, found
    # with pkg-config; none of these were in the build image before.
    done = run_cli(
        "build",
        "libsqlite3-sys@0.30.1",
        "--features",
        "buildtime_bindgen",
        "--out",
        str(tmp_path / "out"),
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    recipe = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert recipe["features"] == ["buildtime_bindgen"] and recipe["default_features"] is True
    assert "all_features" not in recipe
    log = (tmp_path / "out" / "build.log").read_text()
    assert "Compiling bindgen" in log and "Compiling libsqlite3-sys v0.30.1" in log


def test_docs_rs_features_are_the_default(client: docker.DockerClient) -> None:
    lines: list[str] = []
    recipe = resolve_recipe("clap@4.6.9", client=client, progress=lines.append)
    assert recipe.features == ("unstable-doc",) and recipe.default_features
    assert "clap@4.6.9: features unstable-doc (as its [package.metadata.docs.rs] asks)" in lines


def test_docs_rs_features_that_need_nightly_are_left_out(tmp_path: Path) -> None:
    # serde asks docs.rs for "unstable", which is #![feature(never_type)]: nightly only. The
    # recipe takes what a stable toolchain can build of docs.rs's selection, and says so.
    done = run_cli("build", "serde@1.0.229", "--out", str(tmp_path / "a"), timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    recipe = json.loads((tmp_path / "a" / "recipe.json").read_text())
    assert recipe["features"] == ["derive", "rc"]
    assert "without unstable: nightly only" in done.stderr
