"""Run the real ``synchronicity`` command with less installed than the test environment has.

- ``run_pynacl_only``: a Python that sees the standard library, PyNaCl and this checkout and
  nothing else (``-I -S``: no site-packages; a directory holding only ``nacl`` and its
  ``_cffi_backend``), as after ``pip install --no-deps synchronicity pynacl``: what the base
  install gives ``verify``. The wrapper first checks that httpx, fastapi, lmdb, docker and
  uvicorn are indeed not importable.
- ``run_blocked``: the full environment, but an import hook makes the server's and builder's
  third-party packages (fastapi, starlette, uvicorn, lmdb, docker, prometheus_client) and our
  server and builder modules unimportable: what the ``client`` extra gives ``install`` and
  ``fetch``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _cffi_backend  # type: ignore[import-untyped]
import nacl

from tests.support.paths import ROOT

ABSENT = ("httpx", "fastapi", "lmdb", "docker", "uvicorn")

_PYNACL_ONLY = """
import importlib.util, sys
sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]
present = [m for m in {absent!r} if importlib.util.find_spec(m) is not None]
if present:
    sys.exit(f"not isolated: {{present}} can be imported")
from synchronicity.cli import main
sys.exit(main(sys.argv[1:]))
"""

BLOCKED = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "lmdb",
    "docker",
    "prometheus_client",
    "builder",
    "witness",
    "logserver.http",
    "logserver.dashboard",
    "logserver.storage",
    "logserver.sequencer",
    "logserver.batcher",
)

_BLOCKING = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"{{name}} is blocked in this test", name=name)
        return None
sys.meta_path.insert(0, Blocker())
from synchronicity.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )


def run_pynacl_only(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``synchronicity ARGS`` with only the standard library and PyNaCl importable."""
    with tempfile.TemporaryDirectory(prefix="pynacl-only-") as site:
        os.symlink(Path(nacl.__file__).parent, Path(site) / "nacl")
        backend = Path(_cffi_backend.__file__)
        os.symlink(backend, Path(site) / backend.name)
        code = _PYNACL_ONLY.format(absent=ABSENT)
        return _run([sys.executable, "-I", "-S", "-c", code, site, str(ROOT), *args], timeout)


def run_blocked(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``synchronicity ARGS`` with the server and builder modules unimportable."""
    return _run([sys.executable, "-c", _BLOCKING.format(blocked=BLOCKED), *args], timeout)
