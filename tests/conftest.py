"""Shared fixtures: keys and real log server processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import ServerProcess, keygen


@dataclass
class RunningLog:
    proc: ServerProcess
    key: Path
    vkey: str
    origin: str
    data: Path

    @property
    def url(self) -> str:
        return self.proc.url


def start_log(
    tmp: Path, origin: str = "example.test/log", extra: list[str] | None = None
) -> RunningLog:
    tmp.mkdir(parents=True, exist_ok=True)
    key, vkey = keygen(tmp, origin)
    data = tmp / "data"
    proc = ServerProcess(
        ["log", "serve", "--key", str(key), "--data", str(data), "--listen", "127.0.0.1:0"]
        + (extra if extra is not None else ["--open"])
    ).start()
    return RunningLog(proc, key, vkey, origin, data)


@pytest.fixture
def open_log(tmp_path: Path) -> Iterator[RunningLog]:
    running = start_log(tmp_path)
    try:
        yield running
    finally:
        running.proc.stop()
