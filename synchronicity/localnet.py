"""A network of real processes on this machine: one log and n witnesses on 127.0.0.1.

Used by the main job (``rebuild`` without ``--network``) and by the fault tests. Each node is a
``synchronicity`` child process with its data under one directory, so a network can be stopped,
killed with SIGKILL node by node, and started again on the same data.
"""

from __future__ import annotations

from pathlib import Path

from logserver.protocol.network import BuildRules, NetworkConfig
from logserver.protocol.requester import RequestSigner
from synchronicity.cmd_network import NETWORK_FILE, REQUESTER_FILE, init_network, read_requester
from synchronicity.launcher import ServerProcess, free_ports


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
        self.log.start()
        for w in self.witnesses:
            w.start()
        return self

    def stop(self) -> None:
        for w in self.witnesses:
            w.stop()
        self.log.stop()
