"""Verdict proof files: a reproduced verdict, its inclusion proof and a cosigned checkpoint,
checked offline; the verdict's signature names its network."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from logserver.core import canonical_json, note, proof, tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import FormatError, VerificationError
from logserver.core.policy import Policy
from logserver.protocol.entries import MAX_LEAF_BYTES, Group, Request, Verdict
from logserver.protocol.verdict_proof import VerdictBundle, check_artifact, verify_verdict_proof
from tests.protocol.test_entries import NETWORK, make_leaf, recipe

LOG = note.Signer("log.example", b"L" * 32)
WITNESS = CosignatureSigner("witness-1", b"W" * 32)
ARTIFACT = b"an itoa binary"
ARTIFACT_SHA256 = hashlib.sha256(ARTIFACT).hexdigest()
MANIFEST = canonical_json.encode(
    {"artifacts": [{"path": "bin/itoa", "sha256": ARTIFACT_SHA256, "size": len(ARTIFACT)}]}
)
RECIPE = canonical_json.encode(recipe())


def proof_file(
    signed_for: str, bundle_network: str, recipe_value: dict[str, Any] | None = None
) -> tuple[bytes, Policy]:
    """A one-leaf log holding a reproduced verdict signed for ``signed_for``."""
    recipe_value = recipe_value or recipe()
    digest = hashlib.sha256(MANIFEST).hexdigest()
    job = Request(recipe_value).job
    verdict = Verdict(
        job,
        "all-revealed",
        "reproduced",
        1,
        digest,
        ("witness-1",),
        (Group(digest, ("witness-1",)),),
    )
    leaf = make_leaf(verdict, LOG, 5, network=signed_for).to_bytes()
    tree = tlog.MemoryHashStore()
    tree.append_record(leaf)
    body = Checkpoint(LOG.name, 1, tree.tree_hash(1)).to_bytes()
    checkpoint = note.sign_note(body, LOG, WITNESS)
    recipe_bytes = canonical_json.encode(recipe_value)
    extra = VerdictBundle(leaf, MANIFEST, recipe_bytes, bundle_network).to_extra()
    policy = Policy.for_network(LOG.vkey, [(WITNESS.name, WITNESS.vkey)], 1)
    return proof.TlogProof(0, (), checkpoint, extra).to_bytes(), policy


def test_a_verdict_proof_checks_offline_for_its_network() -> None:
    data, policy = proof_file(NETWORK, NETWORK)
    reproduced = verify_verdict_proof(data, policy)
    assert check_artifact(reproduced, ARTIFACT) == ("bin/itoa", len(ARTIFACT))
    assert VerdictBundle.from_extra(proof.TlogProof.parse(data).extra or b"").network_id == NETWORK


def test_the_largest_recipe_a_request_can_carry_rides_along() -> None:
    """A crate with a big Cargo.lock still gets a whole bundle: the proof file's extra data
    holds a recipe as large as a request leaf may be (seen: a 55,719-byte recipe, whose bundle
    did not fit the 64 KiB of extra data a proof file had)."""
    big = recipe() | {"cargo_lock": "x" * (MAX_LEAF_BYTES - 1024)}
    leaf = make_leaf(Request(big), LOG, 5).to_bytes()
    assert MAX_LEAF_BYTES - 1024 < len(leaf) <= MAX_LEAF_BYTES
    data, policy = proof_file(NETWORK, NETWORK, big)
    assert len(data) <= proof.MAX_PROOF_FILE_BYTES
    reproduced = verify_verdict_proof(data, policy)
    assert check_artifact(reproduced, ARTIFACT) == ("bin/itoa", len(ARTIFACT))


def test_a_verdict_signed_for_another_network_is_refused() -> None:
    data, policy = proof_file("another.network", NETWORK)
    with pytest.raises(VerificationError, match="bad entry signature"):
        verify_verdict_proof(data, policy)


@pytest.mark.parametrize(
    "extra",
    [
        {"leaf": "", "manifest": "", "recipe": ""},
        {"leaf": "", "manifest": "", "network": 7, "recipe": ""},
        {"leaf": "", "manifest": "", "network": "", "recipe": ""},
        {"leaf": "", "manifest": "", "network": "n" * 256, "recipe": ""},
    ],
)
def test_the_bundle_names_a_valid_network(extra: dict[str, object]) -> None:
    with pytest.raises(FormatError, match="verdict bundle"):
        VerdictBundle.from_extra(canonical_json.encode(extra))
