"""Trust policies (c2sp.org/tlog-policy): which logs and witnesses a verifier believes, and how
many witnesses must cosign a checkpoint before it is accepted.

::

    # comment
    log <vkey> [<url>]
    witness <name> <vkey> [<url>]
    group <name> <k>|all|any <member>...
    quorum <name>|none

Items are separated by spaces and tabs; blank and comment lines are ignored. A group or the
quorum may only name witnesses and groups defined on preceding lines; each name is a member of
at most one group, at most once; 1 <= k <= n. Log keys are Ed25519 note keys (type 0x01) and
witness keys cosignature/v1 keys (type 0x04); a public key appears at most once among the logs
and at most once among the witnesses. Names and URLs are opaque octets (kept as UTF-8 with
surrogate escapes). Parsing raises FormatError; ``Policy.verify_checkpoint`` raises PolicyError
when the log signature or the witness quorum is missing. Pure logic, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from logserver.core.checkpoint import Checkpoint
from logserver.core.cosignature import CosignatureVerifier
from logserver.core.errors import FormatError, PolicyError, UsageError
from logserver.core.note import Note, UnverifiedNoteError, Verifier, VerifierSet, open_note

NONE = "none"
MAX_POLICY_BYTES = 256 * 1024
MAX_LOGS = 64
MAX_WITNESSES = 256
MAX_GROUPS = 256
_FORBIDDEN_BYTES = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_SEPARATORS = re.compile(r"[ \t]+")
_TOKEN = re.compile(r"[^\x00-\x20\x7f]+")


@dataclass(frozen=True)
class PolicyLog:
    """A trusted log: its note verifier (key name = origin) and an optional URL."""

    verifier: Verifier
    url: str | None = None


@dataclass(frozen=True)
class PolicyWitness:
    """A named witness: its cosignature verifier and an optional URL."""

    name: str
    verifier: CosignatureVerifier
    url: str | None = None


@dataclass(frozen=True)
class PolicyGroup:
    """A group that witnesses a checkpoint when at least ``threshold`` members do."""

    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint that satisfied a policy, with the note and who signed it."""

    checkpoint: Checkpoint
    note: Note
    log: PolicyLog
    cosigners: frozenset[str]


def _check_token(value: str, what: str) -> None:
    if not _TOKEN.fullmatch(value):
        raise UsageError(f"{what} {value!r} must be non-empty without spaces or controls")


@dataclass(frozen=True)
class Policy:
    """A parsed or built tlog-policy. Construction validates it (UsageError)."""

    logs: tuple[PolicyLog, ...]
    witnesses: tuple[PolicyWitness, ...]
    groups: tuple[PolicyGroup, ...]
    quorum: str

    def __post_init__(self) -> None:
        if len(self.logs) > MAX_LOGS or len(self.witnesses) > MAX_WITNESSES:
            raise UsageError(f"at most {MAX_LOGS} logs and {MAX_WITNESSES} witnesses")
        if len(self.groups) > MAX_GROUPS:
            raise UsageError(f"at most {MAX_GROUPS} groups")
        for log in self.logs:
            if type(log.verifier) is not Verifier:
                raise UsageError("a log key must be an Ed25519 note key (type 0x01)")
        for what, keys in (
            ("log", [log.verifier.public_key for log in self.logs]),
            ("witness", [w.verifier.public_key for w in self.witnesses]),
        ):
            if len(set(keys)) != len(keys):
                raise UsageError(f"duplicate {what} public key")
        urls = [log.url for log in self.logs] + [w.url for w in self.witnesses]
        for url in urls:
            if url is not None:
                _check_token(url, "URL")
        defined: set[str] = set()

        def define(name: str) -> None:
            _check_token(name, "name")
            if name == NONE or name in defined:
                raise UsageError(f"name {name!r} is reserved or defined twice")
            defined.add(name)

        for witness in self.witnesses:
            define(witness.name)
        used: set[str] = set()
        for group in self.groups:
            for member in group.members:
                if member not in defined:
                    raise UsageError(f"group {group.name!r}: member {member!r} is not defined")
                if member in used:
                    raise UsageError(f"{member!r} is a group member more than once")
                used.add(member)
            if not 1 <= group.threshold <= len(group.members):
                raise UsageError(f"group {group.name!r}: threshold not in 1..{len(group.members)}")
            define(group.name)
        if self.quorum != NONE and self.quorum not in defined:
            raise UsageError(f"quorum {self.quorum!r} is not defined")
        # Rejects two keys sharing a name and key ID.
        self.verifier_set()

    # --- building and printing ------------------------------------------------------------

    @classmethod
    def for_network(
        cls,
        log_vkey: str,
        witnesses: Sequence[tuple[str, str]],
        threshold: int,
        *,
        log_url: str | None = None,
        group_name: str = "witnesses",
    ) -> Policy:
        """One log and ``threshold``-of-n of the (name, vkey) witnesses; 0 means no quorum."""
        policy_witnesses = tuple(
            PolicyWitness(name, CosignatureVerifier.from_vkey(vkey)) for name, vkey in witnesses
        )
        if threshold == 0:
            groups: tuple[PolicyGroup, ...] = ()
            quorum = NONE
        else:
            groups = (PolicyGroup(group_name, threshold, tuple(name for name, _ in witnesses)),)
            quorum = group_name
        log = PolicyLog(Verifier.from_vkey(log_vkey), log_url)
        return cls((log,), policy_witnesses, groups, quorum)

    def to_bytes(self) -> bytes:
        lines = []
        for log in self.logs:
            lines.append(" ".join(filter(None, ["log", log.verifier.vkey, log.url])))
        for w in self.witnesses:
            lines.append(" ".join(filter(None, ["witness", w.name, w.verifier.vkey, w.url])))
        for group in self.groups:
            lines.append(" ".join(["group", group.name, str(group.threshold), *group.members]))
        lines.append(f"quorum {self.quorum}")
        return "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")

    @classmethod
    def parse(cls, data: bytes) -> Policy:
        return _PolicyParser().parse(data)

    # --- evaluation -----------------------------------------------------------------------

    def verifier_set(self) -> VerifierSet:
        return VerifierSet(
            [log.verifier for log in self.logs] + [w.verifier for w in self.witnesses]
        )

    def quorum_satisfied(self, cosigners: Collection[str]) -> bool:
        """Whether the named witnesses that cosigned satisfy the quorum (groups are k-of-n)."""
        if self.quorum == NONE:
            return True
        witnessed = {w.name: w.name in cosigners for w in self.witnesses}
        for group in self.groups:  # members are always defined before their group
            count = sum(witnessed[member] for member in group.members)
            witnessed[group.name] = count >= group.threshold
        return witnessed[self.quorum]

    def verify(self, signed_note: bytes) -> VerifiedCheckpoint:
        """Open a checkpoint note and check it against the policy."""
        try:
            opened = open_note(signed_note, self.verifier_set())
        except UnverifiedNoteError as exc:
            raise PolicyError(f"checkpoint is not signed by the policy's log: {exc}") from exc
        checkpoint = Checkpoint.parse(opened.text)
        logs = {(log.verifier.name, log.verifier.key_id): log for log in self.logs}
        witnesses = {(w.verifier.name, w.verifier.key_id): w.name for w in self.witnesses}
        signing_logs = [logs[s.name, s.key_id] for s in opened.sigs if (s.name, s.key_id) in logs]
        if not signing_logs:
            raise PolicyError("checkpoint is not signed by any log of the policy")
        matching = [log for log in signing_logs if log.verifier.name == checkpoint.origin]
        if not matching:
            raise PolicyError(
                f"checkpoint origin {checkpoint.origin!r} does not match the signing log "
                f"{signing_logs[0].verifier.name!r}"
            )
        cosigners = frozenset(
            witnesses[s.name, s.key_id] for s in opened.sigs if (s.name, s.key_id) in witnesses
        )
        if not self.quorum_satisfied(cosigners):
            names = ", ".join(sorted(cosigners)) or "no witness"
            raise PolicyError(f"witness quorum {self.quorum!r} not satisfied (cosigned by {names})")
        return VerifiedCheckpoint(checkpoint, opened, matching[0], cosigners)

    def verify_checkpoint(self, signed_note: bytes) -> Checkpoint:
        """The checkpoint of a note signed by a policy log and cosigned by a quorum."""
        return self.verify(signed_note).checkpoint


class _PolicyParser:
    """Reads a policy file line by line, enforcing definition order."""

    def __init__(self) -> None:
        self.logs: list[PolicyLog] = []
        self.witnesses: list[PolicyWitness] = []
        self.groups: list[PolicyGroup] = []
        self.quorum: str | None = None
        self.defined: set[str] = set()

    def parse(self, data: bytes) -> Policy:
        if len(data) > MAX_POLICY_BYTES:
            raise FormatError("policy", f"larger than {MAX_POLICY_BYTES} bytes")
        bad = _FORBIDDEN_BYTES.search(data)
        if bad:
            raise FormatError("policy", f"control byte 0x{bad.group()[0]:02x}")
        text = data.decode("utf-8", "surrogateescape")
        for number, raw_line in enumerate(text.split("\n"), start=1):
            line = raw_line.strip(" \t")
            if not line or line.startswith("#"):
                continue
            try:
                self._line(_SEPARATORS.split(line))
            except FormatError as exc:
                raise FormatError("policy", f"line {number}: {exc.reason}") from exc
        if self.quorum is None:
            raise FormatError("policy", "no quorum line")
        try:
            return Policy(tuple(self.logs), tuple(self.witnesses), tuple(self.groups), self.quorum)
        except UsageError as exc:
            raise FormatError("policy", str(exc)) from exc

    def _define(self, name: str) -> None:
        if name == NONE or name in self.defined:
            raise FormatError("policy", f"name {name!r} is reserved or already defined")
        self.defined.add(name)

    def _line(self, words: list[str]) -> None:
        keyword, args = words[0], words[1:]
        if keyword == "log" and len(args) in (1, 2):
            url = args[1] if len(args) == 2 else None
            self.logs.append(PolicyLog(Verifier.from_vkey(args[0]), url))
            if len(self.logs) > MAX_LOGS:
                raise FormatError("policy", f"more than {MAX_LOGS} logs")
        elif keyword == "witness" and len(args) in (2, 3):
            url = args[2] if len(args) == 3 else None
            self._define(args[0])
            self.witnesses.append(
                PolicyWitness(args[0], CosignatureVerifier.from_vkey(args[1]), url)
            )
            if len(self.witnesses) > MAX_WITNESSES:
                raise FormatError("policy", f"more than {MAX_WITNESSES} witnesses")
        elif keyword == "group" and len(args) >= 3:
            name, k_text, members = args[0], args[1], tuple(args[2:])
            for member in members:
                if member not in self.defined:
                    raise FormatError("policy", f"group member {member!r} is not defined above")
            threshold = self._threshold(k_text, len(members))
            self._define(name)
            self.groups.append(PolicyGroup(name, threshold, members))
            if len(self.groups) > MAX_GROUPS:
                raise FormatError("policy", f"more than {MAX_GROUPS} groups")
        elif keyword == "quorum" and len(args) == 1:
            if self.quorum is not None:
                raise FormatError("policy", "more than one quorum line")
            if args[0] != NONE and args[0] not in self.defined:
                raise FormatError("policy", f"quorum {args[0]!r} is not defined above")
            self.quorum = args[0]
        else:
            raise FormatError("policy", f"unknown line {keyword!r} or wrong number of items")

    @staticmethod
    def _threshold(text: str, members: int) -> int:
        if text == "all":
            return members
        if text == "any":
            return 1
        if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
            raise FormatError("policy", f"bad group threshold {text!r}")
        if len(text) > 4 or not 1 <= int(text) <= members:
            raise FormatError("policy", f"group threshold {text} not in 1..{members}")
        return int(text)
