"""The node image (deploy/image.py): found again at once, named by its root file system digest.

Builds the image if this machine has none for the current code (see deploy/README.md for the
times), then checks that a second call returns the same image without building, and that the
image is configured as the compose file and the fault harness expect. Fails, never skips,
without Docker.
"""

from __future__ import annotations

import time

import pytest

from builder.image import docker_client
from deploy.image import (
    LABEL_NODE_KEY,
    LABEL_ROOTFS,
    ensure_node_image,
    find_node_image,
    image_tag,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_node_image_is_cached_and_named_by_its_digest() -> None:
    client = docker_client()
    try:
        first = ensure_node_image(client)
        lines: list[str] = []
        started = time.monotonic()
        again = ensure_node_image(client, progress=lines.append)
        took = time.monotonic() - started
        assert again == first
        assert took < 10, f"a cached image took {took:.1f}s"
        assert any("up to date" in line for line in lines), lines
        assert find_node_image(client, first.build_key) == first

        image = client.images.get(first.tag)
        labels = image.labels
        assert labels[LABEL_ROOTFS] == first.rootfs_sha256
        assert labels[LABEL_NODE_KEY] == first.build_key
        assert first.tag == image_tag(first.rootfs_sha256)
        assert len(first.rootfs_sha256) == 64
        config = image.attrs["Config"]
        assert config["Entrypoint"] == ["/opt/synchronicity/bin/synchronicity"]
        assert config["User"] == "10001:10001"
        assert config["WorkingDir"] == "/data"
    finally:
        client.close()
