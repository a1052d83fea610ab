"""``synchronicity image export``: this host's build environment (or a recipe's), as archives.

``--out DIR`` writes ``rootfs-<digest>.tar.gz``, ``toolchain-<digest>.tar.gz`` and
``environment.json`` (the same bytes on every export of one environment); ``--to-log`` uploads
both archives to the blob store of a network's log, in chunks, signed with a builder's key, so
that every builder of the network can obtain them (spec/builds.md section 10).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from builder import recipe as recipes
from builder.build import DEFAULT_TOOLCHAIN
from builder.environment import (
    EnvironmentSpec,
    environment_pins,
    export_environment,
    upload_environment,
)
from builder.image import docker_client, ensure_build_image, stderr_progress
from builder.toolchain import find_toolchain_dir
from logserver.client import LogClient
from logserver.core import note
from logserver.core.errors import OperationalError, UsageError
from logserver.protocol.network import NetworkConfig
from synchronicity.cmd_build import environment_options


def export(args: argparse.Namespace) -> int:
    """``image export``: this host's environment, or a recipe's, to a directory or a log."""
    if not args.out and not args.to_log:
        raise UsageError("say where to: --out DIR, --to-log, or both")
    if args.to_log and not (args.network and args.key):
        raise UsageError("--to-log needs --network and --key (a builder's key)")
    client = docker_client()
    options = environment_options(args)
    if args.recipe:
        spec = EnvironmentSpec.of(recipes.from_json(Path(args.recipe).read_bytes()))
    else:
        image = ensure_build_image(client)
        toolchain = find_toolchain_dir(DEFAULT_TOOLCHAIN)
        spec = environment_pins(client, image, toolchain, stderr_progress)
    print(f"root file system {spec.rootfs_sha256} (archive {spec.rootfs_archive_sha256})")
    print(f"toolchain {spec.toolchain.files_sha256} (archive {spec.toolchain.archive_sha256})")
    if args.out:
        for path in export_environment(
            spec, Path(args.out), client=client, options=options, progress=stderr_progress
        ):
            print(f"wrote {path}")
    if args.to_log:
        for kind, digest in upload(spec, args).items():
            print(f"{kind} archive {digest} is in the network log's blob store")
    return 0


def upload(spec: EnvironmentSpec, args: argparse.Namespace) -> dict[str, str]:
    """Both archives into the network log's blob store, signed with the builder's key."""
    network = NetworkConfig.parse(Path(args.network).read_bytes())
    key = note.parse_private_key(Path(args.key).read_text().strip())
    if key.name not in [w.name for w in network.witnesses]:
        raise UsageError(f"{key.name} is not a builder of network {network.network_id}")
    signer = note.Signer(key.name, key.key)
    with LogClient(network.log.url, timeout=300.0) as log:

        def has_blob(name: str) -> bool:
            try:
                log.blob(name)
            except OperationalError:
                return False
            return True

        return upload_environment(
            spec,
            lambda data: log.put_blob(data, signer),
            has_blob,
            client=docker_client(),
            options=environment_options(args),
            progress=stderr_progress,
        )
