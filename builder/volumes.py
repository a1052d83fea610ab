"""A build's inputs as Docker volumes, filled through the Docker API: no host path is mounted.

The sources and vendored dependencies that a builder prepared and verified on its side are
copied into one fresh volume each: a *filler* container is created (never started) with the
volumes mounted read-write, and each directory goes in as a tar stream through
``put_archive`` (files owned by 0:0, modes 0644/0755, as :mod:`builder.envarchive` writes a
toolchain), then the filler is removed. The build container mounts the volumes read-only, so
inputs stay read-only to the build while the builder may itself run in a container that talks
to the host's Docker (only the Docker socket is shared, never a path). Volumes carry the
labels of the build's containers and are always removed; ``remove_leftover_volumes`` removes
those a dead process of this host left behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from builder import envarchive
from builder.container import LABEL_BUILD, LABEL_OWNER, owner_label
from builder.envarchive import KIND_TOOLCHAIN, Encoder
from logserver.core.errors import OperationalError

Volumes = tuple[tuple[str, str], ...]  # (container path, volume name)


@contextlib.contextmanager
def input_volumes(
    client: docker.DockerClient, image: str, purpose: str, directories: dict[str, Path]
) -> Iterator[Volumes]:
    """One volume per (container path -> host directory), filled, yielded, then removed."""
    labels = {LABEL_BUILD: purpose, LABEL_OWNER: owner_label()}
    created: list[str] = []
    try:
        for _ in directories:
            name = f"synchronicity-input-{uuid.uuid4().hex[:16]}"
            try:
                client.volumes.create(name=name, labels=labels)
            except docker.errors.DockerException as exc:
                raise OperationalError(f"cannot create a volume for the build: {exc}") from exc
            created.append(name)
        volumes = tuple(zip(directories, created, strict=True))
        _fill(client, image, labels, volumes, directories)
        yield volumes
    finally:
        for name in created:
            _remove(client, name)


def _fill(
    client: docker.DockerClient,
    image: str,
    labels: dict[str, str],
    volumes: Volumes,
    directories: dict[str, Path],
) -> None:
    mounts = [
        docker.types.Mount(f"/fill/{number}", name, type="volume", read_only=False, no_copy=True)
        for number, (_, name) in enumerate(volumes)
    ]
    try:
        filler = client.containers.create(
            image,
            ["/bin/true"],
            network_disabled=True,
            use_config_proxy=False,
            mounts=mounts,
            labels=labels,
            read_only=True,
        )
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot create the container that fills the inputs: {exc}") from exc
    try:
        for number, (target, _) in enumerate(volumes):
            entries = envarchive.tree_entries(directories[target], KIND_TOOLCHAIN)
            try:
                filler.put_archive(f"/fill/{number}", Encoder(KIND_TOOLCHAIN).encode(entries))
            except docker.errors.DockerException as exc:
                raise OperationalError(f"cannot copy the build inputs: {exc}") from exc
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            filler.remove(force=True)


def _remove(client: docker.DockerClient, name: str) -> None:
    try:
        client.api.remove_volume(name, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot remove the volume {name}: {exc}") from exc


def remove_leftover_volumes(client: docker.DockerClient) -> int:
    """Remove labelled input volumes of processes of this host that no longer exist."""
    try:
        listing = client.api.volumes(filters={"label": LABEL_BUILD}).get("Volumes") or []
    except docker.errors.DockerException as exc:
        raise OperationalError(f"cannot list volumes: {exc}") from exc
    removed = 0
    for volume in listing:
        owner = str((volume.get("Labels") or {}).get(LABEL_OWNER, ""))
        if not _owner_gone(owner):
            continue
        with contextlib.suppress(docker.errors.APIError):  # in use, or already gone
            client.api.remove_volume(volume["Name"])
            removed += 1
    return removed


def _owner_gone(owner: str) -> bool:
    """True if ``host:pid`` names a process of this host that no longer runs. Volumes of other
    hosts (builders in containers sharing one Docker engine) are theirs to remove."""
    host, _, pid = owner.partition(":")
    if host != socket.gethostname() or not (pid.isascii() and pid.isdigit()):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
