"""Sans-I/O HotStuff consensus in its DiemBFT v4 / Jolteon form; see spec/consensus.md.

Import the pieces a driver needs from here: the config and types, the messages, the
replica and its actions, the safety state and the signer.
"""

from __future__ import annotations

from witness.consensus.blocktree import CommittedBlock
from witness.consensus.certificates import MessageRejected
from witness.consensus.crypto import ReplicaSigner
from witness.consensus.messages import (
    Message,
    Proposal,
    SyncRequest,
    SyncResponse,
    Timeout,
    Vote,
    message_from_bytes,
)
from witness.consensus.replica import (
    Action,
    Broadcast,
    CommitBlocks,
    Persist,
    Replica,
    Send,
    SetTimer,
)
from witness.consensus.safety import DIEMBFT_V4, SafetyRules, SafetyState
from witness.consensus.types import Block, ConsensusConfig, QuorumCert, TimeoutCert

__all__ = [
    "DIEMBFT_V4",
    "Action",
    "Block",
    "Broadcast",
    "CommitBlocks",
    "CommittedBlock",
    "ConsensusConfig",
    "Message",
    "MessageRejected",
    "Persist",
    "Proposal",
    "QuorumCert",
    "Replica",
    "ReplicaSigner",
    "SafetyRules",
    "SafetyState",
    "Send",
    "SetTimer",
    "SyncRequest",
    "SyncResponse",
    "Timeout",
    "TimeoutCert",
    "Vote",
    "message_from_bytes",
]
