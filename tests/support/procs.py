"""Real server processes for tests (re-exported from the launcher the CLI uses)."""

from __future__ import annotations

import subprocess
import sys

from synchronicity.launcher import ServerProcess, keygen

__all__ = ["ServerProcess", "keygen", "run_cli"]


def run_cli(
    *args: str, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real ``synchronicity`` command; its exit code is for the test to judge."""
    return subprocess.run(
        [sys.executable, "-m", "synchronicity", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
