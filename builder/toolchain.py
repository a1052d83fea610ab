"""The Rust toolchain's identity: ``rustc -vV`` release and commit, a digest of its files, and
where the Rust project publishes its components.

A host's toolchain is installed by rustup; the build runs it from the build environment's
image, where it is baked in at ``/opt/rust`` (:mod:`builder.environment`). Its files digest is
``builder.fstree.tree_digest(dir, owners=False)``; hashing a toolchain takes seconds, so the
digest is cached on disk keyed by the cheap (path, size, mtime) listing of the directory, and
a warm lookup costs only the listing.

**Provenance.** rustup keeps the channel manifest it installed from in the toolchain
(``lib/rustlib/multirust-channel-manifest.toml``) and the installed components in
``lib/rustlib/multirust-config.toml``; :func:`dist_components` reads from them each installed
component's ``xz_url`` and ``xz_hash`` on the Rust project's dist server, which a recipe
records (``toolchain.dist``) so that a host with access to that server can fetch them there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import tomllib
from pathlib import Path

from builder import fstree
from builder.image import cache_dir
from builder.recipe import DistComponent, Toolchain
from logserver.core.errors import FormatError, OperationalError

CHANNEL_MANIFEST = "lib/rustlib/multirust-channel-manifest.toml"
INSTALLED_COMPONENTS = "lib/rustlib/multirust-config.toml"


def find_toolchain_dir(toolchain: str | None = None) -> Path:
    """The real directory of a rustup toolchain (``rustup which rustc``, symlinks resolved)."""
    command = ["rustup", "which", "rustc"]
    if toolchain is not None:
        command += ["--toolchain", toolchain]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationalError(f"cannot run rustup: {exc}") from exc
    if done.returncode != 0:
        raise OperationalError(f"rustup which rustc failed: {done.stderr.strip()}")
    return Path(os.path.realpath(done.stdout.strip())).parent.parent


def parse_rustc_version(text: str) -> tuple[str, str]:
    """Return (release, commit-hash) from the output of ``rustc -vV``."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(": ")
        if separator:
            fields[key.strip()] = value.strip()
    release = fields.get("release", "")
    commit = fields.get("commit-hash", "")
    if not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?", release):
        raise FormatError("rustc -vV output", f"release {release!r} is not a version")
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise FormatError("rustc -vV output", f"commit-hash {commit!r} is not a git commit")
    return release, commit


def toolchain_digest(directory: Path) -> str:
    """The files digest of a toolchain directory, cached by its (path, size, mtime) listing."""
    key = fstree.listing_key(directory)
    cache_file = cache_dir() / "toolchain-digests" / f"{key}.json"
    if cache_file.exists():
        try:
            cached = json.loads(cache_file.read_text())
        except (OSError, ValueError) as exc:
            raise OperationalError(f"corrupt toolchain digest cache {cache_file}: {exc}") from exc
        if isinstance(cached, dict) and isinstance(cached.get("files_sha256"), str):
            return str(cached["files_sha256"])
        raise OperationalError(f"corrupt toolchain digest cache {cache_file}")
    digest = fstree.tree_digest(directory, owners=False)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache_file.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
    with temporary.open("w") as handle:
        json.dump({"directory": str(directory), "files_sha256": digest}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, cache_file)
    return digest


def dist_components(config_text: str, manifest_text: str) -> tuple[DistComponent, ...]:
    """The installed components' archives on the dist server, from rustup's two files.

    Each component of ``multirust-config.toml`` is looked up in the channel manifest
    (``pkg.<pkg>.target.<target>``) for its ``xz_url`` and ``xz_hash`` (else ``url`` and
    ``hash``). Sorted by URL. A file that does not parse, or a component the manifest does not
    list, is a FormatError.
    """
    what = "rustup's toolchain manifests"
    try:
        config = tomllib.loads(config_text)
        manifest = tomllib.loads(manifest_text)
        components = []
        for item in config["components"]:
            target = manifest["pkg"][item["pkg"]]["target"][item["target"]]
            url, digest = target.get("xz_url"), target.get("xz_hash")
            if url is None or digest is None:
                url, digest = target["url"], target["hash"]
            components.append(DistComponent(url=str(url), sha256=str(digest)))
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise FormatError(what, f"no component list with dist URLs and hashes: {exc!r}") from exc
    return tuple(sorted(set(components), key=lambda component: component.url))


def toolchain_dist(directory: Path) -> tuple[DistComponent, ...]:
    """:func:`dist_components` of a toolchain directory; () if rustup's files are absent."""
    config, manifest = directory / INSTALLED_COMPONENTS, directory / CHANNEL_MANIFEST
    if not (config.is_file() and manifest.is_file()):
        return ()
    return dist_components(config.read_text(), manifest.read_text())


def toolchain_identity(directory: Path) -> Toolchain:
    """Identify the toolchain in ``directory`` (which holds bin/rustc and bin/cargo).

    The archive digest is not computed here (it needs the whole archive once:
    :func:`builder.environment.toolchain_pins`).
    """
    rustc = directory / "bin" / "rustc"
    try:
        done = subprocess.run(
            [str(rustc), "-vV"], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationalError(f"cannot run {rustc}: {exc}") from exc
    if done.returncode != 0:
        raise OperationalError(f"{rustc} -vV failed: {done.stderr.strip()}")
    release, commit = parse_rustc_version(done.stdout)
    return Toolchain(
        rustc_version=release,
        commit_hash=commit,
        files_sha256=toolchain_digest(directory),
        dist=toolchain_dist(directory),
    )
