"""A network of real processes on this machine: one log and n witnesses on 127.0.0.1.

Used by the main job (``rebuild`` without ``--network``), ``campaign``, ``network up`` and the
fault tests. Each node is a ``synchronicity`` child process with its data under one directory,
so a network can be stopped, killed with SIGKILL node by node, and started again on the same
data.

A home (``--home``, default ``.synchronicity``) has at most one network running at a time:
whoever runs it holds an exclusive ``flock`` on ``<home>/network.lock`` (the kernel lets go of
it when that process dies, however it dies) and says in ``<home>/running.json`` who it is and
whether others may use the network. ``network up`` shares its network; ``rebuild`` and
``campaign`` use a shared one that answers ``/readyz`` (:func:`home_network`), or, when none
runs, start their own for as long as they run; they never start a second one on a home.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from logserver.core.errors import OperationalError
from logserver.fsutil import atomic_write
from logserver.protocol.network import BuildRules, NetworkConfig
from logserver.protocol.requester import RequestSigner
from synchronicity.cmd_network import (
    NETWORK_FILE,
    REQUESTER_FILE,
    add_requester,
    init_network,
    read_requester,
)
from synchronicity.launcher import ServerProcess, free_ports, start_all

LOCK_FILE = "network.lock"
RUNNING_FILE = "running.json"
NETWORK_DIR = "network"


class LocalNetwork:
    """A log and n witness processes on 127.0.0.1 with their data under one directory."""

    def __init__(
        self,
        directory: Path,
        extra_log_args: list[str] | None = None,
        misbehave: dict[int, str] | None = None,
        extra_witness_args: list[str] | None = None,
    ) -> None:
        self.dir = directory
        self.config = NetworkConfig.parse((directory / NETWORK_FILE).read_bytes())
        self.log = ServerProcess(
            ["log", "serve", "--key", str(directory / "log.key"), "--data", str(directory / "log")]
            + ["--network", str(directory / NETWORK_FILE), "--listen", self._listen(0)]
            + (extra_log_args or [])
        )
        self.witnesses = [
            ServerProcess(
                ["witness", "run", "--config", str(directory / NETWORK_FILE)]
                + ["--key", str(directory / f"witness-{i}.key")]
                + ["--data", str(directory / f"witness-{i}")]
                + (["--misbehave", misbehave[i]] if misbehave and i in misbehave else [])
                + (extra_witness_args or [])
            )
            for i in range(1, self.config.n + 1)
        ]

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        witnesses: int = 4,
        round_ms: int = 500,
        max_round_ms: int = 4000,
        entries: str = "protocol",
        builds: BuildRules | None = None,
    ) -> LocalNetwork:
        """A new network config with fresh keys and free ports, under ``directory``."""
        init_network(
            directory,
            witnesses=witnesses,
            ports=free_ports(witnesses + 1),
            round_ms=round_ms,
            max_round_ms=max_round_ms,
            entries=entries,
            builds=builds,
        )
        return cls(directory)

    def _listen(self, index: int) -> str:
        url = self.config.log.url if index == 0 else self.config.witnesses[index - 1].url
        return url.removeprefix("http://")

    @property
    def log_url(self) -> str:
        return self.config.log.url

    def requester(self) -> RequestSigner:
        """The local user's requester key (``network init`` writes it), for signed requests."""
        return read_requester(self.dir / REQUESTER_FILE, self.config)

    def start(self) -> LocalNetwork:
        start_all([self.log, *self.witnesses])
        return self

    def stop(self) -> None:
        for w in self.witnesses:
            w.stop()
        self.log.stop()

    @classmethod
    def open_home(
        cls,
        home: Path,
        say: Callable[[str], None],
        extra_witness_args: list[str] | None = None,
    ) -> LocalNetwork:
        """The local network of ``home`` (``<home>/network``), created on first use."""
        directory = home / NETWORK_DIR
        if (directory / NETWORK_FILE).exists():
            say(f"• reusing the local network in {directory}")
            add_requester(directory)  # a network made before requesters: give it the user's key
            return cls(directory, extra_witness_args=extra_witness_args)
        say(f"• creating a local network (a log and 4 builder-witnesses) in {directory}")
        cls.create(directory)
        return cls(directory, extra_witness_args=extra_witness_args)

    def nodes(self) -> list[ServerProcess]:
        """The log's process, then the witnesses'."""
        return [self.log, *self.witnesses]


@dataclass(frozen=True)
class Runner:
    """Who runs a home's network (``<home>/running.json``): its pid and command, whether other
    commands may use the network (``shared``), and whether it is up (``ready``)."""

    pid: int
    command: str
    shared: bool
    ready: bool

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def read(cls, home: Path) -> Runner | None:
        """The runner ``<home>/running.json`` names; None if there is none or it is unreadable
        (a runner writing it, or one that died: the lock says which)."""
        try:
            value = json.loads((home / RUNNING_FILE).read_bytes())
            return cls(
                int(value["pid"]),
                str(value["command"]),
                value["shared"] is True,
                value["ready"] is True,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"`synchronicity {self.command}` (pid {self.pid})"


class HomeLock:
    """The exclusive lock of a home's network: held by the one process that runs it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; whether this process now holds it."""
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def announce(self, command: str, *, shared: bool, ready: bool) -> None:
        """Say who runs the network (only the holder may)."""
        assert self._fd is not None, "announce() without the lock"
        runner = Runner(os.getpid(), command, shared, ready)
        atomic_write(self.home / RUNNING_FILE, runner.to_json(), 0o644)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.home / RUNNING_FILE).unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def network_ready(config: NetworkConfig) -> str | None:
    """None if the log and a quorum of the witnesses answer ``/readyz`` with 200, else why not."""

    def ready(url: str) -> bool:
        try:
            return httpx.get(url + "/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    if not ready(config.log.url):
        return f"the log at {config.log.url} is not ready"
    up = sum(ready(w.url) for w in config.witnesses)
    if up < config.quorum:
        return f"{up} of {config.n} witnesses are ready, fewer than the quorum of {config.quorum}"
    return None


@contextlib.contextmanager
def home_network(
    home: Path, command: str, say: Callable[[str], None], wait: float = 60.0
) -> Iterator[tuple[NetworkConfig, Path]]:
    """The network of ``home`` for ``command``: (its config, its directory).

    The one ``network up`` runs, if it runs (waiting up to ``wait`` seconds for it to be
    ready); else this process starts the home's network and stops it on exit. Another
    command running the home's network for itself is an OperationalError: a home never runs
    two networks.
    """
    lock = HomeLock(home)
    deadline = time.monotonic() + wait
    while not lock.acquire():
        runner = Runner.read(home)
        if runner is not None and not runner.shared:
            raise OperationalError(
                f"the local network of {home} is run by {runner.describe()} for itself; "
                f"wait for it to end, or share one: synchronicity network up --home {home}"
            )
        why = "it is starting"
        if runner is not None and runner.ready:
            config = NetworkConfig.parse((home / NETWORK_DIR / NETWORK_FILE).read_bytes())
            why = network_ready(config) or ""
            if not why:
                say(f"• using the running network of {home} ({runner.describe()})")
                yield config, home / NETWORK_DIR
                return
        if time.monotonic() > deadline:
            raise OperationalError(f"the local network of {home} is not ready: {why}")
        time.sleep(0.2)
    try:
        local = LocalNetwork.open_home(home, say)
        lock.announce(command, shared=False, ready=False)
        say("• starting the log and the builder-witnesses on 127.0.0.1")
        try:
            local.start()
            lock.announce(command, shared=False, ready=True)
            yield local.config, local.dir
        finally:
            local.stop()
    finally:
        lock.release()


@contextlib.contextmanager
def chosen_network(
    network: str | None, home: str, command: str, say: Callable[[str], None]
) -> Iterator[tuple[NetworkConfig, Path]]:
    """``--network FILE`` (a running network's config) if given, else ``home_network``."""
    if network:
        yield NetworkConfig.parse(Path(network).read_bytes()), Path(network).parent
    else:
        with home_network(Path(home), command, say) as found:
            yield found
