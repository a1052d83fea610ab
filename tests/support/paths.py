"""Where the tests find the project and the shared test vectors."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root directory."""

VECTORS = ROOT / "tests" / "fixtures" / "vectors"
"""RFC 6962 / RFC 9162 proof test vectors (transparency-dev/merkle's testdata, Apache-2.0; see
its README.md), copied into the repository so that a clone alone runs every case."""

CRATE_FIXTURES = ROOT / "tests" / "fixtures" / "crates"
"""Small crates (reproducible, unreproducible, hostile) packed by the builder tests."""
