"""A real log that runs the build protocol, holding the leaves of ``ProtocolFixture``.

The dashboard shows builds only for a log whose rules checked every leaf (a ``--network`` log
with ``"entries": "protocol"``). :class:`ProtocolLog` writes such a network: a fresh log key,
and as its four witnesses the fixture's builders (same names and seeds), so that the fixture's
leaves are what this log's sequencer would have written. ``prefill`` puts leaves into the log's
LMDB while the log is stopped, one checkpoint per leaf as a log answering one submission at a
time writes them; the real ``log serve --network`` then folds every leaf through the protocol's
rules at start-up and refuses to serve a log that breaks one. ``cosign`` has a quorum of the
builders cosign the latest checkpoint, so that the log publishes it.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import httpx

from logserver.blobs import upload_message
from logserver.core import note
from logserver.core.cosignature import CosignatureSigner
from logserver.protocol.network import BuildRules, LogInfo, NetworkConfig, WitnessInfo
from logserver.storage import LogStore
from synchronicity.launcher import ServerProcess
from tests.support.dashboard_fixtures import ProtocolFixture

ORIGIN = "example.test/log"
NETWORK_ID = "dashboard-test"


class ProtocolLog:
    """A network config, a log data directory and the ``log serve --network`` process."""

    def __init__(self, directory: Path, start_ms: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.signer = note.Signer(ORIGIN, os.urandom(32))
        self.key = directory / "log.key"
        self.key.write_text(self.signer.private_key + "\n")
        # The log's clock is the real one: leaves stamped from now on never fall due early.
        start = int(time.time() * 1000) if start_ms is None else start_ms
        self.fixture = ProtocolFixture(self.signer, start_ms=start, network_id=NETWORK_ID)
        self.cosigners = [
            CosignatureSigner(name, note.parse_private_key(builder.private_key).key)
            for name, builder in sorted(self.fixture.builders.items())
        ]
        self.config = NetworkConfig(
            network_id=NETWORK_ID,
            log=LogInfo(ORIGIN, self.signer.vkey, "http://127.0.0.1:9"),
            witnesses=tuple(
                WitnessInfo(c.name, c.vkey, "http://127.0.0.1:9") for c in self.cosigners
            ),
            f=1,
            builds=BuildRules(build_deadline_ms=600_000, reveal_deadline_ms=600_000),
        )
        (directory / "network.json").write_bytes(self.config.to_json())
        self.data = directory / "data"
        self.proc = ServerProcess(
            ["log", "serve", "--key", str(self.key), "--data", str(self.data)]
            + ["--network", str(directory / "network.json"), "--listen", "127.0.0.1:0"]
        )
        self.size = 0

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def origin(self) -> str:
        return ORIGIN

    @property
    def vkey(self) -> str:
        return self.signer.vkey

    def prefill(self, leaves: list[bytes]) -> int:
        """Append ``leaves`` to the stopped log's LMDB, one signed checkpoint each."""
        store = LogStore(self.data, ORIGIN)
        try:
            for leaf in leaves:
                store.append_batch([leaf], lambda cp: note.sign_note(cp.to_bytes(), self.signer))
            self.size = store.size()
        finally:
            store.close()
        return self.size

    def start(self) -> ProtocolLog:
        self.proc.start()
        return self

    def stop(self) -> None:
        self.proc.stop()

    def cosign(self, count: int = 3) -> int:
        """``count`` builders cosign the latest checkpoint; the published size afterwards."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            text, _ = note.split_note(client.get("/latest-checkpoint").content)
            published = 0
            for cosigner in self.cosigners[:count]:
                r = client.post("/cosignature", content=note.sign_note(text, cosigner))
                assert r.status_code == 200, r.text
                published = r.json()["published_size"]
        return int(published)

    def blob_headers(self, name: str, builder: str = "builder-1") -> dict[str, str]:
        """The ``X-Blob-Signature`` of a builder for uploading the blob ``name``."""
        signer = self.fixture.builders[builder]
        signature = base64.b64encode(signer.sign(upload_message(name))).decode()
        return {"X-Blob-Signature": f"{builder} {signature}"}
