"""``synchronicity install`` and ``synchronicity fetch``: reproduced artifacts from a network.

Neither ever builds. Both find a crate's verdict through the log's crate index
(``GET /crates/<name>[/<version>]``), get the verdict proof file (the verdict's tlog-proof
with the output manifest and the recipe: ``synchronicity.verdicts.write_verdict_proof``, as
``rebuild`` writes it), verify it offline against the trust policy, download the artifacts by
SHA-256 from a blob source (``--mirror`` URLs first, then the log's blob store) and check
every byte against the proven digests before writing anything:

- ``install NAME[@VERSION]`` puts the crate's binaries into ``ROOT/bin`` (cargo's install
  root by default), each written atomically and executable, and keeps the proof in
  ``ROOT/.synchronicity/NAME-VERSION.tlog-proof``;
- ``fetch NAME[@VERSION] --out DIR`` writes every artifact and the proof into ``DIR``, or with
  ``--bundle`` one deterministic tar holding them (``synchronicity.bundle``).

Which verdict: with a version, the newest verdict of that version; without, the newest
release (not a pre-release) with a reproduced verdict, and then again its newest verdict. That
verdict must be ``reproduced``: an older reproduced verdict never outweighs a newer one that is
not (the log's index is checked against the leaves by monitors: witness/monitor.py), and a
verdict of a local ``.crate`` rather than the crates.io release is taken only with ``--local``.
Refusals are one line and exit 1; bytes that do not match their proven digest are a
verification failure (exit 1); a log or mirror that cannot be reached is exit 3.

Only ``logserver.client`` (httpx), ``logserver.core`` and ``logserver.protocol`` are needed
(the ``client`` extra): no server, no builder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from logserver.client import LogClient
from logserver.core import canonical_json
from logserver.core.errors import (
    FormatError,
    OperationalError,
    RemoteError,
    UsageError,
    VerificationError,
)
from logserver.core.policy import Policy
from logserver.fsutil import atomic_write
from logserver.protocol.crate_index import (
    VerdictRow,
    check_crate_name,
    check_version,
    is_prerelease,
    rows_of,
    version_key,
    versions_of,
)
from logserver.protocol.entries import Request, Verdict
from logserver.protocol.network import NetworkConfig
from logserver.protocol.verdict_proof import Reproduced
from synchronicity.bundle import EXECUTABLE, PROOF_SUFFIX, PUBLIC, artifact_kind, write_bundle
from synchronicity.client import LoggedEntry, logged_entries
from synchronicity.verdicts import write_verdict_proof

DEFAULT_NETWORK = Path(".synchronicity/network/network.json")
PROOF_DIR = ".synchronicity"
_CHUNK = 1 << 16


class Refused(Exception):
    """What is asked for is not a reproduced artifact: said in one line, exit 1."""


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- arguments


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME@VERSION``, both checked strictly (``UsageError`` otherwise)."""
    name, _, version = spec.partition("@")
    try:
        check_crate_name(name)
        if version:
            check_version(version)
    except FormatError as e:
        raise UsageError(f"{spec!r} is not NAME or NAME@VERSION: {e.reason}") from e
    return name, version or None


@dataclass(frozen=True)
class Network:
    """Where to ask and whom to trust: the log's URL, the policy, and the network id (from
    the config; else taken from the log's answer, which the verdict's signature checks)."""

    url: str
    policy: Policy
    network_id: str | None


def network_of(args: argparse.Namespace) -> Network:
    """``--network FILE``, or ``--policy FILE`` (with ``--log URL`` unless the policy names
    the log's URL), or the local network's config under ``.synchronicity``."""
    if args.network and (args.policy or args.log):
        raise UsageError("give --network FILE, or --policy FILE with --log URL, not both")
    if args.policy:
        policy = Policy.parse(Path(args.policy).read_bytes())
        url = args.log or policy.logs[0].url
        if not url:
            raise UsageError("the policy names no log URL: give --log URL")
        return Network(url, policy, None)
    if args.log:
        raise UsageError("--log needs --policy FILE: the trust policy to verify proofs with")
    path = Path(args.network) if args.network else DEFAULT_NETWORK
    if not args.network and not path.exists():
        raise UsageError("give --network FILE, or --policy FILE (and --log URL)")
    config = NetworkConfig.parse(path.read_bytes())
    return Network(config.log.url, config.policy(), config.network_id)


def install_root(root: str | None) -> Path:
    """``--root``, else cargo's install root: ``$CARGO_INSTALL_ROOT``, ``$CARGO_HOME``, or
    ``~/.cargo``."""
    if root:
        return Path(root)
    for variable in ("CARGO_INSTALL_ROOT", "CARGO_HOME"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path.home() / ".cargo"


# ----------------------------------------------------------------------------- the verdict


def _answer(client: LogClient, name: str, version: str | None) -> dict[str, object]:
    answer = client.crate_index(name, version)
    if answer is None:
        what = f"{name}@{version}" if version else name
        raise Refused(
            f"the log at {client.url} has no verdict for {what}: nothing was reproduced "
            f"(ask for a rebuild: synchronicity rebuild {what})"
        )
    if answer.get("name") != name or (version is not None and answer.get("version") != version):
        raise RemoteError(f"the log at {client.url}", f"an index answer for another crate ({name})")
    return answer


def choose_version(client: LogClient, name: str) -> str:
    """The newest release of ``name`` that has a reproduced verdict."""
    answer = _answer(client, name, None)
    try:
        versions = list(versions_of(answer))
    except FormatError as e:
        raise RemoteError(f"the log at {client.url}", f"a crate index answer: {e}") from e
    reproduced = [version for version, count, _ in versions if count > 0]
    releases = [version for version in reproduced if not is_prerelease(version)]
    if not releases:
        also = f" (only pre-releases: {', '.join(reproduced[:3])}; name one)" if reproduced else ""
        raise Refused(f"no release of {name} has a reproduced verdict in the log{also}")
    return max(releases, key=version_key)


def newest_verdict(
    client: LogClient, name: str, version: str, *, local: bool
) -> tuple[VerdictRow, object]:
    """The newest verdict of ``name@version``, which must be a reproduced build of the
    crates.io release (or of a local ``.crate`` with ``local``): else ``Refused``. With it, the
    network id the answer names (the verdict's signature checks it)."""
    answer = _answer(client, name, version)
    try:
        row = rows_of(answer)[-1]
    except FormatError as e:
        raise RemoteError(f"the log at {client.url}", f"a crate index answer: {e}") from e
    what = f"{name}@{version}"
    if row.outcome != "reproduced":
        raise Refused(
            f"the newest verdict for {what} is {row.outcome} (leaf {row.index}, job "
            f"{row.job[:16]}): refusing it; an older reproduced verdict does not outweigh it"
        )
    if row.source != "crates.io" and not local:
        raise Refused(
            f"the newest verdict for {what} is of a {row.source} .crate, not of the crates.io "
            "release: refusing it (give --local to take it)"
        )
    return row, answer.get("network")


def _leaf(client: LogClient, index: int) -> LoggedEntry:
    return next(iter(logged_entries(client, index, index + 1)))


def prove(
    client: LogClient, network_id: str, policy: Policy, name: str, version: str, row: VerdictRow
) -> tuple[bytes, Reproduced]:
    """The verdict proof file of ``row`` and what it proves, verified against the policy."""
    liar = f"the log at {client.url}"
    request, verdict = _leaf(client, row.request), _leaf(client, row.index)
    if not isinstance(request.entry, Request) or request.entry.job != row.job:
        raise RemoteError(liar, f"an index whose leaf {row.request} is not the job's request")
    if not isinstance(verdict.entry, Verdict) or verdict.entry.job != row.job:
        raise RemoteError(liar, f"an index whose leaf {row.index} is not the job's verdict")
    if verdict.entry.outcome != row.outcome:
        raise RemoteError(
            liar, f"an index that calls the {verdict.entry.outcome} verdict {row.outcome}"
        )
    with tempfile.TemporaryDirectory(prefix="synchronicity-") as tmp:
        path = Path(tmp) / f"verdict{PROOF_SUFFIX}"
        recipe = canonical_json.encode(request.entry.recipe)
        written = write_verdict_proof(client, verdict, recipe, network_id, policy, path)
        data = path.read_bytes()
    reproduced = written.reproduced
    if reproduced is None:
        raise VerificationError(f"the verdict at leaf {row.index} is not reproduced")
    recipe_of = reproduced.recipe
    proven = (recipe_of.get("name"), recipe_of.get("version"), recipe_of.get("source"))
    if proven != (name, version, row.source):
        raise VerificationError(
            f"the proven verdict is for {proven[0]}@{proven[1]} ({proven[2]}), not {name}@{version}"
        )
    return data, reproduced


# ----------------------------------------------------------------------------- the bytes


class BlobSources:
    """Content-addressed sources of artifacts, asked in order: each ``--mirror`` URL (the blob
    is ``<URL>/<sha256>``), then the log's blob store (``<log>/blob/<sha256>``). A source that
    lacks a blob is passed over; one that sends other bytes than the proven ones is refused."""

    def __init__(self, log_url: str, mirrors: Sequence[str], timeout: float = 60.0) -> None:
        self.bases = [m.rstrip("/") for m in mirrors] + [log_url.rstrip("/") + "/blob"]
        self._http = httpx.Client(timeout=timeout, follow_redirects=True)

    def close(self) -> None:
        self._http.close()

    def get(self, sha256: str, size: int, what: str) -> bytes:
        """The ``size`` bytes whose SHA-256 is ``sha256`` from the first source that has them."""
        tried = []
        for base in self.bases:
            url = f"{base}/{sha256}"
            try:
                with self._http.stream("GET", url) as r:
                    if r.status_code != 200:
                        tried.append(f"{url}: {r.status_code}")
                        continue
                    data = bytearray()
                    for chunk in r.iter_bytes(_CHUNK):
                        data += chunk
                        if len(data) > size:
                            raise VerificationError(
                                f"{what} from {url} is larger than its proven {size} bytes"
                            )
            except httpx.HTTPError as e:
                tried.append(f"{url}: {e}")
                continue
            if hashlib.sha256(data).hexdigest() != sha256 or len(data) != size:
                raise VerificationError(
                    f"{what} from {url} is not the reproduced one (SHA-256 "
                    f"{hashlib.sha256(data).hexdigest()}, proven {sha256}): refusing it"
                )
            return bytes(data)
        raise OperationalError(f"no source has {what} (sha256 {sha256}): {'; '.join(tried)}")


def download(
    sources: BlobSources, reproduced: Reproduced, kinds: set[str] | None
) -> list[tuple[str, bytes]]:
    """(manifest path, bytes) of every proven artifact of ``kinds`` (all: None), checked."""
    wanted = sorted(
        (path, sha256, size)
        for sha256, (path, size) in reproduced.artifacts.items()
        if kinds is None or artifact_kind(path) in kinds
    )
    return [(path, sources.get(sha256, size, path)) for path, sha256, size in wanted]


@dataclass(frozen=True)
class Found:
    """A reproduced verdict ready to use: its crate, proof file and what the proof says."""

    name: str
    version: str
    proof: bytes
    reproduced: Reproduced

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}"


def find(client: LogClient, network: Network, spec: str, *, local: bool) -> Found:
    name, version = parse_spec(spec)
    version = version or choose_version(client, name)
    row, named = newest_verdict(client, name, version, local=local)
    network_id = network.network_id or named
    if not isinstance(network_id, str):
        raise RemoteError(f"the log at {client.url}", "an index answer without its network id")
    proof, reproduced = prove(client, network_id, network.policy, name, version, row)
    return Found(name, version, proof, reproduced)


def _describe(found: Found) -> str:
    done = found.reproduced
    cosigners = ", ".join(sorted(done.cosigners)) or "no witnesses"
    return (
        f"reproduced by {len(done.verdict.agreeing)} builders; verdict at leaf {done.index} of "
        f"{done.origin}, cosigned by {cosigners}"
    )


# ----------------------------------------------------------------------------- commands


def install(args: argparse.Namespace) -> int:
    try:
        return _install(args)
    except Refused as e:
        _say(f"synchronicity: {e}")
        return 1


def _install(args: argparse.Namespace) -> int:
    network = network_of(args)
    with LogClient(network.url, timeout=args.timeout) as client:
        found = find(client, network, args.spec, local=args.local)
        what = f"{found.name}@{found.version}"
        kinds = {artifact_kind(path) for path, _ in found.reproduced.artifacts.values()}
        if "bin" not in kinds:
            libraries = ", ".join(sorted(kinds)) or "no artifacts"
            raise Refused(
                f"{what} has no binary to install (it is a library: {libraries}); get it with: "
                f"synchronicity fetch {what} --out DIR"
            )
        sources = BlobSources(network.url, args.mirror or [], args.timeout)
        try:
            binaries = download(sources, found.reproduced, {"bin"})
        finally:
            sources.close()
    root = install_root(args.root)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / PROOF_DIR).mkdir(exist_ok=True)
    for path, data in binaries:
        atomic_write(root / "bin" / path, data, EXECUTABLE)
    proof_path = root / PROOF_DIR / f"{found.stem}{PROOF_SUFFIX}"
    atomic_write(proof_path, found.proof, PUBLIC)
    for path, _ in binaries:
        print(f"installed {root / 'bin' / path} ({what})")
    print(f"{what}: {_describe(found)}")
    print(f"proof: {proof_path}")
    return 0


def fetch(args: argparse.Namespace) -> int:
    try:
        return _fetch(args)
    except Refused as e:
        _say(f"synchronicity: {e}")
        return 1


def _fetch(args: argparse.Namespace) -> int:
    network = network_of(args)
    with LogClient(network.url, timeout=args.timeout) as client:
        found = find(client, network, args.spec, local=args.local)
        sources = BlobSources(network.url, args.mirror or [], args.timeout)
        try:
            artifacts = download(sources, found.reproduced, None)
        finally:
            sources.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.bundle:
        bundle = out / f"{found.stem}.tar"
        write_bundle(bundle, found.stem, artifacts, found.proof)
        print(f"bundle: {bundle} ({len(artifacts)} artifacts and the proof)")
    else:
        for path, data in artifacts:
            mode = EXECUTABLE if artifact_kind(path) == "bin" else PUBLIC
            atomic_write(out / path, data, mode)
            print(f"artifact: {out / path}")
        proof_path = out / f"{found.stem}{PROOF_SUFFIX}"
        atomic_write(proof_path, found.proof, PUBLIC)
        print(f"proof: {proof_path}")
    print(f"{found.name}@{found.version}: {_describe(found)}")
    return 0
