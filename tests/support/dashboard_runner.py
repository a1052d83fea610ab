"""Helpers for the dashboard tests. The dashboard is part of the real ``log serve``, so the
log runs exactly as a user starts it; these names are kept for the tests that use them."""

from __future__ import annotations

import re
import time

import httpx

from logserver.core.errors import OperationalError
from tests.conftest import start_log as start_dashboard_log
from tests.support.procs import ServerProcess as RunnerProcess

__all__ = ["RunnerProcess", "start_dashboard_log", "wait_indexed"]

_INDEXED = re.compile(r'<meta name="indexed-size" content="(\d+)">')


def wait_indexed(url: str, size: int, timeout: float = 30.0) -> None:
    """Wait until the dashboard's index has folded ``size`` leaves (its overview says so)."""
    deadline = time.monotonic() + timeout
    while True:
        found = _INDEXED.search(httpx.get(url + "/", timeout=10).text)
        if found is not None and int(found.group(1)) >= size:
            return
        if time.monotonic() > deadline:
            raise OperationalError(f"the dashboard did not index {size} leaves")
        time.sleep(0.02)
