"""The network configuration: one log, n = 3f+1 builder-witnesses, timeouts and build rules.

One JSON file, shared by every node and by the log (spec/network.md). It names the log (origin,
verifier key, URL), each witness (name, cosignature verifier key, URL), f, the consensus
timeouts, the build protocol's threshold and deadlines, other C2SP logs the witnesses also
co-sign through ``POST /add-checkpoint``, the requesters whose signed requests the
witnesses take (``logserver.protocol.requester``), and where its builders obtain a build
environment they lack (``environment_sources``: URLs of export directories; the log's blob
store is always tried after them). Parsing is strict: unknown fields, wrong types, duplicate
names or keys, and n != 3f+1 are errors. Pure: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from logserver.core import canonical_json, cosignature, note
from logserver.core.errors import FormatError
from logserver.core.policy import Policy
from logserver.protocol.entries import check_name

VERSION = 1
MAX_CONFIG_BYTES = 1 << 20
MAX_WITNESSES = 100
# Builder names of a protocol network: with at most MAX_WITNESSES builders, the largest verdict
# then fits one leaf (logserver.protocol.rules.max_verdict_leaf_bytes, spec/protocol.md).
MAX_BUILDER_NAME_BYTES = 128
MAX_ENVIRONMENT_SOURCES = 16


@dataclass(frozen=True)
class LogInfo:
    """The network's log: its origin, its note verifier key and the URL it serves."""

    origin: str
    vkey: str
    url: str


@dataclass(frozen=True)
class PreviousKey:
    """A key a witness used before: it signed that witness's build-protocol entries in leaves
    stamped before ``until_ms`` (log time), after the previous one's ``until_ms``."""

    vkey: str  # a cosignature/v1 key named like the witness, as ``WitnessInfo.vkey``
    until_ms: int

    @property
    def public_key(self) -> bytes:
        return cosignature.CosignatureVerifier.from_vkey(self.vkey).public_key


@dataclass(frozen=True)
class WitnessInfo:
    """One builder-witness: its name, cosignature verifier key and URL, and the keys it used
    before the current one (oldest first), so that the log's history still verifies."""

    name: str
    vkey: str  # a cosignature/v1 key (type 0x04); its Ed25519 key also signs consensus messages
    url: str
    previous_keys: tuple[PreviousKey, ...] = ()

    @property
    def public_key(self) -> bytes:
        return cosignature.CosignatureVerifier.from_vkey(self.vkey).public_key


@dataclass(frozen=True)
class ConsensusTimeouts:
    """The pacemaker's round timeout: ``round_ms`` doubled per round without a QC, up to
    ``max_round_ms``."""

    round_ms: int = 1000
    max_round_ms: int = 30_000


@dataclass(frozen=True)
class BuildRules:
    """The build protocol's parameters: agreeing builders needed (k), and the build and reveal
    deadlines in milliseconds of log time."""

    k: int | None = None  # builders that must agree; None means 2f+1
    build_deadline_ms: int = 30 * 60 * 1000
    reveal_deadline_ms: int = 10 * 60 * 1000


@dataclass(frozen=True)
class OtherLog:
    """Another C2SP log the witnesses co-sign through ``POST /add-checkpoint``."""

    origin: str
    vkey: str


@dataclass(frozen=True)
class RequesterInfo:
    """A requester: a key whose signed requests a witness takes for what anyone may not ask
    (uploading a local ``.crate``, requesting a build of a recipe whose source is local)."""

    name: str
    vkey: str  # a signed-note Ed25519 key (type 0x01) named ``name``

    @property
    def verifier(self) -> note.Verifier:
        return note.Verifier.from_vkey(self.vkey)


def _check_requesters(requesters: tuple[RequesterInfo, ...]) -> None:
    what = "network config"
    for r in requesters:
        try:
            verifier = r.verifier
        except FormatError as e:
            raise FormatError(what, f"requester {r.name}: bad key: {e.reason}") from e
        if verifier.name != r.name:
            raise FormatError(what, f"requester {r.name}: the key's name differs")
    if len({r.name for r in requesters}) != len(requesters):
        raise FormatError(what, "duplicate requester name")
    if len({r.verifier.public_key for r in requesters}) != len(requesters):
        raise FormatError(what, "two requesters share a key")


@dataclass(frozen=True)
class NetworkConfig:
    """The whole network config (spec/network.md): one log, n = 3f+1 builder-witnesses,
    timeouts, build rules and other logs. ``parse`` is strict; ``to_json`` writes it back."""

    network_id: str
    log: LogInfo
    witnesses: tuple[WitnessInfo, ...]
    f: int
    timeouts: ConsensusTimeouts = field(default_factory=ConsensusTimeouts)
    builds: BuildRules = field(default_factory=BuildRules)
    other_logs: tuple[OtherLog, ...] = ()
    requesters: tuple[RequesterInfo, ...] = ()  # who may sign requests to the witnesses
    # "protocol": every entry is a build-protocol leaf the witnesses check; "open": any bytes.
    entries: str = "protocol"
    # http(s) URLs of build environment exports (spec/builds.md section 10), tried in order
    environment_sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        what = "network config"
        if self.entries not in ("protocol", "open"):
            raise FormatError(what, 'entries must be "protocol" or "open"')
        _check_requesters(self.requesters)
        n = len(self.witnesses)
        if not 0 < len(self.network_id.encode("utf-8", "replace")) <= 128 or any(
            "\ud800" <= c <= "\udfff" for c in self.network_id
        ):
            raise FormatError(what, "network_id must be 1 to 128 bytes of UTF-8")
        if self.f < 0 or n != 3 * self.f + 1 or n > MAX_WITNESSES:
            raise FormatError(what, f"n = {n} witnesses does not equal 3f+1 with f = {self.f}")
        names = [w.name for w in self.witnesses]
        if len(set(names)) != n:
            raise FormatError(what, "duplicate witness name")
        for name in names if self.entries == "protocol" else ():
            check_name(name, what, "a witness name")
            if len(name) > MAX_BUILDER_NAME_BYTES:
                raise FormatError(what, f"witness name longer than {MAX_BUILDER_NAME_BYTES} bytes")
        try:
            log_verifier = note.Verifier.from_vkey(self.log.vkey)
            keys = [w.public_key for w in self.witnesses]
            for other in self.other_logs:
                note.Verifier.from_vkey(other.vkey)
        except FormatError as e:
            raise FormatError(what, f"bad key: {e.reason}") from e
        if log_verifier.name != self.log.origin:
            raise FormatError(what, "the log's key name must be its origin")
        if len(set(keys)) != n:
            raise FormatError(what, "two witnesses share a key")
        for w in self.witnesses:
            if cosignature.CosignatureVerifier.from_vkey(w.vkey).name != w.name:
                raise FormatError(what, f"witness {w.name}: the key's name differs")
        self._check_previous_keys(keys)
        if not 0 < self.timeouts.round_ms <= self.timeouts.max_round_ms:
            raise FormatError(what, "timeouts: 0 < round_ms <= max_round_ms")
        if not 0 < self.k <= n:
            raise FormatError(what, f"builds.k must be in 1..{n}")
        if self.builds.build_deadline_ms <= 0 or self.builds.reveal_deadline_ms <= 0:
            raise FormatError(what, "build deadlines must be positive")
        _check_environment_sources(self.environment_sources)

    def _check_previous_keys(self, current: list[bytes]) -> None:
        what = "network config"
        every_key = list(current)
        for w in self.witnesses:
            until = [old.until_ms for old in w.previous_keys]
            if until != sorted(set(until)) or not all(0 < t < 1 << 53 for t in until):
                raise FormatError(what, f"witness {w.name}: previous keys need increasing until_ms")
            for old in w.previous_keys:
                try:
                    verifier = cosignature.CosignatureVerifier.from_vkey(old.vkey)
                except FormatError as e:
                    raise FormatError(what, f"bad key: {e.reason}") from e
                if verifier.name != w.name:
                    raise FormatError(what, f"witness {w.name}: a previous key's name differs")
                every_key.append(verifier.public_key)
        if len(set(every_key)) != len(every_key):
            raise FormatError(what, "a key is listed twice (current or previous)")

    @property
    def n(self) -> int:
        return len(self.witnesses)

    @property
    def quorum(self) -> int:
        return 2 * self.f + 1

    @property
    def k(self) -> int:
        return self.builds.k if self.builds.k is not None else self.quorum

    def witness(self, name: str) -> WitnessInfo:
        for w in self.witnesses:
            if w.name == name:
                return w
        raise KeyError(name)

    def policy(self) -> Policy:
        """The tlog-policy a client should use: the log and 2f+1 of the witnesses."""
        return Policy.for_network(
            self.log.vkey,
            [(w.name, w.vkey) for w in self.witnesses],
            self.quorum,
            log_url=self.log.url,
        )

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "version": VERSION,
            "network_id": self.network_id,
            "entries": self.entries,
            "f": self.f,
            "log": {"origin": self.log.origin, "vkey": self.log.vkey, "url": self.log.url},
            "witnesses": [_witness_json(w) for w in self.witnesses],
            "timeouts": {
                "round_ms": self.timeouts.round_ms,
                "max_round_ms": self.timeouts.max_round_ms,
            },
            "builds": {
                "k": self.builds.k,
                "build_deadline_ms": self.builds.build_deadline_ms,
                "reveal_deadline_ms": self.builds.reveal_deadline_ms,
            },
            "other_logs": [{"origin": o.origin, "vkey": o.vkey} for o in self.other_logs],
        }
        if self.requesters:  # absent when there are none: older configs are written as before
            doc["requesters"] = [{"name": q.name, "vkey": q.vkey} for q in self.requesters]
        if self.environment_sources:  # likewise
            doc["environment_sources"] = list(self.environment_sources)
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> NetworkConfig:
        if len(data) > MAX_CONFIG_BYTES:
            raise FormatError("network config", f"larger than {MAX_CONFIG_BYTES} bytes")
        doc = canonical_json.parse(data, "network config", max_bytes=MAX_CONFIG_BYTES)
        r = _Reader(doc, "network config")
        if r.integer("version") != VERSION:
            raise FormatError("network config", f"version must be {VERSION}")
        log = r.obj("log")
        witnesses = r.items("witnesses")
        requesters = tuple(_requester(q) for q in r.items("requesters", optional=True))
        timeouts = r.obj("timeouts", optional=True)
        builds = r.obj("builds", optional=True)
        others = r.items("other_logs", optional=True)
        previous_keys = [w.items("previous_keys", optional=True) for w in witnesses]
        config = cls(
            network_id=r.text("network_id"),
            f=r.integer("f"),
            log=LogInfo(log.text("origin"), log.text("vkey"), log.text("url")),
            witnesses=tuple(
                WitnessInfo(
                    w.text("name"),
                    w.text("vkey"),
                    w.text("url"),
                    tuple(PreviousKey(p.text("vkey"), p.integer("until_ms")) for p in previous),
                )
                for w, previous in zip(witnesses, previous_keys, strict=True)
            ),
            timeouts=ConsensusTimeouts(
                timeouts.integer("round_ms", 1000), timeouts.integer("max_round_ms", 30_000)
            ),
            builds=BuildRules(
                builds.opt_integer("k"),
                builds.integer("build_deadline_ms", BuildRules.build_deadline_ms),
                builds.integer("reveal_deadline_ms", BuildRules.reveal_deadline_ms),
            ),
            other_logs=tuple(OtherLog(o.text("origin"), o.text("vkey")) for o in others),
            requesters=requesters,
            entries=r.text("entries") if "entries" in doc else "protocol",
            environment_sources=r.texts("environment_sources", optional=True),
        )
        for reader in [r, log, timeouts, builds, *witnesses, *others]:
            reader.done()
        for previous in previous_keys:
            for reader in previous:
                reader.done()
        return config


def _check_environment_sources(sources: tuple[str, ...]) -> None:
    what = "network config"
    if len(sources) > MAX_ENVIRONMENT_SOURCES:
        raise FormatError(what, f"at most {MAX_ENVIRONMENT_SOURCES} environment_sources")
    if len(set(sources)) != len(sources):
        raise FormatError(what, "an environment source is listed twice")
    for url in sources:
        scheme, _, rest = url.partition("://")
        if scheme not in ("http", "https") or not rest or not url.isprintable() or " " in url:
            raise FormatError(what, f"environment source {url!r} is not an http(s) URL")


def _witness_json(w: WitnessInfo) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": w.name, "vkey": w.vkey, "url": w.url}
    if w.previous_keys:  # absent when the key was never replaced: older configs stay as they were
        doc["previous_keys"] = [{"vkey": k.vkey, "until_ms": k.until_ms} for k in w.previous_keys]
    return doc


def _requester(reader: _Reader) -> RequesterInfo:
    requester = RequesterInfo(reader.text("name"), reader.text("vkey"))
    reader.done()
    return requester


class _Reader:
    """Typed, strict access to one JSON object; ``done`` rejects fields nobody read."""

    def __init__(self, doc: object, where: str) -> None:
        if not isinstance(doc, dict):
            raise FormatError("network config", f"{where} must be an object")
        self._doc: dict[str, object] = doc
        self._where = where
        self._seen: set[str] = set()

    def _get(self, key: str) -> object:
        self._seen.add(key)
        if key not in self._doc:
            raise FormatError("network config", f"{self._where}.{key} is missing")
        return self._doc[key]

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value or len(value) > 1024:
            raise FormatError("network config", f"{self._where}.{key} must be a string")
        return value

    def integer(self, key: str, default: int | None = None) -> int:
        if default is not None and key not in self._doc:
            return default
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 53:
            raise FormatError("network config", f"{self._where}.{key} must be an integer")
        return value

    def opt_integer(self, key: str) -> int | None:
        if self._doc.get(key) is None:
            self._seen.add(key)
            return None
        return self.integer(key)

    def obj(self, key: str, optional: bool = False) -> _Reader:
        if optional and key not in self._doc:
            return _Reader({}, f"{self._where}.{key}")
        return _Reader(self._get(key), f"{self._where}.{key}")

    def texts(self, key: str, optional: bool = False) -> tuple[str, ...]:
        if optional and key not in self._doc:
            return ()
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FormatError("network config", f"{self._where}.{key} must be a list of strings")
        if len(value) > MAX_WITNESSES or any(not v or len(v) > 1024 for v in value):
            raise FormatError("network config", f"{self._where}.{key} must be a short list")
        return tuple(value)

    def items(self, key: str, optional: bool = False) -> list[_Reader]:
        if optional and key not in self._doc:
            return []
        value = self._get(key)
        if not isinstance(value, list) or len(value) > MAX_WITNESSES:
            raise FormatError("network config", f"{self._where}.{key} must be a short list")
        return [_Reader(item, f"{self._where}.{key}[{i}]") for i, item in enumerate(value)]

    def done(self) -> None:
        unknown = set(self._doc) - self._seen
        if unknown:
            raise FormatError("network config", f"unknown field {self._where}.{min(unknown)}")
