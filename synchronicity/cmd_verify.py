"""``synchronicity verify``: check a tlog-proof file offline against a trust policy."""

from __future__ import annotations

import argparse
from pathlib import Path

from logserver import proof
from logserver.errors import UsageError
from logserver.policy import Policy


def verify(args: argparse.Namespace) -> int:
    policy = Policy.parse(Path(args.policy).read_bytes())
    proof_bytes = Path(args.proof).read_bytes()
    if args.entry is not None:
        entry = Path(args.entry).read_bytes()
    else:
        extra = proof.TlogProof.parse(proof_bytes).extra
        if extra is None:
            raise UsageError("the proof carries no entry in its extra data; give --entry FILE")
        entry = extra
    verified = proof.verify_proof(proof_bytes, entry, policy)
    cp = verified.checkpoint
    cosigners = ", ".join(sorted(verified.cosigners)) or "no witnesses"
    print(
        f"OK: entry {verified.index} is in {cp.origin} at size {cp.size} (cosigned by {cosigners})"
    )
    return 0
