"""A real ``synchronicity log serve`` process with the dashboard's routes added.

Until ``create_app`` registers the dashboard itself, the dashboard tests and benchmark run the log
through this module: ``python -m tests.dashboard_runner log serve ...`` is the real command line
of ``synchronicity`` with ``add_dashboard`` appended to ``LogConfig.extra_routes``. Once the lead
wires it in, ``start_dashboard_log`` can become ``tests.conftest.start_log`` (``add_dashboard`` is
idempotent, so both at once also work).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from fastapi import FastAPI

from logserver.dashboard import add_dashboard
from logserver.errors import OperationalError
from logserver.server import LogService, create_app
from synchronicity import cli, cmd_log
from synchronicity.lifetime import PARENT_ENV
from tests.conftest import RunningLog
from tests.procs import ServerProcess, keygen

ROOT = Path(__file__).resolve().parents[1]
_INDEXED = re.compile(r'<meta name="indexed-size" content="(\d+)">')


def _create_app_with_dashboard(service: LogService) -> FastAPI:
    service.config.extra_routes.append(add_dashboard)
    return create_app(service)


class RunnerProcess(ServerProcess):
    """A ServerProcess whose command is this module instead of ``-m synchronicity``."""

    def start(self, timeout: float = 60.0) -> RunnerProcess:
        self.stderr_lines = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.dashboard_runner", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, **(self.env or {}), PARENT_ENV: str(os.getpid())},
        )
        found = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip("\n")
                self.stderr_lines.append(line)
                if not found.is_set() and '"listen"' in line:
                    self.url = "http://" + json.loads(line)["listen"]
                    found.set()
            self.proc.stderr.close()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise OperationalError("dashboard log did not start:\n" + self.stderr_tail())
        self.wait_ready(deadline - time.monotonic())
        return self

    def stderr_tail(self) -> str:
        return "\n".join(self.stderr_lines[-30:])


def start_dashboard_log(
    tmp: Path, origin: str = "example.test/log", extra: list[str] | None = None
) -> RunningLog:
    """Like ``tests.conftest.start_log``, with the dashboard."""
    tmp.mkdir(parents=True, exist_ok=True)
    key, vkey = keygen(tmp, origin)
    data = tmp / "data"
    proc = RunnerProcess(
        ["log", "serve", "--key", str(key), "--data", str(data), "--listen", "127.0.0.1:0"]
        + (extra if extra is not None else ["--open"])
    ).start()
    return RunningLog(proc, key, vkey, origin, data)


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


if __name__ == "__main__":
    # `log serve` builds its app with the create_app it imported: give it ours.
    vars(cmd_log)["create_app"] = _create_app_with_dashboard
    sys.exit(cli.main())
