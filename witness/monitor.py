"""A monitor: follow a log's checkpoints, prove each extends the last, recompute every verdict.

The decision is pure (``next_state``): given the last verified checkpoint, a new one and a
consistency proof, it says whether the new one replaces the old or is evidence of a fork. The
``Monitor`` class adds the edges: an HTTP client for the log and an atomically written state file
holding the last verified checkpoint note. ``VerdictChecker`` (pure) replays a protocol log's
leaves: it checks they hash to the verified checkpoint and that every close and verdict the log
wrote is what the build protocol's rules compute. ``IndexAudit`` folds the same leaves into the
crate index (``logserver.protocol.crate_index``) and compares what the log serves at
``/crates/...`` with it: a log that hides a verdict there (a ``not-reproduced`` behind an older
``reproduced``, so that ``install`` takes the older one) is caught.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from logserver.core import canonical_json, tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import (
    ConsistencyError,
    FormatError,
    OperationalError,
    RemoteError,
    SynchronicityError,
    VerificationError,
)
from logserver.core.policy import Policy
from logserver.fsutil import atomic_write
from logserver.protocol.crate_index import (
    CrateIndex,
    CrateKey,
    VerdictRow,
    rows_of,
    versions_of,
)
from logserver.protocol.rules import ProtocolConfig, ProtocolState

STATE_FILE = "checkpoint"


@dataclass(frozen=True)
class Observation:
    """What one check saw: the checkpoint now trusted and whether it moved forward."""

    checkpoint: Checkpoint
    note: bytes
    advanced: bool


def next_state(
    old: Checkpoint | None,
    old_note: bytes,
    new: Checkpoint,
    new_note: bytes,
    consistency_proof: Sequence[bytes] | None,
) -> Observation:
    """Decide whether ``new`` may follow ``old``; raise ConsistencyError if they conflict.

    ``consistency_proof`` proves ``old`` within ``new`` and is needed only when ``new`` is larger.
    """
    if old is None:
        return Observation(new, new_note, True)
    if new.origin != old.origin:
        raise ConsistencyError("the checkpoint is from another log", old_note, new_note)
    if new.size < old.size:
        raise ConsistencyError(
            f"the log went back from size {old.size} to size {new.size}", old_note, new_note
        )
    if new.size == old.size:
        if new.root_hash != old.root_hash:
            raise ConsistencyError(
                f"two different roots for tree size {new.size}", old_note, new_note
            )
        return Observation(old, old_note, False)
    if consistency_proof is None:
        raise ValueError("a larger checkpoint needs a consistency proof")
    try:
        tlog.check_tree(consistency_proof, new.size, new.root_hash, old.size, old.root_hash)
    except SynchronicityError as e:
        raise ConsistencyError(
            f"size {new.size} does not extend size {old.size}: {e}", old_note, new_note
        ) from e
    return Observation(new, new_note, True)


class VerdictChecker:
    """Replays the leaves of a build-protocol log against its verified checkpoints."""

    def __init__(self, config: ProtocolConfig) -> None:
        self.state = ProtocolState(config)
        self.tree = tlog.MemoryHashStore()

    @property
    def size(self) -> int:
        return self.state.size

    def advance(self, leaves: Sequence[bytes], cp: Checkpoint) -> None:
        """Apply the leaves after ``size`` up to ``cp.size``; raise on any broken rule."""
        if self.size + len(leaves) != cp.size:
            raise ValueError("give exactly the leaves up to the checkpoint")
        for data in leaves:
            self.state.apply_bytes(data)  # ProtocolViolation names the rule
            self.tree.append_record(data)
        if cp.size and self.tree.tree_hash(cp.size) != cp.root_hash:
            raise VerificationError("the log's entries do not hash to its checkpoint")


Answer = dict[str, object]
# (name, version or None, size) -> the log's index answer at that size, None when it has none
FetchIndex = Callable[[str, str | None, int], Answer | None]


def _rows_text(rows: list[VerdictRow], total: object) -> str:
    if not rows:
        return "no verdict"
    newest = rows[-1]
    return f"{total} verdict(s), the newest at leaf {newest.index} {newest.outcome}"


def _parsed(
    answer: Answer | None, version: str | None
) -> dict[str, tuple[list[VerdictRow], object]]:
    """version -> (rows, total) of an index answer ({} for none); FormatError if malformed."""
    if answer is None:
        return {}
    if version is not None:
        return {version: (rows_of(answer), answer.get("verdicts_total"))}
    totals = {}
    raw = answer.get("versions")
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict):
            totals[str(item.get("version"))] = item.get("verdicts_total")
    return {v: (rows, totals.get(v)) for v, _, rows in versions_of(answer)}


def index_difference(
    name: str, version: str | None, expected: Answer | None, served: Answer | None
) -> str | None:
    """None if the log ``served`` exactly the ``expected`` index answer, else one phrase that
    names the crate (and version) and what differs. ``FormatError`` if ``served`` is malformed."""
    if expected is not None and served is not None:
        if canonical_json.encode(expected) == canonical_json.encode(served):
            return None
    elif expected is None and served is None:
        return None
    want, got = _parsed(expected, version), _parsed(served, version)
    for v in sorted(set(want) | set(got)):
        if want.get(v) != got.get(v):
            said = _rows_text(*got.get(v, ([], 0)))
            truth = _rows_text(*want.get(v, ([], 0)))
            return f"{name}@{v}: the log lists {said}; the leaves give {truth}"
    assert expected is not None and served is not None  # else a version differs above
    members = sorted(
        key
        for key in set(expected) | set(served)
        if canonical_json.encode(expected.get(key)) != canonical_json.encode(served.get(key))
    )
    where = f"{name}@{version}" if version else name
    return f"{where}: the log's answer differs from the leaves' in {', '.join(members)}"


class IndexAudit:
    """Checks the crate index a log serves against the fold of the leaves the monitor verified.

    After each checkpoint, every crate version that got a verdict is checked (the crate's
    answer and the version's), and ``sample`` more crates in turn, so that every crate is asked
    again now and then: a log that changes an old answer is caught too.
    """

    def __init__(self, network_id: str, fetch: FetchIndex, sample: int = 16) -> None:
        self.index = CrateIndex()
        self.network_id = network_id
        self._fetch = fetch
        self._sample = sample
        self._cursor = 0
        self._pending: set[CrateKey] = set()
        self.checked = 0  # crates asked in the last audit

    def advance(self, first_index: int, leaves: Sequence[bytes]) -> None:
        """Fold verified leaves ``first_index, ...``."""
        self._pending |= self.index.add_leaves(first_index, leaves)

    def _turn(self) -> list[str]:
        names = self.index.names()
        if not names:
            return []
        start = self._cursor % len(names)
        turn = (names[start:] + names[:start])[: self._sample]
        self._cursor = start + len(turn)
        return turn

    def audit(self, size: int) -> int:
        """Compare the log's answers at ``size`` with the fold's; the number of crates asked.
        ``VerificationError`` names the first difference."""
        versions = sorted(self._pending)
        names = sorted({name for name, _ in versions} | set(self._turn()))
        for name in names:
            self._compare(name, None, size)
        for name, version in versions:
            self._compare(name, version, size)
        self._pending.clear()
        self.checked = len(names)
        return self.checked

    def _compare(self, name: str, version: str | None, size: int) -> None:
        if version is None:
            expected = self.index.crate_answer(name, size, self.network_id)
        else:
            expected = self.index.version_answer(name, version, size, self.network_id)
        served = self._fetch(name, version, size)
        try:
            difference = index_difference(name, version, expected, served)
        except FormatError as e:
            raise RemoteError("the log", f"a crate index answer for {name}: {e}") from e
        if difference is not None:
            raise VerificationError(f"the log's crate index differs from its leaves: {difference}")


# (checkpoint note) and (old, new) -> consistency proof hashes
FetchCheckpoint = Callable[[], bytes]
FetchConsistency = Callable[[int, int], list[bytes]]


class Monitor:
    """Follows one log through a policy, keeping the last verified checkpoint on disk."""

    def __init__(
        self,
        policy: Policy,
        state_dir: Path,
        fetch_checkpoint: FetchCheckpoint,
        fetch_consistency: FetchConsistency,
        *,
        verdicts: VerdictChecker | None = None,
        fetch_leaves: Callable[[int, int], list[bytes]] | None = None,
        crates: IndexAudit | None = None,
    ) -> None:
        self.policy = policy
        self.verdicts = verdicts
        self.crates = crates  # with verdicts: the crate index is checked too
        self._fetch_leaves = fetch_leaves
        self.state_dir = state_dir
        self._fetch_checkpoint = fetch_checkpoint
        self._fetch_consistency = fetch_consistency

    def load(self) -> tuple[Checkpoint | None, bytes]:
        path = self.state_dir / STATE_FILE
        try:
            note = path.read_bytes()
        except FileNotFoundError:
            return None, b""
        try:
            return self.policy.verify_checkpoint(note), note
        except SynchronicityError as e:
            raise OperationalError(f"the monitor state {path} is corrupt: {e}") from e

    def check_once(self) -> Observation:
        """Fetch the log's checkpoint, check it against the last one, and store it if newer.

        Fetched bytes that do not parse (the checkpoint note, a proof, a leaf) are the log's
        fault: RemoteError, an operational failure. A checkpoint that fails the policy, a fork
        (ConsistencyError) or a broken protocol rule stay verification failures.
        """
        old, old_note = self.load()
        new_note = self._fetch_checkpoint()
        try:
            new = self.policy.verify_checkpoint(new_note)
        except FormatError as e:
            raise RemoteError("the log", f"a checkpoint that does not parse: {e}") from e
        proof = None
        if old is not None and new.size > old.size:
            try:
                proof = self._fetch_consistency(old.size, new.size)
            except FormatError as e:
                raise RemoteError("the log", f"a consistency proof that does not parse: {e}") from e
        seen = next_state(old, old_note, new, new_note, proof)
        if self.verdicts is not None and self._fetch_leaves is not None:
            checked = self.verdicts.size
            if seen.checkpoint.size > checked:
                try:
                    leaves = self._fetch_leaves(checked, seen.checkpoint.size)
                    self.verdicts.advance(leaves, seen.checkpoint)
                except FormatError as e:
                    raise RemoteError("the log", f"a leaf that does not parse: {e}") from e
                if self.crates is not None:
                    self.crates.advance(checked, leaves)
            if self.crates is not None:
                self.crates.audit(seen.checkpoint.size)
        if seen.advanced:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.state_dir / STATE_FILE, seen.note)
        return seen
