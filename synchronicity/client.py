"""A client of a running network: ask a builder for a rebuild and follow the job in the log.

It reads the log only through its public, verifiable interface: entry bundles (checked against
the tiles' hashes by the witnesses; here decoded strictly), the published checkpoint (checked
against the trust policy) and tlog-proof files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from builder.recipe import Recipe
from logserver import tiles
from logserver.entries import Close, Commit, DiffReport, Entry, Leaf, Request, Reveal, Verdict
from logserver.errors import OperationalError
from logserver.policy import Policy

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Logged:
    index: int
    leaf: Leaf

    @property
    def entry(self) -> Entry:
        return self.leaf.entry.entry


class NetworkClient:
    def __init__(self, log_url: str, builder_url: str, timeout: float = 60.0) -> None:
        self.log_url = log_url.rstrip("/")
        self.builder_url = builder_url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> NetworkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, r: httpx.Response, what: str) -> httpx.Response:
        if r.status_code not in (200, 201):
            raise OperationalError(f"{what}: {r.status_code} {r.text[:300]}")
        return r

    def _get(self, url: str, what: str, **params: int) -> httpx.Response:
        try:
            return self._check(self.http.get(url, params=params or None), what)
        except httpx.HTTPError as e:
            raise OperationalError(f"{what}: {e}") from e

    def upload_crate(self, sha256: str, data: bytes) -> None:
        try:
            r = self.http.put(f"{self.builder_url}/crate/{sha256}", content=data)
        except httpx.HTTPError as e:
            raise OperationalError(f"uploading the crate: {e}") from e
        self._check(r, "uploading the crate")

    def request(self, recipe: Recipe) -> tuple[str, int]:
        try:
            r = self.http.post(f"{self.builder_url}/request", content=recipe.to_json())
        except httpx.HTTPError as e:
            raise OperationalError(f"requesting the build: {e}") from e
        body = self._check(r, "requesting the build").json()
        return str(body["job"]), int(body["index"])

    def find_request(self, job: str) -> int | None:
        """The index of the request for ``job`` if the log already holds one."""
        for logged in self.leaves(0, self.log_size()):
            if isinstance(logged.entry, Request) and logged.entry.job == job:
                return logged.index
        return None

    def log_size(self) -> int:
        r = self._get(f"{self.log_url}/readyz", "reading the log's size")
        return int(r.json()["size"])

    def leaves(self, start: int, end: int) -> Iterator[Logged]:
        """Leaves start..end-1, read through the entry bundles."""
        for bundle, skip in tiles.entry_bundle_plan(start, end):
            data = self._get(f"{self.log_url}/{bundle.path}", "reading entries").content
            entries = tiles.decode_entry_bundle(data, bundle.width)
            for offset in range(skip, len(entries)):
                yield Logged(bundle.n * tiles.TILE_WIDTH + offset, Leaf.parse(entries[offset]))

    def follow(
        self, job: str, start: int, timeout: float, progress: Progress
    ) -> tuple[list[Logged], Logged]:
        """Report the job's entries as they appear, until its verdict; return all and it."""
        seen: list[Logged] = []
        deadline = time.monotonic() + timeout
        cursor = start
        while time.monotonic() < deadline:
            size = self.log_size()
            for logged in self.leaves(cursor, size):
                if getattr(logged.entry, "job", None) != job:
                    continue
                seen.append(logged)
                progress(describe(logged))
                if isinstance(logged.entry, Verdict):
                    return seen, logged
            cursor = size
            time.sleep(0.2)
        raise OperationalError(f"no verdict for job {job} within {timeout:.0f} s")

    def wait_published(self, index: int, policy: Policy, timeout: float) -> bytes:
        """The first quorum-cosigned checkpoint that covers leaf ``index``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.http.get(f"{self.log_url}/checkpoint")
            if r.status_code == 200 and policy.verify_checkpoint(r.content).size > index:
                return r.content
            time.sleep(0.1)
        raise OperationalError(f"leaf {index} was not published with a witness quorum in time")

    def tlog_proof(self, index: int) -> bytes:
        return self._get(f"{self.log_url}/proof/tlog", "fetching the proof", index=index).content

    def blob(self, name: str) -> bytes:
        return self._get(f"{self.log_url}/blob/{name}", f"fetching blob {name}").content


def describe(logged: Logged) -> str:
    e = logged.entry
    match e:
        case Request():
            return f"[{logged.index}] request {e.display_name} (job {e.job[:16]})"
        case Commit():
            return f"[{logged.index}] {e.builder} committed"
        case Close():
            return f"[{logged.index}] commits closed ({e.reason}): {', '.join(e.committed)}"
        case Reveal():
            what = f"failed: {e.failure}" if e.failure else f"output {e.output_digest}"
            return f"[{logged.index}] {e.builder} revealed {what}"
        case Verdict():
            return f"[{logged.index}] verdict: {e.outcome} ({len(e.agreeing)} agree)"
        case DiffReport():
            return f"[{logged.index}] diff report {e.report_sha256}"
    return f"[{logged.index}] {type(e).__name__}"
