"""``synchronicity verify`` and ``synchronicity attest``: offline checks of proof files.

``verify --proofs DIR --lockfile FILE`` checks a whole dependency tree: the pure report is
:mod:`synchronicity.lockfile_report`; this module only reads the files and prints it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from logserver.core import proof
from logserver.core.errors import FormatError, UsageError
from logserver.core.policy import Policy
from logserver.core.proof import MAX_PROOF_FILE_BYTES
from logserver.protocol.verdict_proof import Reproduced, VerdictBundle, verify_verdict_proof
from synchronicity.bundle import check_artifact_file, is_bundle, verify_bundle
from synchronicity.lockfile_report import (
    build_report,
    examine_proof,
    parse_lockfile,
    render_table,
    report_json,
)

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


def _say_reproduced(done: Reproduced) -> None:
    cosigners = ", ".join(sorted(done.cosigners)) or "no witnesses"
    print(
        f"OK: {done.name} was reproduced by {len(done.verdict.agreeing)} builders "
        f"(verdict at index {done.index} of {done.origin}, size {done.size}, "
        f"cosigned by {cosigners})"
    )


def _say_artifacts(done: Reproduced, artifact: Path) -> None:
    """A file that is a reproduced output, or a bundle (fetch --bundle) whose every artifact is."""
    for name, path, size in check_artifact_file(done, artifact):
        print(f"OK: {name} is the reproduced {path} ({size} bytes)")


def _verify_bundles(artifacts: list[str], policy: Policy) -> int:
    """Without --proof: each artifact is a bundle, checked against the proof it carries."""
    for artifact in artifacts:
        if not is_bundle(Path(artifact)):
            raise UsageError(
                f"{artifact} is not a bundle (a tar from fetch --bundle): give --proof"
            )
        done, checked = verify_bundle(Path(artifact), policy)
        _say_reproduced(done)
        for name, size in checked:
            print(f"OK: {artifact}:{name} is the reproduced {name} ({size} bytes)")
    return 0


def _read_lockfile(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError("Cargo.lock", f"{path} is not UTF-8") from e


def _read_bounded(path: Path) -> bytes:
    """A proof file's bytes; one byte over the limit is enough for parsing to refuse it."""
    with path.open("rb") as f:
        return f.read(MAX_PROOF_FILE_BYTES + 1)


def verify_lockfile(args: argparse.Namespace, policy: Policy) -> int:
    """``verify --proofs DIR --lockfile FILE [--json]``: exit 0 if every crates.io package is
    reproduced, 1 if any is not (missing, not-reproduced, failed, invalid, mismatch)."""
    if args.proofs is None or args.lockfile is None:
        raise UsageError("--proofs DIR and --lockfile FILE go together")
    if args.proof is not None or args.entry is not None or args.artifact:
        raise UsageError("--lockfile checks a directory of proofs: no --proof, --entry, --artifact")
    packages = parse_lockfile(_read_lockfile(Path(args.lockfile)))
    directory = Path(args.proofs)
    if not directory.is_dir():
        raise UsageError(f"--proofs {directory}: not a directory")
    findings = [
        examine_proof(path.name, _read_bounded(path), policy)
        for path in sorted(directory.glob("*.tlog-proof"))
        if path.is_file()
    ]
    report = build_report(packages, findings)
    if args.json:
        print(json.dumps(report_json(report), indent=2))
    else:
        print(render_table(report), end="")
    return 0 if report.ok else 1


def verify(args: argparse.Namespace) -> int:
    policy = Policy.parse(Path(args.policy).read_bytes())
    if args.proofs is not None or args.lockfile is not None:
        return verify_lockfile(args, policy)
    if args.json:
        raise UsageError("--json goes with --proofs DIR --lockfile FILE")
    if args.proof is None:
        if not args.artifact or args.entry is not None:
            raise UsageError(
                "give --proof FILE, --artifact with bundles (which carry their proof), "
                "or --proofs DIR with --lockfile FILE"
            )
        return _verify_bundles(args.artifact, policy)
    proof_bytes = Path(args.proof).read_bytes()
    if args.entry is None and _is_verdict_proof(proof_bytes):
        done = verify_verdict_proof(proof_bytes, policy)
        _say_reproduced(done)
        for artifact in args.artifact or []:
            _say_artifacts(done, Path(artifact))
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
