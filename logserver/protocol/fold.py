"""Folding a log's leaves into the build protocol's state, and the parameters a network implies.

Pure: the leaves come from any :class:`LeafSource` (the log's LMDB store, a witness's mirror,
or a list in a test), so the log server, the witnesses and the monitor fold with one function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from logserver.core import note
from logserver.protocol.network import NetworkConfig
from logserver.protocol.rules import ProtocolConfig, ProtocolState, RetiredKey


class LeafSource(Protocol):
    """Where the leaves of a log can be read: its size, and a range of its leaves."""

    def size(self) -> int: ...

    def entries(self, start: int, end: int) -> Sequence[bytes]: ...


def protocol_config(network: NetworkConfig) -> ProtocolConfig:
    """The protocol parameters a network config implies (builders = its witnesses, with the
    keys they used before their current one, so that history verifies as it was written)."""
    return ProtocolConfig(
        log=note.Verifier.from_vkey(network.log.vkey),
        builders={w.name: note.Verifier(w.name, w.public_key) for w in network.witnesses},
        build_deadline_ms=network.builds.build_deadline_ms,
        reveal_deadline_ms=network.builds.reveal_deadline_ms,
        threshold=network.k,
        network_id=network.network_id,
        retired_keys={
            w.name: [
                RetiredKey(note.Verifier(w.name, old.public_key), old.until_ms)
                for old in w.previous_keys
            ]
            for w in network.witnesses
        },
    )


def fold(
    config: ProtocolConfig, source: LeafSource, size: int | None = None, chunk: int = 4096
) -> ProtocolState:
    """The protocol state after the first ``size`` leaves of ``source`` (default: all)."""
    state = ProtocolState(config)
    size = source.size() if size is None else size
    for start in range(0, size, chunk):
        for data in source.entries(start, min(size, start + chunk)):
            state.apply_bytes(data)
    return state
