"""A real protocol log holding reproduced crates whose artifacts are in its blob store.

:class:`CrateLog` runs ``log serve --network`` (``tests.support.protocol_log.ProtocolLog``) over
leaves whose reproduced verdicts name real output manifests: each manifest and each artifact is
uploaded to the log's blob store, signed by a builder, and a quorum cosigns the log, so that
``install`` and ``fetch`` find, prove, download and check them as on a network that built them,
without Docker. The binaries are small shell scripts, so a test can run what it installed.

The crates (``SCENARIO``): ``hello-tool`` 0.9.0, 1.0.0 and 1.1.0-rc.1 reproduced (with a binary
and an rlib); ``libonly`` 2.0.0 reproduced (an rlib only); ``broken`` 0.1.0 not reproduced;
``hidden`` 1.0.0 reproduced, then built again (other features) and not reproduced.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from logserver.core import canonical_json
from tests.support.dashboard_fixtures import BuiltJob, Plan, ProtocolFixture
from tests.support.protocol_log import NETWORK_ID, ProtocolLog

Crate = tuple[str, str]  # (name, version)


def script(text: str) -> bytes:
    """A tiny executable 'binary': a shell script that prints ``text``."""
    return f"#!/bin/sh\necho '{text}'\n".encode()


ARTIFACTS: dict[Crate, dict[str, bytes]] = {
    ("hello-tool", "0.9.0"): {
        "hello-tool": script("hello-tool 0.9.0"),
        "libhello_tool.rlib": b"!<arch>\nold rlib\n",
    },
    ("hello-tool", "1.0.0"): {
        "hello-tool": script("hello-tool 1.0.0, reproduced"),
        "libhello_tool.rlib": b"!<arch>\nrlib 1.0.0\n",
    },
    ("hello-tool", "1.1.0-rc.1"): {"hello-tool": script("a release candidate")},
    ("libonly", "2.0.0"): {"liblibonly.rlib": b"!<arch>\nonly a library\n"},
    ("hidden", "1.0.0"): {"hidden": script("hidden 1.0.0, the first build")},
}

SCENARIO: list[tuple[str, str, Plan]] = [
    ("hello-tool", "0.9.0", "reproduced"),
    ("hello-tool", "1.0.0", "reproduced"),
    ("hello-tool", "1.1.0-rc.1", "reproduced"),
    ("libonly", "2.0.0", "reproduced"),
    ("broken", "0.1.0", "not-reproduced"),
    ("hidden", "1.0.0", "reproduced"),
]
AGAIN: list[tuple[str, str, Plan]] = [("hidden", "1.0.0", "not-reproduced")]


def manifest(artifacts: Mapping[str, bytes]) -> bytes:
    """The output manifest of ``artifacts`` (spec/builds.md, section 8)."""
    items = [
        {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for path, data in sorted(artifacts.items(), key=lambda item: item[0].encode())
    ]
    return canonical_json.encode({"artifacts": items, "schema": "synchronicity/manifest/v1"})


class ArtifactFixture(ProtocolFixture):
    """A ``ProtocolFixture`` whose reproduced builds of ``ARTIFACTS`` output their manifest."""

    def _output(self, job: BuiltJob, builder: str) -> str:
        artifacts = ARTIFACTS.get((job.name, job.version))
        if job.plan == "reproduced" and artifacts is not None:
            return hashlib.sha256(manifest(artifacts)).hexdigest()
        return super()._output(job, builder)


@dataclass
class CrateLog:
    """The running log, its policy file, and where each crate's leaves and blobs are."""

    log: ProtocolLog
    policy: Path
    jobs: list[BuiltJob] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.log.url

    def blob_path(self, data: bytes) -> Path:
        """Where the log keeps a blob on disk (its data directory's blob store)."""
        name = hashlib.sha256(data).hexdigest()
        return self.log.data / "blobs" / name[:2] / name

    def source(self) -> list[str]:
        """The install/fetch options that name this log and its policy."""
        return ["--policy", str(self.policy), "--log", self.url]

    def stop(self) -> None:
        self.log.stop()


def start_crate_log(directory: Path) -> CrateLog:
    """Write the scenario's leaves, start the log, upload the blobs, publish a checkpoint."""
    log = ProtocolLog(directory)
    fixture = ArtifactFixture(log.signer, start_ms=int(time.time() * 1000), network_id=NETWORK_ID)
    log.fixture = fixture
    first, jobs = fixture.builds(0, SCENARIO)
    again, more = fixture.builds(len(first), AGAIN, features=["again"])
    log.prefill(first + again)
    log.start()
    with httpx.Client(base_url=log.url, timeout=30) as client:
        for artifacts in ARTIFACTS.values():
            for data in [manifest(artifacts), *artifacts.values()]:
                name = hashlib.sha256(data).hexdigest()
                r = client.put(f"/blob/{name}", content=data, headers=log.blob_headers(name))
                assert r.status_code in (200, 201), r.text
    log.cosign()
    policy = directory / "policy"
    policy.write_bytes(
        log.config.policy().to_bytes().replace(b"http://127.0.0.1:9", log.url.encode(), 1)
    )
    return CrateLog(log, policy, jobs + more)
