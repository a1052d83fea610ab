"""Shared helpers for the consensus tests: deterministic keys, configs and certificates."""

from __future__ import annotations

import hashlib

from witness.consensus import crypto
from witness.consensus.messages import Timeout, Vote
from witness.consensus.types import Block, ConsensusConfig, QuorumCert, TimeoutCert

NETWORK_ID = b"test-network"


def signers(n: int) -> list[crypto.ReplicaSigner]:
    return [crypto.ReplicaSigner(hashlib.sha256(b"test key %d" % i).digest()) for i in range(n)]


def make_config(n: int = 4, network_id: bytes = NETWORK_ID) -> ConsensusConfig:
    keys = signers(n)
    return ConsensusConfig(
        network_id=network_id,
        replicas=tuple((f"w{i}", key.public_key) for i, key in enumerate(keys)),
        f=(n - 1) // 3,
        base_timeout_ms=1000,
        max_timeout_ms=8000,
        genesis_payload=b"0 genesis",
    )


def vote(config: ConsensusConfig, voter: int, round_: int, block_id: bytes) -> Vote:
    message = crypto.vote_message(config.network_id, round_, block_id)
    return Vote(round_, block_id, voter, signers(config.n)[voter].sign(message))


def make_qc(
    config: ConsensusConfig, round_: int, block_id: bytes, voters: list[int] | None = None
) -> QuorumCert:
    voters = list(range(config.quorum)) if voters is None else voters
    signatures = tuple((v, vote(config, v, round_, block_id).signature) for v in sorted(voters))
    return QuorumCert(round_, block_id, signatures)


def timeout(config: ConsensusConfig, signer: int, round_: int, high_qc: QuorumCert) -> Timeout:
    message = crypto.timeout_message(config.network_id, round_, high_qc.round)
    return Timeout(round_, signer, high_qc, None, signers(config.n)[signer].sign(message))


def make_tc(
    config: ConsensusConfig,
    round_: int,
    high_qcs: dict[int, QuorumCert],
) -> TimeoutCert:
    entries = tuple(
        (s, qc.round, timeout(config, s, round_, qc).signature)
        for s, qc in sorted(high_qcs.items())
    )
    best = max(high_qcs.values(), key=lambda qc: qc.round)
    return TimeoutCert(round_, entries, best)


def make_block(
    config: ConsensusConfig, round_: int, qc: QuorumCert, payload: bytes, author: int | None = None
) -> Block:
    author = round_ % config.n if author is None else author
    return Block.create(
        config.network_id, round_, author, qc, payload, signer=signers(config.n)[author]
    )
