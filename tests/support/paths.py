"""Where the tests find the project and the shared test vectors."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root directory."""

VECTORS = ROOT.parent / "shared" / "vectors"
"""RFC 6962 / C2SP proof test vectors, shared beside the repository (``../shared/vectors``)."""

CRATE_FIXTURES = ROOT / "tests" / "fixtures" / "crates"
"""Small crates (reproducible, unreproducible, hostile) packed by the builder tests."""
