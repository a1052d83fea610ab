"""``synchronicity network up [--home DIR]``: keep the home's local network running.

It creates the network on first use (as ``rebuild`` does), starts the log and the
builder-witnesses as its children, holds the home's lock and says in ``<home>/running.json``
that the network is shared (synchronicity/localnet.py), so that ``rebuild`` and ``campaign``
of that home use it instead of starting their own, and prints the dashboard's URL (the log's
``/``) and the network config's path on stdout. A node that exits is started again. Ctrl-C,
SIGTERM or SIGHUP stops every node and ends with exit 0; SIGKILL takes the nodes down with it
(they die with their parent) and the kernel releases the lock.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from logserver.core.errors import OperationalError, UsageError
from synchronicity.cmd_network import NETWORK_FILE, POLICY_FILE
from synchronicity.launcher import ServerProcess
from synchronicity.localnet import HomeLock, LocalNetwork, Runner

RESTART_EVERY_S = 5.0  # a node that keeps dying is started again at most this often


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def up(args: argparse.Namespace) -> int:
    if args.max_builds < 1:
        raise UsageError("--max-builds must be at least 1")
    home = Path(args.home)
    lock = HomeLock(home)
    if not lock.acquire():
        runner = Runner.read(home)
        who = runner.describe() if runner is not None else "another process"
        raise OperationalError(f"the local network of {home} is already run by {who}")
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, a closed terminal
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    local: LocalNetwork | None = None
    try:
        lock.announce("network up", shared=True, ready=False)
        local = LocalNetwork.open_home(
            home, _say, extra_witness_args=["--max-builds", str(args.max_builds)]
        )
        _say("• starting the log and the builder-witnesses on 127.0.0.1")
        local.start()
        lock.announce("network up", shared=True, ready=True)
        print(f"dashboard: {local.log_url}/", flush=True)
        print(f"network: {local.dir / NETWORK_FILE}", flush=True)
        print(f"policy: {local.dir / POLICY_FILE}", flush=True)
        _say(f"• the network of {home} is up; rebuild and campaign of this home use it")
        _say("• Ctrl-C stops it")
        _keep_up(local, stopping)
        _say("• stopping the network")
    finally:
        if local is not None:
            local.stop()
        lock.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _keep_up(local: LocalNetwork, stopping: threading.Event) -> None:
    """Until told to stop, start again any node that exited (at most every few seconds)."""
    started_at: dict[int, float] = {}
    while not stopping.wait(1.0):
        for i, node in enumerate(local.nodes()):
            if node.proc is None or node.proc.poll() is None:
                continue
            if time.monotonic() - started_at.get(i, 0.0) < RESTART_EVERY_S:
                continue
            _say(f"• {_name(node)} exited ({node.proc.returncode}); starting it again")
            started_at[i] = time.monotonic()
            try:
                node.start()
            except OperationalError as e:
                _say(f"• {_name(node)} did not start: {str(e).splitlines()[0]}")


def _name(node: ServerProcess) -> str:
    return " ".join(node.args[:2])
