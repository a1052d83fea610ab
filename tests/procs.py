"""Real server processes for tests (re-exported from the launcher the CLI uses)."""

from synchronicity.launcher import ServerProcess, keygen

__all__ = ["ServerProcess", "keygen"]
