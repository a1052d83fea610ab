"""Reading and making key files: signed-note (type 0x01) and cosignature (type 0x04) keys.

Private key files are always 0600: ``write_private_key`` writes them atomically with that mode
from the first byte (``logserver.fsutil.atomic_write``), and replacing a key (``--force``)
replaces the file, so a key file that was 0644 becomes 0600.
"""

from __future__ import annotations

from pathlib import Path

from logserver.core import cosignature, note
from logserver.fsutil import PRIVATE, atomic_write


def read_text_arg(value: str) -> str:
    """A key given literally, or the first line of the file it names."""
    path = Path(value)
    if "+" not in value or path.is_file():
        return path.read_text().strip()
    return value.strip()


def read_signer(path: str) -> note.Signer:
    """The signer in a private key file, of either type."""
    return cosignature.load_signer(Path(path).read_text().strip())


def read_verifier(value: str) -> note.Verifier:
    """A verifier of either type, from a vkey or a file holding one."""
    return cosignature.load_verifier(read_text_arg(value))


def generate(name: str, *, cosignature_key: bool = False) -> tuple[str, str]:
    if cosignature_key:
        return cosignature.generate_cosignature_key(name)
    return note.generate_key(name)


def write_private_key(path: Path, private: str) -> None:
    """Write (or replace) the private key file ``path``, readable by its owner only."""
    atomic_write(path, (private + "\n").encode(), PRIVATE)
