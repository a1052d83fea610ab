"""The one-call builder API: make a recipe, build it, get the output manifest and digest.

``resolve_recipe("itoa@1.0.11")`` (or ``"itoa"`` for the newest version, or a path to a local
``.crate``) pins a crate, its ``Cargo.lock``, the features to build (by default what the crate
asks docs.rs to build, else its defaults), this machine's toolchain and build image into a
Recipe.
``build_crate(recipe, out_dir)`` verifies and vendors the sources, obtains the build
environment the recipe pins by digest (:mod:`builder.environment`: from this host's image and
toolchain, its cache, or the ``environment`` sources), runs the sandbox with the inputs in
volumes and returns a BuildResult;
``out_dir`` receives ``recipe.json``, ``build.log``, ``manifest.json`` and ``artifacts/``.
The CLI (``synchronicity build``) and the witness's build worker call these two functions.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import tempfile
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from builder.archive import safe_extract
from builder.choice import docs_rs_features, nightly_features
from builder.container import remove_leftover_containers
from builder.environment import (
    EnvironmentOptions,
    EnvironmentSpec,
    ensure_environment,
    environment_pins,
)
from builder.image import (
    ImageConfig,
    Progress,
    docker_client,
    ensure_build_image,
    stderr_progress,
)
from builder.manifest import Manifest, collect_manifest
from builder.recipe import (
    ARTIFACT_KINDS,
    DEFAULT_TARGET,
    SOURCE_CRATES_IO,
    SOURCE_LOCAL,
    Features,
    Recipe,
)
from builder.sandbox import SRC_DIR, SandboxJob, SandboxLimits, run_in_sandbox
from builder.sources import SANDBOX_DEPS_DIR, CrateStore, prepare_sources
from builder.toolchain import find_toolchain_dir
from builder.variation import Variation, evidence
from builder.volumes import input_volumes, remove_leftover_volumes
from logserver.core.errors import FormatError, OperationalError, UsageError, VerificationError

DEFAULT_TOOLCHAIN = "1.95.0"
_cleanup_lock = threading.Lock()
_cleanup_state = {"done": False}


@dataclass
class BuildResult:
    """The outcome of one build. ``output_digest`` and ``manifest`` are set only when ok."""

    recipe: Recipe
    ok: bool
    reason: str | None
    detail: str
    manifest: Manifest | None
    log: bytes
    out_dir: Path
    seconds: float
    variation: Variation = field(default_factory=Variation)  # the host conditions it had

    @property
    def job_id(self) -> str:
        return self.recipe.job_id

    @property
    def output_digest(self) -> str | None:
        return self.manifest.output_digest if self.manifest is not None else None


@dataclass(frozen=True)
class _CrateFacts:
    """What resolving needs from a ``.crate``: identity, shipped lockfile, manifest."""

    name: str
    version: str
    lock: str | None
    manifest: dict[str, Any]
    nightly: frozenset[str] = frozenset()  # features that need a nightly compiler


def _crate_facts(data: bytes, what: str) -> _CrateFacts:
    """Read name, version, ``Cargo.lock`` (or None) and ``Cargo.toml`` from a ``.crate``."""
    with tempfile.TemporaryDirectory(prefix="synchronicity-crate-") as tmp:
        safe_extract(io.BytesIO(data), Path(tmp), what=what, compressed=True)
        tops = list(Path(tmp).iterdir())
        if len(tops) != 1 or not tops[0].is_dir():
            raise FormatError(what, "must hold exactly one top-level directory")
        manifest_path = tops[0] / "Cargo.toml"
        try:
            manifest = tomllib.loads(manifest_path.read_text())
            package = manifest["package"]
            name, version = str(package["name"]), str(package["version"])
        except (OSError, KeyError, TypeError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise FormatError(what, f"no usable [package] in Cargo.toml: {exc}") from exc
        if tops[0].name != f"{name}-{version}":
            raise FormatError(what, f"top directory {tops[0].name} is not {name}-{version}")
        lock_path = tops[0] / "Cargo.lock"
        lock = lock_path.read_text() if lock_path.is_file() else None
        return _CrateFacts(name, version, lock, manifest, nightly_features(_rust_sources(tops[0])))


def _rust_sources(top: Path, limit: int = 256, max_bytes: int = 1 << 20) -> list[str]:
    """The text of the crate's first ``.rs`` files under ``src`` (bounded), for feature scans."""
    out: list[str] = []
    for path in sorted((top / "src").rglob("*.rs"))[:limit]:
        if path.is_file() and not path.is_symlink() and path.stat().st_size <= max_bytes:
            out.append(path.read_text(errors="replace"))
    return out


def generate_lockfile(data: bytes, name: str, version: str, toolchain_dir: Path) -> str:
    """Resolve a Cargo.lock for a crate that ships none (host cargo, network, no sandbox)."""
    with tempfile.TemporaryDirectory(prefix="synchronicity-lock-") as tmp:
        safe_extract(io.BytesIO(data), Path(tmp), what=f"crate {name}@{version}", compressed=True)
        manifest_path = Path(tmp) / f"{name}-{version}" / "Cargo.toml"
        done = subprocess.run(
            [
                str(toolchain_dir / "bin" / "cargo"),
                "generate-lockfile",
                "--manifest-path",
                str(manifest_path),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
            env=dict(os.environ, PATH=f"{toolchain_dir / 'bin'}:{os.environ.get('PATH', '')}"),
        )
        if done.returncode != 0:
            raise OperationalError(f"cargo generate-lockfile failed: {done.stderr.strip()}")
        return manifest_path.with_name("Cargo.lock").read_text()


def resolve_recipe(
    spec: str | Path,
    *,
    store: CrateStore | None = None,
    client: docker.DockerClient | None = None,
    toolchain_dir: Path | None = None,
    image_config: ImageConfig | None = None,
    target: str = DEFAULT_TARGET,
    profile: str = "release",
    features: Features | None = None,
    pre: bool = False,
    artifacts: tuple[str, ...] = ARTIFACT_KINDS,
    progress: Progress = stderr_progress,
) -> Recipe:
    """Pin ``name@version`` or ``name`` from crates.io, or a local ``.crate``, into a Recipe.

    Without a version, the newest that is not yanked (a pre-release only with ``pre``).
    Without ``features``, what the crate asks docs.rs to build (``[package.metadata.docs.rs]``)
    if it says, else its default features.
    """
    store = store or CrateStore()
    toolchain_dir = toolchain_dir or find_toolchain_dir(DEFAULT_TOOLCHAIN)
    if isinstance(spec, Path) or str(spec).endswith(".crate"):
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"{path} is not a file")
        data = path.read_bytes()
        crate_sha256 = store.put(data)
        facts = _crate_facts(data, f"local crate {path}")
        source = SOURCE_LOCAL
    else:
        name, separator, version = str(spec).partition("@")
        if not name or (separator and not version):
            raise UsageError(f"{spec!r} is not NAME or NAME@VERSION")
        if not separator:
            version = store.newest_version(name, pre=pre)
            progress(f"{name}: newest version not yanked is {version}")
        crate_sha256 = store.index_cksum(name, version)
        data = store.fetch(name, version, crate_sha256, "the index cksum")
        facts = _crate_facts(data, f"crate {name}@{version}")
        if (facts.name, facts.version) != (name, version):
            raise VerificationError(f"crate {name}@{version} contains {facts.name}@{facts.version}")
        source = SOURCE_CRATES_IO
    name, version, lock = facts.name, facts.version, facts.lock
    if features is None:
        features = docs_rs_features(facts.manifest, facts.nightly) or Features()
        progress(f"{name}@{version}: {features.describe()} ({_origin(facts)})")
    features = features.normalized()
    if lock is None:
        progress(f"{name}@{version} ships no Cargo.lock; resolving one with cargo")
        lock = generate_lockfile(data, name, version, toolchain_dir)
    client = client or docker_client()
    image = ensure_build_image(client, image_config, progress=progress)
    pins = environment_pins(client, image, toolchain_dir, progress)
    return Recipe(
        name=name,
        version=version,
        crate_sha256=crate_sha256,
        cargo_lock=lock,
        toolchain=pins.toolchain,
        rootfs_sha256=pins.rootfs_sha256,
        rootfs_archive_sha256=pins.rootfs_archive_sha256,
        source=source,
        target=target,
        profile=profile,
        features=features.features,
        default_features=features.default_features,
        all_features=features.all_features,
        artifacts=tuple(sorted(set(artifacts))),
    )


def _origin(facts: _CrateFacts) -> str:
    chosen = docs_rs_features(facts.manifest, facts.nightly)
    if chosen is None:
        return "the crate's defaults"
    asked = docs_rs_features(facts.manifest) or Features()
    declared = facts.manifest.get("features", {})
    asked_names = set(declared if asked.all_features and isinstance(declared, dict) else ())
    left_out = sorted((asked_names | set(asked.features)) - set(chosen.features))
    if chosen.all_features:
        left_out = []
    note = f", without {', '.join(left_out)}: nightly only" if left_out else ""
    return f"as its [package.metadata.docs.rs] asks{note}"


def _cleanup_once(client: docker.DockerClient) -> None:
    with _cleanup_lock:
        if not _cleanup_state["done"]:
            remove_leftover_containers(client)
            remove_leftover_volumes(client)
            _cleanup_state["done"] = True


def build_crate(
    recipe_or_spec: Recipe | str | Path,
    out_dir: Path,
    *,
    limits: SandboxLimits | None = None,
    store: CrateStore | None = None,
    client: docker.DockerClient | None = None,
    toolchain_dir: Path | None = None,
    local_crate: Path | None = None,
    progress: Progress = stderr_progress,
    environment: EnvironmentOptions | None = None,
    variation: Variation | None = None,
) -> BuildResult:
    """Build a recipe (or resolve ``name@version`` / a ``.crate`` path first) into ``out_dir``.

    Checksum mismatches raise VerificationError before any container exists. A failed build
    is not an exception: the result says ``ok=False`` with the reason and the log. An
    environment that cannot be obtained raises ``EnvironmentUnavailable``; ``environment``
    names the sources to try and the time allowed (``toolchain_dir``: a local toolchain that
    may serve, if its digest is the recipe's). ``variation`` is the host conditions to build
    under (builder.variation; default all CPUs, the true clock, the first host name): the build
    log's first line states it, and ``variation.json`` beside the manifest records it and how
    it was applied (evidence for the explain step, never part of the compared manifest).
    """
    variation = variation or Variation()
    store = store or CrateStore()
    client = client or docker_client()
    if isinstance(recipe_or_spec, Recipe):
        recipe = recipe_or_spec
    else:
        recipe = resolve_recipe(
            recipe_or_spec,
            store=store,
            client=client,
            toolchain_dir=toolchain_dir,
            progress=progress,
        )
    options = environment or EnvironmentOptions()
    if toolchain_dir is not None:
        options = dataclasses.replace(options, toolchain_dir=toolchain_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "recipe.json").write_bytes(recipe.to_json())
    with tempfile.TemporaryDirectory(prefix="synchronicity-src-") as tmp:
        sources = prepare_sources(recipe, Path(tmp), store, local_crate=local_crate)
        progress(f"sources of {recipe.spec} verified ({len(sources.vendored)} dependencies)")
        for package, reason in sources.stand_ins:
            progress(f"{package.spec} not fetched ({reason}): a manifest-only stand-in")
        image = ensure_environment(  # after the sources: a bad checksum costs no download
            EnvironmentSpec.of(recipe), client=client, options=options, progress=progress
        )
        _cleanup_once(client)
        inputs = {SRC_DIR: sources.src_dir, SANDBOX_DEPS_DIR: sources.deps_dir}
        with input_volumes(client, image.tag, recipe.job_id, inputs) as volumes:
            job = SandboxJob(
                job_id=recipe.job_id,
                image=image.tag,
                src_dir=sources.src_dir,
                deps_dir=sources.deps_dir,
                toolchain_dir=None,  # in the environment image, at /opt/rust
                crate_name=recipe.name,
                crate_version=recipe.version,
                target=recipe.target,
                profile=recipe.profile,
                features=recipe.features,
                default_features=recipe.default_features,
                all_features=recipe.all_features,
                input_volumes=volumes,
                variation=variation,
            )
            outcome = run_in_sandbox(job, out_dir, limits=limits, client=client)
    (out_dir / "build.log").write_bytes(outcome.log)
    (out_dir / "variation.json").write_bytes(evidence(variation, outcome.extra["applied"]))
    manifest = None
    if outcome.ok and outcome.artifacts_dir is not None:
        manifest = collect_manifest(outcome.artifacts_dir, recipe.artifacts)
        (out_dir / "manifest.json").write_bytes(manifest.to_json())
        progress(f"{recipe.spec}: output digest {manifest.output_digest}")
    else:
        progress(f"{recipe.spec}: build failed ({outcome.reason})")
    return BuildResult(
        recipe=recipe,
        ok=outcome.ok,
        reason=outcome.reason,
        detail=outcome.detail,
        manifest=manifest,
        log=outcome.log,
        out_dir=out_dir,
        seconds=outcome.seconds,
        variation=variation,
    )
