"""The witness's co-signing rules: c2sp.org/tlog-witness ``add-checkpoint``, and its own log.

A witness keeps, per configured log origin, the latest checkpoint it cosigned (size and root)
and cosigns a new checkpoint only if it is signed by the log and provably extends that one.
The request body is::

    old <size of the witness's latest checkpoint, decimal, no leading zeros>
    <base64 consistency-proof hash>        (zero to 63 lines)
    <empty line>
    <the signed checkpoint note>

The work is split in three pure steps so the I/O edge can run the middle one inside the write
transaction that persists its result (check-and-persist, see witness/cosign/store.py):

1. :func:`prepare` — everything that needs no state: parse (400), origin lookup (404), log
   signature (403), ``old`` not above the checkpoint size (400). Gives a :class:`Submission`
   or a :class:`Rejected`.
2. :func:`decide` — against the stored :class:`TreeHead` (or None): ``old`` must equal the
   stored size, 0 when none (409 with the stored size as a ``text/x.tlog.size`` body); the
   consistency proof must verify (422); an equal size must carry the same root (409). Gives
   :class:`Accepted` with the new tree head, or :class:`Rejected`.
3. :func:`cosignature_lines` — the 200 body: one cosignature/v1 note signature line per
   witness key, at a timestamp the caller reads from its clock.

Hence a checkpoint smaller than the stored one is never cosigned (its ``old`` is either above
its size, 400, or not the stored size, 409), nor a second root at the stored size (409), nor a
tree that the proof does not link to the stored one (422).

The node co-signs its own network's log only after consensus commits a checkpoint, with the
same store and a simpler rule, :func:`decide_own_checkpoint` (its mirror has already checked
that the checkpoint extends the previous one). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from logserver.core.checkpoint import MAX_TREE_SIZE, Checkpoint
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import FormatError, UsageError, VerificationError
from logserver.core.note import (
    MAX_NOTE_BYTES,
    NoteSignature,
    Verifier,
    VerifierSet,
    b64decode_strict,
    open_note,
    parse_decimal,
    split_note,
)
from logserver.core.tlog import HASH_SIZE, check_tree

MAX_PROOF_LINES = 63
"""The spec's bound on consistency-proof lines."""

MAX_REQUEST_BYTES = 256 * 1024
"""Largest request body accepted: a 64 KiB checkpoint with dozens of signatures fits easily."""

SIZE_CONTENT_TYPE = "text/x.tlog.size"
"""The content type of a 409 body that tells the client the witness's latest size."""

_OLD_PREFIX = b"old "


class Status(IntEnum):
    """The HTTP status codes c2sp.org/tlog-witness assigns to add-checkpoint outcomes."""

    OK = 200
    BAD_REQUEST = 400
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409
    UNPROCESSABLE = 422


@dataclass(frozen=True)
class TreeHead:
    """What the witness remembers of a log: the size and root of the latest cosigned tree."""

    size: int
    root_hash: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.size < MAX_TREE_SIZE:
            raise UsageError(f"tree size {self.size} out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise UsageError("a tree head's root hash is 32 bytes")


@dataclass(frozen=True)
class AddCheckpointRequest:
    """A syntactically valid request body: old size, proof hashes and the signed note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes
    checkpoint: Checkpoint


@dataclass(frozen=True)
class Submission:
    """A request whose checkpoint is signed by its log's key, ready to be decided."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: Checkpoint
    checkpoint_text: bytes

    @property
    def origin(self) -> str:
        return self.checkpoint.origin


@dataclass(frozen=True)
class Rejected:
    """A refusal. ``known_size`` is set exactly for the 409 whose body is the stored size."""

    status: Status
    detail: str
    known_size: int | None = None

    def size_body(self) -> bytes:
        """The ``text/x.tlog.size`` body of a stale-``old`` 409: the size and a newline."""
        if self.known_size is None:
            raise UsageError("only a stale-size conflict has a size body")
        return b"%d\n" % self.known_size


@dataclass(frozen=True)
class Accepted:
    """The checkpoint may be cosigned once ``new_head`` is durably the stored tree head."""

    submission: Submission
    new_head: TreeHead


Decision = Accepted | Rejected


# ----- configuration ---------------------------------------------------------------------------


class WitnessedLogs:
    """The logs this witness serves: origin -> the Ed25519 note keys that sign its checkpoints."""

    def __init__(self, keys: Mapping[str, Iterable[Verifier]]) -> None:
        self._by_origin: dict[str, VerifierSet] = {}
        for origin, verifiers in keys.items():
            _check_origin(origin)
            known = VerifierSet(verifiers)
            if not len(known):
                raise UsageError(f"log {origin!r} is configured without a key")
            self._by_origin[origin] = known

    @classmethod
    def from_pairs(
        cls, pairs: Iterable[tuple[str, str]], reserved: Iterable[str] = ()
    ) -> WitnessedLogs:
        """From (origin, vkey) pairs; an origin may appear several times (key rotation).

        ``reserved`` lists origins that must never be cosigned through add-checkpoint — above
        all the network's own log, whose checkpoints are cosigned only after consensus.
        """
        forbidden = set(reserved)
        keys: dict[str, list[Verifier]] = {}
        for origin, vkey in pairs:
            if origin in forbidden:
                raise UsageError(f"log {origin!r} is reserved and cannot be witnessed here")
            keys.setdefault(origin, []).append(Verifier.from_vkey(vkey))
        return cls(keys)

    def verifiers(self, origin: str) -> VerifierSet | None:
        return self._by_origin.get(origin)

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(self._by_origin)

    def __len__(self) -> int:
        return len(self._by_origin)


def _check_origin(origin: str) -> None:
    try:
        Checkpoint(origin, 0, bytes(HASH_SIZE))
    except UsageError as exc:
        raise UsageError(f"invalid log origin {origin!r}: {exc}") from exc


# ----- parsing ---------------------------------------------------------------------------------


def parse_request(body: bytes) -> AddCheckpointRequest:
    """Parse an add-checkpoint body strictly; FormatError says what is wrong."""
    if len(body) > MAX_REQUEST_BYTES:
        raise FormatError("add-checkpoint request", f"larger than {MAX_REQUEST_BYTES} bytes")
    separator = body.find(b"\n\n")
    if separator < 0:
        raise FormatError("add-checkpoint request", "no empty line before the checkpoint")
    header, note = body[:separator], body[separator + 2 :]
    lines = header.split(b"\n")
    old_line, proof_lines = lines[0], lines[1:]
    if not old_line.startswith(_OLD_PREFIX):
        raise FormatError("add-checkpoint request", "the first line must be 'old <size>'")
    old_size = parse_decimal(_ascii(old_line[len(_OLD_PREFIX) :]), "old size", MAX_TREE_SIZE)
    if len(proof_lines) > MAX_PROOF_LINES:
        raise FormatError("consistency proof", f"more than {MAX_PROOF_LINES} lines")
    proof = tuple(_proof_hash(line) for line in proof_lines)
    if len(note) > MAX_NOTE_BYTES:
        raise FormatError("checkpoint note", f"larger than {MAX_NOTE_BYTES} bytes")
    text, _ = split_note(note)
    return AddCheckpointRequest(old_size, proof, note, Checkpoint.parse(text))


def _ascii(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FormatError("add-checkpoint request", "non-ASCII byte in the header") from exc


def _proof_hash(line: bytes) -> bytes:
    digest = b64decode_strict(_ascii(line), "consistency proof line")
    if len(digest) != HASH_SIZE:
        raise FormatError("consistency proof line", f"{len(digest)} bytes, want {HASH_SIZE}")
    return digest


# ----- the three steps -------------------------------------------------------------------------


def prepare(body: bytes, logs: WitnessedLogs) -> Submission | Rejected:
    """The state-free checks, in the spec's order: 400 parse, 404 origin, 403 signature, 400."""
    try:
        request = parse_request(body)
    except FormatError as exc:
        return Rejected(Status.BAD_REQUEST, str(exc))
    checkpoint = request.checkpoint
    verifiers = logs.verifiers(checkpoint.origin)
    if verifiers is None:
        return Rejected(Status.NOT_FOUND, f"unknown log origin {checkpoint.origin!r}")
    try:
        opened = open_note(request.note, verifiers)
    except VerificationError as exc:
        return Rejected(Status.FORBIDDEN, f"no valid signature by the log's key: {exc}")
    if request.old_size > checkpoint.size:
        return Rejected(
            Status.BAD_REQUEST,
            f"old size {request.old_size} is larger than the checkpoint size {checkpoint.size}",
        )
    return Submission(request.old_size, request.proof, checkpoint, opened.text)


def decide(submission: Submission, stored: TreeHead | None) -> Decision:
    """Compare with the stored tree head; run inside the transaction that persists the result."""
    checkpoint = submission.checkpoint
    known_size = 0 if stored is None else stored.size
    if submission.old_size != known_size:
        return Rejected(
            Status.CONFLICT,
            f"old size {submission.old_size} is not the witness's latest size {known_size}",
            known_size=known_size,
        )
    new_head = TreeHead(checkpoint.size, checkpoint.root_hash)
    accepted = Accepted(submission, new_head)
    if submission.old_size == 0 and submission.proof:
        return Rejected(Status.UNPROCESSABLE, "the consistency proof from size 0 must be empty")
    if checkpoint.size == known_size:
        if submission.proof:
            return Rejected(Status.UNPROCESSABLE, "the proof between equal sizes must be empty")
        if stored is not None and stored.root_hash != checkpoint.root_hash:
            return Rejected(
                Status.CONFLICT,
                f"the witness cosigned a different root at size {known_size}: the log forked",
            )
        return accepted
    if stored is None or known_size == 0:
        return accepted  # every tree extends the empty tree
    try:
        check_tree(
            submission.proof, checkpoint.size, checkpoint.root_hash, known_size, stored.root_hash
        )
    except (VerificationError, FormatError) as exc:
        return Rejected(Status.UNPROCESSABLE, f"consistency proof rejected: {exc}")
    return accepted


def cosignature_lines(
    checkpoint_text: bytes, signers: Sequence[CosignatureSigner], timestamp: int
) -> bytes:
    """The 200 body: a cosignature/v1 note signature line by each witness key."""
    if not signers:
        raise UsageError("a witness needs at least one cosignature key")
    return b"".join(
        NoteSignature(s.name, s.key_id, s.sign_at(checkpoint_text, timestamp)).to_line()
        for s in signers
    )


def process(
    body: bytes,
    logs: WitnessedLogs,
    stored: Mapping[str, TreeHead],
    signers: Sequence[CosignatureSigner],
    timestamp: int,
) -> tuple[Decision, bytes]:
    """All three steps over an in-memory state: (decision, 200 body or b"") — for tests and
    simulations; a real witness persists ``Accepted.new_head`` before releasing the body."""
    prepared = prepare(body, logs)
    if isinstance(prepared, Rejected):
        return prepared, b""
    decision = decide(prepared, stored.get(prepared.origin))
    if isinstance(decision, Rejected):
        return decision, b""
    return decision, cosignature_lines(prepared.checkpoint_text, signers, timestamp)


# ----- the node's own log ----------------------------------------------------------------------


def decide_own_checkpoint(
    origin: str, checkpoint: Checkpoint, stored: TreeHead | None
) -> TreeHead | None:
    """The node's rule for its own log ``origin``: the head to store before co-signing, or None.

    With ``s`` the stored head and ``c`` the committed checkpoint:

    - ``c.origin != origin``: refuse (VerificationError), never co-sign another log here;
    - ``c.size == s.size`` and ``c.root != s.root``: refuse, never two roots for one size;
    - ``c.size <= s.size``: None, nothing new (never a smaller checkpoint after a larger one);
    - otherwise ``TreeHead(c.size, c.root)``, to be persisted before the cosignature leaves.

    Run it inside the transaction that persists its result (``CosignStore.claim_cosignature``).
    """
    if checkpoint.origin != origin:
        raise VerificationError("refusing to co-sign another log's checkpoint")
    if stored is not None:
        if checkpoint.size == stored.size and checkpoint.root_hash != stored.root_hash:
            raise VerificationError(f"refusing a second root for size {checkpoint.size}")
        if checkpoint.size <= stored.size:
            return None
    return TreeHead(checkpoint.size, checkpoint.root_hash)
