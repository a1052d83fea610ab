"""Verdict proof files: one tlog-proof that says "this artifact is the reproduced output of
this source", checkable offline (spec/proof-file.md).

The proof's ``extra`` data carries a canonical-JSON bundle::

    {"leaf": base64(verdict leaf), "manifest": base64(manifest), "network": <network id>,
     "recipe": base64(recipe)}

The inclusion proof covers the verdict leaf. The manifest is bound by the verdict's output
digest (its SHA-256) and the recipe by the job id (its SHA-256), so neither needs a proof of
its own. Checking an artifact means: the checkpoint satisfies the policy, the leaf is included,
it is a ``reproduced`` verdict the log signed for the bundle's network, the manifest and recipe
hash to what it names, and the artifact's SHA-256 is in the manifest. Pure: no I/O.

A verdict of another outcome (``not-reproduced``, ``failed``) has a bundle too, with an empty
manifest, so that its recipe says which crate it is about: :func:`verify_verdict` checks such a
proof (everything but the manifest) and :func:`verify_verdict_proof` refuses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from logserver.core import canonical_json, proof
from logserver.core.errors import FormatError, UsageError, VerificationError
from logserver.core.policy import Policy
from logserver.protocol.entries import Verdict
from logserver.protocol.signed import Leaf, network_id_bytes, verify_entry


@dataclass(frozen=True)
class VerdictBundle:
    """The extra data of a verdict proof file: the verdict leaf, the output manifest, the
    recipe, and the network the verdict was signed for, so that a consumer can check an
    artifact offline."""

    leaf: bytes
    manifest: bytes
    recipe: bytes
    network_id: str

    def to_extra(self) -> bytes:
        return canonical_json.encode(
            {
                "leaf": base64.b64encode(self.leaf).decode(),
                "manifest": base64.b64encode(self.manifest).decode(),
                "network": self.network_id,
                "recipe": base64.b64encode(self.recipe).decode(),
            }
        )

    @classmethod
    def from_extra(cls, extra: bytes) -> VerdictBundle:
        obj = canonical_json.decode_object(extra, max_bytes=proof.MAX_EXTRA_BYTES)
        if set(obj) != {"leaf", "manifest", "network", "recipe"}:
            raise FormatError("verdict bundle", "members must be leaf, manifest, network, recipe")
        parts = []
        for key in ("leaf", "manifest", "recipe"):
            value = obj[key]
            if not isinstance(value, str):
                raise FormatError("verdict bundle", f"{key} is not a string")
            try:
                parts.append(base64.b64decode(value, validate=True))
            except binascii.Error as e:
                raise FormatError("verdict bundle", f"{key} is not base64") from e
        network = obj["network"]
        if not isinstance(network, str):
            raise FormatError("verdict bundle", "network is not a string")
        try:
            network_id_bytes(network)
        except UsageError as e:
            raise FormatError("verdict bundle", str(e)) from e
        leaf, manifest, recipe = parts
        return cls(leaf, manifest, recipe, network)


@dataclass(frozen=True)
class Reproduced:
    """What a verified verdict proof establishes."""

    verdict: Verdict
    index: int
    origin: str
    size: int
    cosigners: frozenset[str]
    recipe: dict[str, Any]
    artifacts: dict[str, tuple[str, int]]  # sha256 -> (path, size)

    @property
    def name(self) -> str:
        return f"{self.recipe.get('name')}@{self.recipe.get('version')}"


def _artifacts(manifest: bytes) -> dict[str, tuple[str, int]]:
    obj = canonical_json.decode_object(manifest)
    items = obj.get("artifacts")
    if not isinstance(items, list):
        raise FormatError("manifest", "no artifacts list")
    out = {}
    for item in items:
        if not isinstance(item, dict) or not {"path", "sha256", "size"} <= set(item):
            raise FormatError("manifest", "an artifact lacks path, sha256 or size")
        size = item["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FormatError("manifest", "an artifact's size is not a non-negative integer")
        out[str(item["sha256"])] = (str(item["path"]), size)
    return out


@dataclass(frozen=True)
class ProvenVerdict:
    """What a verified verdict proof of any outcome establishes: the log signed this verdict
    for the bundle's network, it is in a checkpoint the policy accepts, and ``recipe`` is the
    job's recipe (``manifest``: the reproduced outputs, empty for any other outcome)."""

    verdict: Verdict
    index: int
    origin: str
    size: int
    cosigners: frozenset[str]
    recipe: dict[str, Any]
    manifest: bytes


def verify_verdict(proof_file: bytes, policy: Policy) -> ProvenVerdict:
    """Check a verdict proof file of any outcome against a policy (steps 1-5 of
    spec/proof-file.md; a verdict not ``reproduced`` must carry an empty manifest)."""
    parsed = proof.TlogProof.parse(proof_file)
    if parsed.extra is None:
        raise FormatError("verdict proof", "no verdict bundle in the extra data")
    bundle = VerdictBundle.from_extra(parsed.extra)
    verified = proof.verify_proof(proof_file, bundle.leaf, policy)
    leaf = Leaf.parse(bundle.leaf)
    verdict = leaf.entry.entry
    if not isinstance(verdict, Verdict):
        raise VerificationError("the proven entry is not a verdict")
    logs = [log.verifier for log in policy.logs if log.verifier.name == verified.checkpoint.origin]
    # A verdict is authored by the log itself, and signed for its network.
    verify_entry(leaf.entry, logs[0], bundle.network_id)
    if hashlib.sha256(bundle.recipe).hexdigest() != verdict.job:
        raise VerificationError("the recipe does not hash to the verdict's job id")
    if verdict.output_digest is not None:
        if hashlib.sha256(bundle.manifest).hexdigest() != verdict.output_digest:
            raise VerificationError("the manifest does not hash to the verdict's output digest")
    elif bundle.manifest:
        raise VerificationError(f"a {verdict.outcome} verdict has no manifest, but one is given")
    return ProvenVerdict(
        verdict,
        verified.index,
        verified.checkpoint.origin,
        verified.checkpoint.size,
        verified.cosigners,
        canonical_json.decode_object(bundle.recipe),
        bundle.manifest,
    )


def verify_verdict_proof(proof_file: bytes, policy: Policy) -> Reproduced:
    """Check a verdict proof file against a policy; raise unless it proves a reproduction."""
    proven = verify_verdict(proof_file, policy)
    verdict = proven.verdict
    if verdict.outcome != "reproduced" or verdict.output_digest is None:
        raise VerificationError(f"the verdict is {verdict.outcome!r}, not reproduced")
    return Reproduced(
        verdict,
        proven.index,
        proven.origin,
        proven.size,
        proven.cosigners,
        proven.recipe,
        _artifacts(proven.manifest),
    )


def check_artifact(reproduced: Reproduced, data: bytes) -> tuple[str, int]:
    """The manifest entry (path, size) of an artifact's bytes, or VerificationError."""
    digest = hashlib.sha256(data).hexdigest()
    found = reproduced.artifacts.get(digest)
    if found is None or found[1] != len(data):
        raise VerificationError(f"the artifact (sha256 {digest}) is not in the reproduced outputs")
    return found
