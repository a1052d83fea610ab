"""The witness mirror: follows a real log through its entry bundles and catches a lying log."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from logserver.core import note, tiles
from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import VerificationError
from tests.conftest import RunningLog
from witness.mirror import BundleFetcher, Mirror


def _fetcher(url: str) -> tuple[httpx.Client, BundleFetcher]:
    client = httpx.Client(base_url=url)

    def fetch(tile: tiles.Tile) -> bytes:
        r = client.get("/" + tile.path)
        r.raise_for_status()
        return r.content

    return client, fetch


def test_mirror_follows_and_detects_lies(open_log: RunningLog, tmp_path: Path) -> None:
    verifier = note.Verifier.from_vkey(open_log.vkey)
    signer = note.Signer.from_private_key(open_log.key.read_text().strip())
    client, fetch = _fetcher(open_log.url)
    mirror = Mirror(tmp_path / "mirror", verifier, fetch)
    with client:
        for i in range(300):
            client.post("/add-entry", content=b"m%d" % i)
        cp300 = client.get("/checkpoint").content
        assert mirror.advance(cp300).size == 300
        assert mirror.store.entries(0, 300) == [b"m%d" % i for i in range(300)]
        for i in range(300, 520):
            client.post("/add-entry", content=b"m%d" % i)
        cp520 = client.get("/checkpoint").content
        mirror.advance(cp520)
        assert mirror.store.latest_checkpoint() == cp520
        mirror.advance(cp300)  # an older checkpoint is checked against the mirror's tree

        # The log signs a root its entries do not produce: refused, nothing stored.
        client.post("/add-entry", content=b"m520")
        real = Checkpoint.parse(note.split_note(client.get("/checkpoint").content)[0])
        lie = Checkpoint(real.origin, real.size, bytes(32))
        with pytest.raises(VerificationError, match="does not match"):
            mirror.advance(note.sign_note(lie.to_bytes(), signer))
        assert mirror.size == 520
        # A fork at an old size: refused.
        fork = Checkpoint(real.origin, 300, bytes(32))
        with pytest.raises(VerificationError):
            mirror.advance(note.sign_note(fork.to_bytes(), signer))
        # A checkpoint signed by someone else: refused.
        other = note.Signer(real.origin, b"\x01" * 32)
        with pytest.raises(VerificationError):
            mirror.advance(note.sign_note(real.to_bytes(), other))
        assert mirror.advance(client.get("/checkpoint").content).size == 521
    mirror.close()
