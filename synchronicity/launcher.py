"""Start ``synchronicity`` server processes on this machine and find where they listen.

Used by the local network of ``rebuild``/``demo`` and by the tests. A child listens on
127.0.0.1 with a port the kernel picks; its port is read from the structured ``serving`` log line
it prints on stderr, and it is ready when ``/readyz`` answers 200.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from logserver.core.errors import OperationalError
from synchronicity.lifetime import PARENT_ENV


class ServerProcess:
    """A ``synchronicity`` server child process: started, found by the port it prints, ready
    when ``/readyz`` answers, stopped with SIGTERM or killed with SIGKILL."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.stderr_lines: list[str] = []
        self._pump: threading.Thread | None = None
        self._listening = threading.Event()

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start the process and wait until it serves (at most ``timeout`` seconds)."""
        self.spawn()
        self.wait_started(timeout)
        return self

    def spawn(self) -> None:
        """Start the process and read its stderr; ``wait_started`` waits for it to serve."""
        self.stderr_lines = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "synchronicity", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **(self.env or {}), PARENT_ENV: str(os.getpid())},
        )
        self._listening = threading.Event()
        self._pump = threading.Thread(target=self._read_stderr, daemon=True)
        self._pump.start()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stderr_lines.append(line)
            if not self._listening.is_set() and '"listen"' in line:
                try:
                    self.url = "http://" + json.loads(line)["listen"]
                except (ValueError, KeyError):
                    continue
                self._listening.set()
        self.proc.stderr.close()

    def wait_started(self, timeout: float) -> None:
        """Wait until the spawned process says where it listens and answers ``/readyz``."""
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise OperationalError(
                    f"server did not start: {self.args}\n" + "\n".join(self.stderr_lines[-30:])
                )
        self.wait_ready(deadline - time.monotonic())

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise OperationalError("server not ready:\n" + "\n".join(self.stderr_lines[-30:]))
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flush — what a power loss does to the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._join_pump()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._join_pump()

    def _join_pump(self) -> None:
        if self._pump is not None:
            self._pump.join(5)
            self._pump = None


def start_all(processes: Sequence[ServerProcess], timeout: float = 20.0) -> None:
    """Start ``processes`` at once (their start-ups overlap) and wait until each serves; if
    one does not, kill them all."""
    try:
        for process in processes:
            process.spawn()
        deadline = time.monotonic() + timeout
        for process in processes:
            process.wait_started(max(0.0, deadline - time.monotonic()))
    except BaseException:
        for process in processes:
            process.kill()
        raise


def keygen(tmp: Path, name: str, *, cosignature: bool = False) -> tuple[Path, str]:
    """Make a key pair with the real command; returns (private key path, vkey)."""
    out = tmp / f"{name.replace('/', '_')}.key"
    args = [sys.executable, "-m", "synchronicity", "keygen", name, "--out", str(out)]
    if cosignature:
        args.append("--cosignature")
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return out, done.stdout.strip()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel had free a moment ago (bound together, so distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
