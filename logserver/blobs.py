"""A content-addressed blob store for manifests, artifacts, build logs and diff reports.

A blob is named by the hex SHA-256 of its bytes; ``put`` checks the name against the content,
so a blob can never be replaced by other bytes, and writes atomically (temp file, fsync,
rename). Sizes are bounded per blob and in total. Uploads to a log with witnesses must carry a
signature by one of the network's builders over ``synchronicity/blob/v1\\n<sha256>``.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

from logserver.core.errors import FormatError, OperationalError, VerificationError
from logserver.fsutil import atomic_write

BLOB_DOMAIN = b"synchronicity/blob/v1\n"
MAX_BLOB = 64 << 20
MAX_TOTAL = 16 << 30
_NAME = re.compile(r"[0-9a-f]{64}")


def check_name(name: str) -> str:
    if _NAME.fullmatch(name) is None:
        raise FormatError("blob name", "not 64 lowercase hex digits")
    return name


def upload_message(name: str) -> bytes:
    """The bytes a builder signs to upload the blob ``name``."""
    return BLOB_DOMAIN + check_name(name).encode()


class BlobStore:
    """Content-addressed files under ``root`` (``<2 hex>/<sha256>``), bounded per blob and in
    total; a name is checked against its bytes on every ``put``."""

    def __init__(self, root: Path, max_blob: int = MAX_BLOB, max_total: int = MAX_TOTAL) -> None:
        self.root = root
        self.max_blob = max_blob
        self.max_total = max_total
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._total = sum(p.stat().st_size for p in root.glob("??/*") if p.is_file())

    def _path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def has(self, name: str) -> bool:
        return self._path(check_name(name)).is_file()

    def get(self, name: str) -> bytes | None:
        try:
            return self._path(check_name(name)).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, name: str, data: bytes) -> bool:
        """Store ``data`` as ``name``; False if it was already there."""
        check_name(name)
        if len(data) > self.max_blob:
            raise FormatError("blob", f"larger than {self.max_blob} bytes")
        if hashlib.sha256(data).hexdigest() != name:
            raise VerificationError("the blob's SHA-256 is not its name")
        path = self._path(name)
        with self._lock:
            if path.is_file():
                return False
            if self._total + len(data) > self.max_total:
                raise OperationalError("the blob store is full")
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, data)
            self._total += len(data)
        return True
