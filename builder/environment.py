"""The content-addressed build environment: a root file system and a toolchain, by digest.

A recipe pins its environment by two tree digests (spec/builds.md sections 5-7): the build
image's root file system (``build_env.rootfs_sha256``) and the toolchain's files
(``toolchain.files_sha256``); recipes made since also pin the *archive digests* of their
canonical archives (:mod:`builder.envarchive`), which find them in a blob store, and the
toolchain's components on the Rust project's dist server (``toolchain.dist``).

A build runs in the **environment image** ``<prefix>-env:<key[:16]>``: the build image with the
toolchain baked in at ``/opt/rust`` (a second layer, written by ``put_archive`` into a container
that never runs, then committed), so that nothing of the host is mounted into the sandbox.
:func:`ensure_environment` finds it by its labels or makes it from what this host has -- a
build image, a rustup toolchain of the same digest, archives in its cache -- and, for what it
lacks, from the **sources** (:mod:`builder.envsource`: directories, URLs, the log's blob
store), verifying every archive by the recipe's digests before anything is imported. The
toolchain's ``rustc -vV`` is then run in a sandbox of the new image and must be what the recipe
says; its dist components are read from the rustup files it carries. A build image, toolchain
or archive that cannot be had in time raises :class:`EnvironmentUnavailable`.

:func:`export_environment` writes an environment's archives into a directory (gzip, the same
bytes every time), and :func:`upload_environment` cuts them into chunks for a blob store.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from builder import envarchive
from builder.container import (
    LABEL_BUILD,
    LABEL_OWNER,
    ContainerLimits,
    ContainerSpec,
    owner_label,
    run_container,
)
from builder.envarchive import (
    CHUNK_BYTES,
    KIND_ROOTFS,
    KIND_TOOLCHAIN,
    KINDS,
    ArchiveHasher,
    ArchiveIndex,
    Encoder,
    archive_name,
)
from builder.envsource import (
    EnvironmentSource,
    EnvironmentUnavailable,
    fetch_archive,
)
from builder.image import (
    LABEL_ROOTFS,
    BuildImage,
    Progress,
    _machine_lock,
    archive_path,
    environment_dir,
    find_build_image,
    image_prefix,
    import_rootfs_archive,
    index_path,
    list_images,
    rootfs_archive,
    settled,
    write_index,
)
from builder.recipe import DistComponent, Recipe, Toolchain
from builder.toolchain import (
    CHANNEL_MANIFEST,
    INSTALLED_COMPONENTS,
    dist_components,
    find_toolchain_dir,
    parse_rustc_version,
    toolchain_digest,
    toolchain_identity,
)
from logserver.core import canonical_json
from logserver.core.errors import FormatError, OperationalError, VerificationError

LABEL_ENVIRONMENT = "synchronicity.environment"
LABEL_TOOLCHAIN = "synchronicity.toolchain-sha256"
LABEL_RUSTC = "synchronicity.rustc"
LABEL_DIST = "synchronicity.toolchain-dist"
TOOLCHAIN_PREFIX = "opt/rust"
DEFAULT_TIMEOUT = 1200.0
EXPORT_SCHEMA = "synchronicity/environment/v1"
_SCRATCH = "/tmp"  # noqa: S108 (a tmpfs inside the container)
_CHECK_LIMITS = ContainerLimits(
    memory_bytes=512 << 20, cpus=1, pids=64, stdout_bytes=64 << 10, stderr_bytes=64 << 10,
    wall_seconds=120,
)  # fmt: skip

__all__ = [
    "EnvironmentImage",
    "EnvironmentOptions",
    "EnvironmentSpec",
    "EnvironmentUnavailable",
    "ensure_environment",
    "environment_pins",
    "export_environment",
    "find_environment",
    "upload_environment",
]


def env_repository() -> str:
    return f"{image_prefix()}-env"


def dist_label(dist: tuple[DistComponent, ...]) -> str:
    """A label value naming a dist component list: SHA-256 of its canonical JSON."""
    value = [component.to_value() for component in dist]
    return hashlib.sha256(canonical_json.encode(value, "dist")).hexdigest()


@dataclass(frozen=True)
class EnvironmentSpec:
    """What a recipe pins of its environment."""

    rootfs_sha256: str
    toolchain: Toolchain
    rootfs_archive_sha256: str | None = None

    @classmethod
    def of(cls, recipe: Recipe) -> EnvironmentSpec:
        return cls(recipe.rootfs_sha256, recipe.toolchain, recipe.rootfs_archive_sha256)

    @property
    def key(self) -> str:
        value = {"rootfs_sha256": self.rootfs_sha256, "toolchain_sha256": self.tree(KIND_TOOLCHAIN)}
        return hashlib.sha256(canonical_json.encode(value, "environment")).hexdigest()

    @property
    def tag(self) -> str:
        return f"{env_repository()}:{self.key[:16]}"

    def tree(self, kind: str) -> str:
        return self.rootfs_sha256 if kind == KIND_ROOTFS else self.toolchain.files_sha256

    def archive(self, kind: str) -> str | None:
        if kind == KIND_ROOTFS:
            return self.rootfs_archive_sha256
        return self.toolchain.archive_sha256

    @property
    def rustc(self) -> str:
        return f"{self.toolchain.rustc_version} {self.toolchain.commit_hash}"


@dataclass(frozen=True)
class EnvironmentOptions:
    """Where to get what this host lacks, how long to try, and a local toolchain to prefer
    (default: rustup's toolchain named by the recipe's rustc version, if its digest fits)."""

    sources: tuple[EnvironmentSource, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    toolchain_dir: Path | None = None


@dataclass(frozen=True)
class EnvironmentImage:
    """An environment image present in the local Docker engine."""

    tag: str
    image_id: str


def find_environment(client: docker.DockerClient, spec: EnvironmentSpec) -> EnvironmentImage | None:
    """The environment image of ``spec`` if imported; VerificationError if the image's toolchain
    is not the one the recipe describes (``rustc -vV``, dist components)."""
    for image_id, tags, labels in list_images(
        client, {"label": [f"{LABEL_ENVIRONMENT}={spec.key}"]}
    ):
        if spec.tag not in tags:
            continue
        if labels.get(LABEL_RUSTC) != spec.rustc:
            raise VerificationError(
                f"the recipe's toolchain says rustc {spec.rustc}; "
                f"its files are rustc {labels.get(LABEL_RUSTC)}"
            )
        if spec.toolchain.dist and labels.get(LABEL_DIST) != dist_label(spec.toolchain.dist):
            raise VerificationError(
                "the recipe's toolchain.dist is not what the toolchain's channel manifest says"
            )
        return EnvironmentImage(tag=spec.tag, image_id=image_id)
    return None


def _local_toolchain(spec: EnvironmentSpec, options: EnvironmentOptions) -> Path | None:
    """A toolchain directory on this host whose files digest is the recipe's, if any."""
    candidates = [options.toolchain_dir] if options.toolchain_dir is not None else []
    if not candidates:
        with contextlib.suppress(OperationalError):
            candidates.append(find_toolchain_dir(spec.toolchain.rustc_version))
    for directory in candidates:
        rustc = directory / "bin" / "rustc"
        if rustc.is_file() and toolchain_digest(directory) == spec.toolchain.files_sha256:
            return directory
    return None


def _cached_archive(
    kind: str,
    spec: EnvironmentSpec,
    options: EnvironmentOptions,
    deadline: float,
    progress: Progress,
    client: docker.DockerClient | None = None,
) -> Path:
    """The cached archive of ``kind``: already there, made from this host's build image (the
    root file system), or fetched from the sources and verified."""
    tree = spec.tree(kind)
    path = archive_path(kind, tree)
    if path.is_file():
        return path
    if kind == KIND_ROOTFS and client is not None:
        image = find_build_image(client, rootfs_sha256=tree)
        if image is not None:
            return rootfs_archive(client, image, progress)
    capture = (CHANNEL_MANIFEST, INSTALLED_COMPONENTS) if kind == KIND_TOOLCHAIN else ()
    verified = fetch_archive(
        kind,
        tree,
        spec.archive(kind),
        options.sources,
        path,
        deadline=deadline,
        capture=capture,
        progress=progress,
    )
    write_index(verified.index)
    return path


@contextlib.contextmanager
def _archive_entries(path: Path) -> Iterator[Iterator[envarchive.Entry]]:
    with path.open("rb") as handle:
        yield envarchive.read_archive(handle)


def _entries(
    kind: str,
    spec: EnvironmentSpec,
    options: EnvironmentOptions,
    deadline: float,
    progress: Progress,
    client: docker.DockerClient | None = None,
) -> contextlib.AbstractContextManager[Iterator[envarchive.Entry]]:
    """The entries of the tree of ``kind``: from a local toolchain, or from its archive."""
    if kind == KIND_TOOLCHAIN and not archive_path(kind, spec.tree(kind)).is_file():
        local = _local_toolchain(spec, options)
        if local is not None:
            return contextlib.nullcontext(envarchive.tree_entries(local, kind))
    return _archive_entries(_cached_archive(kind, spec, options, deadline, progress, client))


def ensure_environment(
    spec: EnvironmentSpec,
    *,
    client: docker.DockerClient,
    options: EnvironmentOptions | None = None,
    progress: Progress,
) -> EnvironmentImage:
    """The environment image of ``spec``, made on first use (see the module's docstring)."""
    options = options or EnvironmentOptions()
    found = find_environment(client, spec)
    if found is not None:
        return found
    with _machine_lock(environment_dir() / "environment.lock"):
        found = find_environment(client, spec)
        if found is not None:
            return found
        started = time.monotonic()
        deadline = started + options.timeout
        rootfs = find_build_image(client, rootfs_sha256=spec.rootfs_sha256)
        if rootfs is None:
            path = _cached_archive(KIND_ROOTFS, spec, options, deadline, progress)
            rootfs = import_rootfs_archive(client, path, spec.rootfs_sha256, progress)
        with _entries(KIND_TOOLCHAIN, spec, options, deadline, progress) as entries:
            staged = _bake_toolchain(client, rootfs, spec, entries, progress)
        try:
            _check_rustc(client, staged, spec)
            client.images.get(staged).tag(*spec.tag.split(":"))
        finally:
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(staged)
        progress(f"environment image {spec.tag} ready in {time.monotonic() - started:.1f}s")
    found = settled(lambda: find_environment(client, spec))
    if found is None:
        raise OperationalError(f"the environment image {spec.tag} is not there after its import")
    return found


def _bake_toolchain(
    client: docker.DockerClient,
    rootfs: BuildImage,
    spec: EnvironmentSpec,
    entries: Iterable[envarchive.Entry],
    progress: Progress,
) -> str:
    """Commit the build image with the toolchain at /opt/rust as a staging image; its tag.

    The toolchain streams through an Encoder into ``put_archive``: its tree digest must be the
    recipe's, and its rustup files give the dist label, before anything is committed.
    """
    captured: dict[str, bytes] = {}
    wanted = {CHANNEL_MANIFEST, INSTALLED_COMPONENTS}

    def watched() -> Iterator[envarchive.Entry]:
        for entry, data in entries:
            if entry.path in wanted and entry.kind == "f" and entry.size <= 4 << 20:
                captured[entry.path] = b"".join(data)
                yield entry, (captured[entry.path],)
            else:
                yield entry, data

    encoder = Encoder(KIND_TOOLCHAIN, prefix=TOOLCHAIN_PREFIX)
    progress(f"baking the toolchain {spec.tree(KIND_TOOLCHAIN)[:16]} into {rootfs.tag}")
    # unique among builders that share one engine (in containers, their pids may be equal)
    staged = f"{env_repository()}-staging:{spec.key[:16]}-{uuid.uuid4().hex[:16]}"
    try:
        container = client.containers.create(
            rootfs.tag,
            ["/bin/true"],
            network_disabled=True,
            use_config_proxy=False,
            labels={LABEL_BUILD: "environment", LABEL_OWNER: owner_label()},
        )
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot create a container of {rootfs.tag}: {exc}") from exc
    try:
        try:
            container.put_archive("/", encoder.encode(watched()))
        except docker.errors.DockerException as exc:
            raise OperationalError(f"cannot copy the toolchain into the image: {exc}") from exc
        if encoder.tree_sha256 != spec.tree(KIND_TOOLCHAIN):
            raise VerificationError(
                f"the toolchain's files are {encoder.tree_sha256}, not {spec.tree(KIND_TOOLCHAIN)}"
            )
        dist = _dist_of(captured)
        repository, tag = staged.split(":")
        changes = [
            f"LABEL {LABEL_ENVIRONMENT}={spec.key}",
            f"LABEL {LABEL_ROOTFS}={spec.rootfs_sha256}",
            f"LABEL {LABEL_TOOLCHAIN}={spec.tree(KIND_TOOLCHAIN)}",
            f'LABEL {LABEL_RUSTC}="{spec.rustc}"',
            f"LABEL {LABEL_DIST}={dist_label(dist)}",
        ]
        try:
            container.commit(repository=repository, tag=tag, changes=changes)
        except docker.errors.DockerException as exc:
            raise OperationalError(f"cannot commit the environment image: {exc}") from exc
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
    return staged


def _dist_of(captured: dict[str, bytes]) -> tuple[DistComponent, ...]:
    if set(captured) != {CHANNEL_MANIFEST, INSTALLED_COMPONENTS}:
        return ()
    try:
        config = captured[INSTALLED_COMPONENTS].decode()
        return dist_components(config, captured[CHANNEL_MANIFEST].decode())
    except (UnicodeDecodeError, FormatError):
        return ()


def _check_rustc(client: docker.DockerClient, image: str, spec: EnvironmentSpec) -> None:
    """Run ``rustc -vV`` in a sandbox of ``image``: it must say the recipe's release and commit."""
    output = io.BytesIO()
    container = ContainerSpec(
        image=image,
        command=[f"/{TOOLCHAIN_PREFIX}/bin/rustc", "-vV"],
        environment={"PATH": "/usr/bin:/bin", "HOME": _SCRATCH, "LC_ALL": "C.UTF-8"},
        working_dir=_SCRATCH,
        binds=(),
        tmpfs={_SCRATCH: "rw,noexec,nosuid,nodev,size=16m,mode=1777"},
        purpose="environment-check",
        what="toolchain check",
    )
    run = run_container(client, container, _CHECK_LIMITS, output)
    if run.exit_code != 0:
        raise VerificationError(f"the toolchain's rustc -vV failed: {run.stderr[-500:]!r}")
    try:
        release, commit = parse_rustc_version(output.getvalue().decode())
    except (UnicodeDecodeError, FormatError) as exc:
        raise VerificationError(f"the toolchain's rustc -vV is not understood: {exc}") from exc
    if f"{release} {commit}" != spec.rustc:
        raise VerificationError(
            f"the recipe's toolchain says rustc {spec.rustc}; "
            f"its files are rustc {release} {commit}"
        )


# ----- pins, export and upload ---------------------------------------------------------------


def archive_index(
    kind: str,
    spec: EnvironmentSpec,
    *,
    client: docker.DockerClient | None = None,
    options: EnvironmentOptions | None = None,
    progress: Progress,
) -> ArchiveIndex:
    """The index of the canonical archive of ``kind`` (cached: computed once per tree)."""
    options = options or EnvironmentOptions()
    tree = spec.tree(kind)
    path = index_path(kind, tree)
    deadline = time.monotonic() + options.timeout
    if not path.is_file() and (kind == KIND_ROOTFS or _local_toolchain(spec, options) is None):
        # making the cached archive (docker save, a fetch) writes its index too
        _cached_archive(kind, spec, options, deadline, progress, client)
    if path.is_file():
        index = ArchiveIndex.from_json(path.read_bytes())
        if (index.kind, index.tree_sha256) != (kind, tree):
            raise OperationalError(f"{path} is the index of another archive")
        return index
    progress(f"computing the archive digest of the {kind} {tree[:16]}")
    encoder, hasher = Encoder(kind), ArchiveHasher()
    with _entries(kind, spec, options, deadline, progress, client) as entries:
        for piece in encoder.encode(entries):
            hasher.update(piece)
    if encoder.tree_sha256 != tree:
        raise VerificationError(f"the {kind}'s files are {encoder.tree_sha256}, not {tree}")
    index = hasher.index(kind, tree)
    write_index(index)
    return index


def environment_pins(
    client: docker.DockerClient, image: BuildImage, toolchain_dir: Path, progress: Progress
) -> EnvironmentSpec:
    """What a new recipe pins of this host's environment: the build image, the toolchain in
    ``toolchain_dir`` with its dist components, and both archive digests."""
    toolchain = toolchain_identity(toolchain_dir)
    bare = EnvironmentSpec(image.rootfs_sha256, toolchain)
    options = EnvironmentOptions(toolchain_dir=toolchain_dir)
    rootfs = archive_index(KIND_ROOTFS, bare, client=client, options=options, progress=progress)
    tools = archive_index(KIND_TOOLCHAIN, bare, client=client, options=options, progress=progress)
    return EnvironmentSpec(
        image.rootfs_sha256,
        dataclasses.replace(toolchain, archive_sha256=tools.digest),
        rootfs.digest,
    )


def _check_index(index: ArchiveIndex, spec: EnvironmentSpec) -> None:
    pinned = spec.archive(index.kind)
    if index.tree_sha256 != spec.tree(index.kind):
        raise VerificationError(f"the {index.kind}'s files are {index.tree_sha256}")
    if pinned is not None and index.digest != pinned:
        raise VerificationError(
            f"the {index.kind} archive's digest is {index.digest}, not {pinned}"
        )


def export_environment(
    spec: EnvironmentSpec,
    out: Path,
    *,
    client: docker.DockerClient | None,
    options: EnvironmentOptions | None = None,
    progress: Progress,
) -> list[Path]:
    """Write ``<kind>-<tree>.tar.gz`` for both archives and ``environment.json`` into ``out``.

    The archives are gzip (level 6, no name, mtime 0) of the canonical archives: two exports of
    one environment with one zlib are the same bytes. The two are written at once.
    """
    options = options or EnvironmentOptions()
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + options.timeout

    def one(kind: str) -> tuple[Path, ArchiveIndex]:
        path = out / archive_name(kind, spec.tree(kind))
        partial = path.with_name(f".{path.name}.part")
        encoder, hasher = Encoder(kind), ArchiveHasher()
        with _entries(kind, spec, options, deadline, progress, client) as entries:

            def plain() -> Iterator[bytes]:
                for piece in encoder.encode(entries):
                    hasher.update(piece)
                    yield piece

            with partial.open("wb") as sink:
                for piece in envarchive.gzip_pieces(plain()):
                    sink.write(piece)
                sink.flush()
                os.fsync(sink.fileno())
        assert encoder.tree_sha256 is not None
        index = hasher.index(kind, encoder.tree_sha256)
        _check_index(index, spec)
        os.replace(partial, path)
        progress(f"wrote {path} ({path.stat().st_size >> 20} MiB, {index.size >> 20} MiB plain)")
        return path, index

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(KINDS)) as pool:
        results = list(pool.map(one, KINDS))
    summary = {
        "schema": EXPORT_SCHEMA,
        "toolchain": spec.toolchain.to_value(),
        "archives": [
            {
                "archive_sha256": index.digest,
                "file": path.name,
                "file_sha256": _file_sha256(path),
                "kind": index.kind,
                "size": index.size,
                "tree_sha256": index.tree_sha256,
            }
            for path, index in results
        ],
    }
    (out / "environment.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return [path for path, _ in results]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def upload_environment(
    spec: EnvironmentSpec,
    put_blob: Callable[[bytes], str],
    has_blob: Callable[[str], bool],
    *,
    client: docker.DockerClient | None,
    options: EnvironmentOptions | None = None,
    progress: Progress,
) -> dict[str, str]:
    """Upload both archives to a blob store in chunks of 32 MiB, the index last; return the
    archive digest of each kind. An archive whose index is already there is skipped.

    ``client`` (Docker) is needed only to make a root file system archive from an image.
    """
    options = options or EnvironmentOptions()
    deadline = time.monotonic() + options.timeout
    digests: dict[str, str] = {}
    for kind in KINDS:
        pinned = spec.archive(kind)
        if pinned is not None and has_blob(pinned):
            progress(f"the {kind} archive {pinned[:16]} is already in the blob store")
            digests[kind] = pinned
            continue
        encoder, hasher = Encoder(kind), ArchiveHasher()
        buffer = bytearray()
        sent = 0
        with _entries(kind, spec, options, deadline, progress, client) as entries:
            for piece in encoder.encode(entries):
                hasher.update(piece)
                buffer += piece
                while len(buffer) >= CHUNK_BYTES:
                    put_blob(bytes(buffer[:CHUNK_BYTES]))
                    del buffer[:CHUNK_BYTES]
                    sent += 1
        if buffer:
            put_blob(bytes(buffer))
            sent += 1
        assert encoder.tree_sha256 is not None
        index = hasher.index(kind, encoder.tree_sha256)
        _check_index(index, spec)
        put_blob(index.to_json())
        progress(f"uploaded the {kind} archive {index.digest[:16]} ({sent} chunks)")
        digests[kind] = index.digest
    return digests
