"""Multi-host deployment: the node container image (built without a registry), compose files,
per-node configs, and the container network harness of the fault tests.

Run from the repository root (deploy/README.md), in outline::

    synchronicity deploy image            # debootstrap + the locked wheels -> a local image
    synchronicity deploy config --dir deploy/net
    docker-compose -f deploy/compose.yaml up -d
"""

__all__ = ["config", "dockernet", "image", "pins"]
