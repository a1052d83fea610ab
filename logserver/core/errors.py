"""The exception tree shared by every Synchronicity package.

Errors say who is at fault, in the manner of h11 and python-tuf::

    SynchronicityError
    ├── FormatError          bytes that do not parse: a note, checkpoint, proof, policy, tile path
    ├── VerificationError    well-formed data that does not check out: a signature, a proof
    │   ├── PolicyError      a checkpoint that lacks the signatures a trust policy demands
    │   └── ConsistencyError two checkpoints of one log that cannot both be true (a split view)
    ├── UsageError           the caller asked for something impossible (index beyond size, ...)
    └── OperationalError     the environment failed: network, disk, Docker
        └── RemoteError      a remote server sent bytes that do not parse or do not check out

The command line maps them to exit codes: VerificationError 1, FormatError and UsageError 2,
OperationalError (so RemoteError too) 3. A FormatError is raised for input the caller gave; a
client that fetched the bytes from a log, witness or builder raises RemoteError instead, since
what the peer sent is the peer's fault, never the caller's usage error (python-tuf's
``RepositoryError``).
"""

from __future__ import annotations


class SynchronicityError(Exception):
    """Base class of every error this project raises on purpose."""


class FormatError(SynchronicityError):
    """Input that does not parse. ``what`` names the format, ``reason`` says what is wrong."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"malformed {what}: {reason}")
        self.what = what
        self.reason = reason


class VerificationError(SynchronicityError):
    """Well-formed data that fails a cryptographic or structural check."""


class PolicyError(VerificationError):
    """A checkpoint does not satisfy a trust policy."""


class ConsistencyError(VerificationError):
    """Two checkpoints of one log are inconsistent: evidence that the log forked."""

    def __init__(self, reason: str, old: bytes, new: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.old = old
        self.new = new

    def __str__(self) -> str:
        return (
            f"{self.reason}\n--- previous checkpoint ---\n{self.old.decode(errors='replace')}"
            f"--- new checkpoint ---\n{self.new.decode(errors='replace')}"
        )


class UsageError(SynchronicityError):
    """The caller asked for something that cannot be done (local misuse)."""


class OperationalError(SynchronicityError):
    """The environment failed: network, disk, Docker, a server that is down."""


class RemoteError(OperationalError):
    """A remote server sent bytes that do not parse or do not check out.

    ``server`` names the peer (such as ``the log at http://...``), ``reason`` says what it sent.
    """

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(f"{server} sent {reason}")
        self.server = server
        self.reason = reason
