"""``synchronicity verify`` and ``synchronicity attest``: offline checks of proof files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from logserver.core import proof
from logserver.core.errors import FormatError, UsageError
from logserver.core.policy import Policy
from logserver.protocol.verdict_proof import VerdictBundle, check_artifact, verify_verdict_proof

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://synchronicity.dev/reproduced/v1"


def _is_verdict_proof(proof_bytes: bytes) -> bool:
    extra = proof.TlogProof.parse(proof_bytes).extra
    if extra is None:
        return False
    try:
        VerdictBundle.from_extra(extra)
    except FormatError:
        return False
    return True


def verify(args: argparse.Namespace) -> int:
    policy = Policy.parse(Path(args.policy).read_bytes())
    proof_bytes = Path(args.proof).read_bytes()
    if args.entry is None and _is_verdict_proof(proof_bytes):
        done = verify_verdict_proof(proof_bytes, policy)
        cosigners = ", ".join(sorted(done.cosigners)) or "no witnesses"
        print(
            f"OK: {done.name} was reproduced by {len(done.verdict.agreeing)} builders "
            f"(verdict at index {done.index} of {done.origin}, size {done.size}, "
            f"cosigned by {cosigners})"
        )
        for artifact in args.artifact or []:
            path, size = check_artifact(done, Path(artifact).read_bytes())
            print(f"OK: {artifact} is the reproduced {path} ({size} bytes)")
        return 0
    if args.artifact:
        raise UsageError("--artifact needs a verdict proof file (from synchronicity rebuild)")
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


def attest(args: argparse.Namespace) -> int:
    """Print the verdict of a verified proof as an in-toto Statement v1."""
    policy = Policy.parse(Path(args.policy).read_bytes())
    done = verify_verdict_proof(Path(args.proof).read_bytes(), policy)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": path, "digest": {"sha256": sha256}}
            for sha256, (path, _) in sorted(done.artifacts.items(), key=lambda kv: kv[1][0])
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "crate": {"name": done.recipe.get("name"), "version": done.recipe.get("version")},
            "recipe": done.recipe,
            "job": done.verdict.job,
            "outcome": done.verdict.outcome,
            "outputDigest": done.verdict.output_digest,
            "agreeingBuilders": list(done.verdict.agreeing),
            "threshold": done.verdict.threshold,
            "log": {"origin": done.origin, "index": done.index, "treeSize": done.size},
            "witnesses": sorted(done.cosigners),
        },
    }
    print(json.dumps(statement, indent=2, sort_keys=True))
    return 0
