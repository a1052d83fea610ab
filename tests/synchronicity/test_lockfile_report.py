"""``verify --proofs DIR --lockfile FILE``: the pure report, on real signed proofs made here.

A small log (in memory) holds verdicts of every outcome, each for a crates recipe; its
checkpoint is signed by the log and cosigned by a witness, and each proof file carries the
verdict bundle (recipe, and manifest for ``reproduced``). The lockfile parser, the matching of
proofs to packages (by recipe, never by file name), every status, the ranking of several
proofs about one package (all combinations), the table and the JSON are checked; then the real
command on these files, for its exit codes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from logserver.core import canonical_json, note, proof, tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import FormatError
from logserver.core.policy import Policy
from logserver.protocol.entries import Failure, Group, Outcome, Verdict, job_id
from logserver.protocol.signed import Leaf, sign_entry
from logserver.protocol.verdict_proof import VerdictBundle
from synchronicity.lockfile_report import (
    RANK,
    LockedCrate,
    ProofFinding,
    build_report,
    examine_proof,
    parse_lockfile,
    printable,
    render_table,
    report_json,
)
from tests.support.procs import run_cli

LOG = note.Signer("log.example", b"L" * 32)
WITNESS = CosignatureSigner("witness-1", b"W" * 32)
NETWORK = "lock.test"
POLICY = Policy.for_network(LOG.vkey, [(WITNESS.name, WITNESS.vkey)], 1)
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
SPARSE = "sparse+https://index.crates.io/"


def sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def crate_recipe(name: str, version: str, crate_sha256: str, **more: Any) -> dict[str, Any]:
    return {
        "ecosystem": "crates",
        "name": name,
        "version": version,
        "crate_sha256": crate_sha256,
        "source": "crates.io",
    } | more


@dataclass(frozen=True)
class Made:
    """A verdict to put in the log: for the recipe, of this outcome."""

    recipe: dict[str, Any]
    outcome: Outcome


def _verdict(job: str, outcome: Outcome, manifest: bytes) -> Verdict:
    if outcome == "reproduced":
        d = hashlib.sha256(manifest).hexdigest()
        return Verdict(job, "all-revealed", outcome, 1, d, ("b1",), (Group(d, ("b1",)),))
    if outcome == "not-reproduced":
        d1, d2 = sorted([sha("one"), sha("two")])
        return Verdict(
            job, "all-revealed", outcome, 2, None, (), (Group(d1, ("b1",)), Group(d2, ("b2",)))
        )
    return Verdict(job, "all-revealed", outcome, 1, None, (), (), failures=(Failure("b1", 0),))


def make_proofs(made: Sequence[Made]) -> list[bytes]:
    """One log holding a verdict for each of ``made``; the proof file of each."""
    tree = tlog.MemoryHashStore()
    leaves, bundles = [], []
    for i, m in enumerate(made):
        recipe = canonical_json.encode(m.recipe)
        manifest = b""
        if m.outcome == "reproduced":
            artifact = f"artifact of {i}".encode()
            manifest = canonical_json.encode(
                {
                    "artifacts": [
                        {
                            "path": "lib.rlib",
                            "sha256": hashlib.sha256(artifact).hexdigest(),
                            "size": len(artifact),
                        }
                    ]
                }
            )
        verdict = _verdict(job_id(m.recipe), m.outcome, manifest)
        leaf = Leaf(sign_entry(verdict, LOG, NETWORK), 1_000 + i).to_bytes()
        tree.append_record(leaf)
        leaves.append(leaf)
        bundles.append(VerdictBundle(leaf, manifest, recipe, NETWORK).to_extra())
    size = len(leaves)
    checkpoint = note.sign_note(
        Checkpoint(LOG.name, size, tlog.tree_hash(size, tree)).to_bytes(), LOG, WITNESS
    )
    return [
        proof.TlogProof(
            i, tuple(tlog.prove_record(size, i, tree)), checkpoint, bundles[i]
        ).to_bytes()
        for i in range(size)
    ]


def lockfile(*packages: tuple[str, str, str | None, str | None], version: int = 4) -> str:
    lines = [f"version = {version}", ""]
    for name, ver, source, checksum in packages:
        lines += ["[[package]]", f'name = "{name}"', f'version = "{ver}"']
        if source is not None:
            lines.append(f'source = "{source}"')
        if checksum is not None:
            lines.append(f'checksum = "{checksum}"')
        lines.append("")
    return "\n".join(lines)


def tamper(data: bytes) -> bytes:
    """Change one proof hash of a proof file (the line after ``index``)."""
    lines = data.split(b"\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(b"index ")) + 1
    raw = bytearray(note.b64decode_strict(lines[at].decode(), "hash"))
    raw[0] ^= 1
    lines[at] = note.b64encode(bytes(raw)).encode()
    return b"\n".join(lines)


# ------------------------------------------------------------------------ the lockfile


def test_every_source_of_a_lockfile_is_read() -> None:
    text = lockfile(
        ("app", "0.1.0", None, None),
        ("itoa", "1.0.11", CRATES_IO, sha("itoa")),
        ("serde", "1.0.200", SPARSE, sha("serde")),
        ("forked", "0.3.0", "git+https://example.com/forked?rev=1#abc", None),
        ("inhouse", "2.0.0", "sparse+https://crates.example.com/", sha("inhouse")),
    )
    packages = parse_lockfile(text)
    assert [(p.name, p.kind) for p in packages] == [
        ("app", "path"),
        ("forked", "git"),
        ("inhouse", "registry"),
        ("itoa", "crates.io"),
        ("serde", "crates.io"),
    ]
    assert packages[3] == LockedCrate("itoa", "1.0.11", CRATES_IO, sha("itoa"))


def test_format_1_keeps_its_checksums_in_metadata() -> None:
    text = (
        '[[package]]\nname = "itoa"\nversion = "1.0.11"\n'
        f'source = "{CRATES_IO}"\n\n[metadata]\n'
        f'"checksum itoa 1.0.11 ({CRATES_IO})" = "{sha("itoa")}"\n'
    )
    assert parse_lockfile(text) == [LockedCrate("itoa", "1.0.11", CRATES_IO, sha("itoa"))]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not toml [", "not TOML"),
        ("version = 4\n", "no \\[\\[package\\]\\]"),
        ("version = 9\n[[package]]\nname='a'\nversion='1.0.0'\n", "format version"),
        ("nonsense = 1\n[[package]]\nname='a'\nversion='1.0.0'\n", "unknown top-level"),
        ("[[package]]\nname='a b'\nversion='1.0.0'\n", "name"),
        ("[[package]]\nname='a'\nversion='one'\n", "version"),
        ("[[package]]\nname='a'\nversion='1.0.0'\nextra=1\n", "unknown package keys"),
        (f"[[package]]\nname='a'\nversion='1.0.0'\nsource='{CRATES_IO}'\n", "checksum"),
        (
            f"[[package]]\nname='a'\nversion='1.0.0'\nsource='{CRATES_IO}'\nchecksum='ab'\n",
            "checksum",
        ),
        ("[[package]]\nname='a'\nversion='1.0.0'\nsource='git+x'\nchecksum=7\n", "not a string"),
        ("[[package]]\nname='a'\nversion='1.0.0'\nsource='ftp://x'\n", "unknown source"),
        (
            "[[package]]\nname='a'\nversion='1.0.0'\n[[package]]\nname='a'\nversion='1.0.0'\n",
            "twice",
        ),
        ("package = 3\n", "package"),
    ],
)
def test_a_malformed_lockfile_is_refused(text: str, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        parse_lockfile(text)


# ------------------------------------------------------------------------ proof files

ITOA = crate_recipe("itoa", "1.0.11", sha("itoa"))
SERDE = crate_recipe("serde", "1.0.200", sha("serde"))
LIBC = crate_recipe("libc", "0.2.150", sha("libc"))
PROOFS = make_proofs(
    [Made(ITOA, "reproduced"), Made(SERDE, "failed"), Made(LIBC, "not-reproduced")]
)


def test_a_proof_of_each_outcome_verifies_and_names_its_crate() -> None:
    found = [examine_proof(f"p{i}", data, POLICY) for i, data in enumerate(PROOFS)]
    assert [(f.crate, f.outcome, f.error) for f in found] == [
        ("itoa@1.0.11", "reproduced", None),
        ("serde@1.0.200", "failed", None),
        ("libc@0.2.150", "not-reproduced", None),
    ]
    assert found[0].crate_sha256 == sha("itoa") and found[0].index == 0 and found[0].agreeing == 1
    assert found[1].origin == LOG.name and found[1].job == job_id(SERDE)


def test_a_proof_that_does_not_verify_still_says_whom_it_is_about() -> None:
    tampered = examine_proof("t", tamper(PROOFS[0]), POLICY)
    assert tampered.crate == "itoa@1.0.11" and tampered.outcome is None
    assert tampered.error is not None and "inclusion proof" in tampered.error
    other_log = Policy.for_network(note.Signer("log.example", b"X" * 32).vkey, [], 0)
    refused = examine_proof("o", PROOFS[0], other_log)
    assert refused.crate == "itoa@1.0.11" and refused.error is not None


def test_files_that_name_no_crate() -> None:
    junk = examine_proof("junk", b"not a proof", POLICY)
    assert junk.crate is None and junk.error is not None and "proof file" in junk.error
    parsed = proof.TlogProof.parse(PROOFS[1])
    bundle = VerdictBundle.from_extra(parsed.extra or b"")
    legacy = proof.TlogProof(parsed.index, parsed.hashes, parsed.checkpoint, bundle.leaf)
    old = examine_proof("old", legacy.to_bytes(), POLICY)  # the verdict leaf alone: no recipe
    assert old.crate is None and "not a verdict bundle, so it names no crate" in (old.error or "")
    bare = proof.TlogProof(parsed.index, parsed.hashes, parsed.checkpoint, None)
    assert "no extra data" in (examine_proof("bare", bare.to_bytes(), POLICY).error or "")
    npm = make_proofs(
        [Made({"ecosystem": "npm", "name": "left-pad", "version": "1.0.0"}, "reproduced")]
    )
    assert "names no crates.io crate" in (examine_proof("npm", npm[0], POLICY).error or "")


def test_a_failed_verdict_carries_no_manifest() -> None:
    parsed = proof.TlogProof.parse(PROOFS[1])
    bundle = VerdictBundle.from_extra(parsed.extra or b"")
    padded = VerdictBundle(bundle.leaf, b"{}", bundle.recipe, bundle.network_id)
    data = proof.TlogProof(parsed.index, parsed.hashes, parsed.checkpoint, padded.to_extra())
    found = examine_proof("padded", data.to_bytes(), POLICY)
    assert found.crate == "serde@1.0.200" and "has no manifest" in (found.error or "")


# ------------------------------------------------------------------------ the report


def _packages() -> list[LockedCrate]:
    return parse_lockfile(
        lockfile(
            ("app", "0.1.0", None, None),
            ("itoa", "1.0.11", CRATES_IO, sha("itoa")),
            ("serde", "1.0.200", SPARSE, sha("serde")),
            ("libc", "0.2.150", CRATES_IO, sha("libc")),
            ("memchr", "2.7.0", CRATES_IO, sha("memchr")),
            ("forked", "0.3.0", "git+https://example.com/forked#abc", None),
        )
    )


def test_each_package_gets_its_status() -> None:
    # The file names lie: matching reads the recipes.
    files = ["serde-1.0.200.tlog-proof", "itoa-1.0.11.tlog-proof", "memchr-2.7.0.tlog-proof"]
    findings = [examine_proof(name, data, POLICY) for name, data in zip(files, PROOFS, strict=True)]
    report = build_report(_packages(), findings)
    status = {p.package.name: p.status for p in report.packages}
    assert status == {
        "app": "skipped",
        "forked": "skipped",
        "itoa": "reproduced",
        "libc": "not-reproduced",
        "memchr": "missing",
        "serde": "failed",
    }
    itoa = next(p for p in report.packages if p.package.name == "itoa")
    assert itoa.proof is not None and itoa.proof.file == "serde-1.0.200.tlog-proof"
    assert "verdict #0 of log.example, 1 builders agree" in itoa.detail
    assert report.counts == {
        "reproduced": 1,
        "not-reproduced": 1,
        "failed": 1,
        "mismatch": 0,
        "invalid": 0,
        "missing": 1,
        "skipped": 2,
    }
    assert not report.ok and report.unused == ()
    only = build_report([p for p in _packages() if p.name in ("app", "itoa", "forked")], findings)
    assert only.ok  # skipped packages do not fail the check
    assert {f.crate for f in only.unused} == {"serde@1.0.200", "libc@0.2.150"}


def test_other_bytes_are_a_mismatch_and_a_bad_proof_is_invalid() -> None:
    other_bytes = make_proofs(
        [Made(crate_recipe("itoa", "1.0.11", sha("a local fork")), "reproduced")]
    )
    report = build_report(
        _packages(),
        [
            examine_proof("fork", other_bytes[0], POLICY),
            examine_proof("bad", tamper(PROOFS[1]), POLICY),
        ],
    )
    by_name = {p.package.name: p for p in report.packages}
    assert by_name["itoa"].status == "mismatch"
    assert sha("a local fork") in by_name["itoa"].detail and sha("itoa") in by_name["itoa"].detail
    assert by_name["serde"].status == "invalid" and by_name["serde"].detail.startswith("bad: ")
    assert by_name["libc"].status == "missing"


def _finding(kind: str) -> ProofFinding:
    """A proof about itoa 1.0.11 that gives it status ``kind``."""
    if kind == "reproduced":
        return examine_proof("r", PROOFS[0], POLICY)
    if kind == "invalid":
        return examine_proof("i", tamper(PROOFS[0]), POLICY)
    if kind == "mismatch":
        made = Made(crate_recipe("itoa", "1.0.11", sha("x")), "reproduced")
    else:
        made = Made(ITOA, "failed" if kind == "failed" else "not-reproduced")
    return examine_proof(kind[0], make_proofs([made])[0], POLICY)


FINDINGS = {kind: _finding(kind) for kind in RANK}


@pytest.mark.parametrize(
    "kinds",
    [c for n in range(1, len(RANK) + 1) for c in itertools.combinations(RANK, n)],
    ids="+".join,
)
def test_of_several_proofs_the_best_stands(kinds: tuple[str, ...]) -> None:
    itoa = [p for p in _packages() if p.name == "itoa"]
    findings = [FINDINGS[k] for k in reversed(kinds)]
    (result,) = build_report(itoa, findings).packages
    assert result.status == kinds[0]  # RANK order: the best first
    assert len(result.others) == len(kinds) - 1
    assert [f.file for f in result.others] == [FINDINGS[k].file for k in kinds[1:]]


def test_the_table_and_the_json() -> None:
    findings = [examine_proof(f"p{i}.tlog-proof", data, POLICY) for i, data in enumerate(PROOFS)]
    findings.append(ProofFinding("odd\x1b[31m.tlog-proof", error="junk\x07"))
    report = build_report(_packages(), findings)
    table = render_table(report)
    lines = table.splitlines()
    assert lines[0].split() == ["PACKAGE", "VERSION", "STATUS", "DETAIL"]
    assert lines[1].split()[:3] == ["app", "0.1.0", "skipped"]
    assert any(line.split()[:3] == ["itoa", "1.0.11", "reproduced"] for line in lines)
    assert (
        "4 packages from crates.io: 1 reproduced, 1 not-reproduced, 1 failed, 1 missing; " in table
    )
    assert "2 skipped (not from crates.io)" in table
    assert "1 proof files are about no locked package:" in table
    assert "\x1b" not in table and "\x07" not in table and "odd\\x1b[31m" in table
    data = report_json(report)
    assert json.loads(json.dumps(data)) == data and data["ok"] is False
    itoa = next(p for p in data["packages"] if p["name"] == "itoa")
    assert itoa["status"] == "reproduced" and itoa["proof"]["file"] == "p0.tlog-proof"
    assert itoa["proof"]["verdict_index"] == 0 and itoa["checksum"] == sha("itoa")
    assert data["counts"]["missing"] == 1
    assert data["unused_proofs"][0]["error"] == "junk\x07"
    assert printable("a" * 200, 10) == "a" * 9 + "…"


# ------------------------------------------------------------------------ the command


def _write(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)


def test_the_command_exit_codes(tmp_path: Path) -> None:
    policy = tmp_path / "policy"
    policy.write_bytes(POLICY.to_bytes())
    proofs = tmp_path / "proofs"
    _write(proofs, {f"{i}.tlog-proof": data for i, data in enumerate(PROOFS)} | {"x.txt": b"no"})
    lock = tmp_path / "Cargo.lock"
    base = ("verify", "--policy", str(policy), "--proofs", str(proofs), "--lockfile", str(lock))

    lock.write_text(
        lockfile(("app", "0.1.0", None, None), ("itoa", "1.0.11", CRATES_IO, sha("itoa")))
    )
    ok = run_cli(*base)
    assert ok.returncode == 0, ok.stderr
    assert "itoa" in ok.stdout and "1 packages from crates.io: 1 reproduced" in ok.stdout

    lock.write_text(
        lockfile(
            ("itoa", "1.0.11", CRATES_IO, sha("itoa")), ("libc", "0.2.150", CRATES_IO, sha("libc"))
        )
    )
    bad = run_cli(*base, "--json")
    assert bad.returncode == 1, bad.stderr
    report = json.loads(bad.stdout)
    assert [p["status"] for p in report["packages"]] == ["reproduced", "not-reproduced"]
    assert len(report["unused_proofs"]) == 1  # serde's proof; x.txt is not a proof file

    lock.write_text("version = 4\n[[package]]\nname = 'a'\n")
    malformed = run_cli(*base)
    assert malformed.returncode == 2 and "Cargo.lock" in malformed.stderr
    lock.write_bytes(b"\xff\xfe")
    assert run_cli(*base).returncode == 2
    policy.write_text("not a policy\n")
    lock.write_text(lockfile(("itoa", "1.0.11", CRATES_IO, sha("itoa"))))
    assert run_cli(*base).returncode == 2
    policy.write_bytes(POLICY.to_bytes())
    for args in (
        ("verify", "--policy", str(policy), "--proofs", str(proofs)),
        (*base, "--proof", str(proofs / "0.tlog-proof")),
        ("verify", "--policy", str(policy), "--proof", str(proofs / "0.tlog-proof"), "--json"),
        (
            "verify",
            "--policy",
            str(policy),
            "--proofs",
            str(tmp_path / "none"),
            "--lockfile",
            str(lock),
        ),
    ):
        usage = run_cli(*args)
        assert usage.returncode == 2, (args, usage.stderr)
        assert "Traceback" not in usage.stderr
