"""Who may make the builders work: a witness's ``POST /request`` and ``PUT /crate``, for real.

A network of four builder-witnesses whose log and first witness run as real processes on
127.0.0.1 (the others stay down, so nothing commits and no build ever starts: a job waits for
its verdict for as long as the test runs). Against that witness:

- uploading a local ``.crate`` and requesting a build of a local recipe need the signature of a
  requester of the network config: 401 without, 403 by another key or for another network;
- a job is logged once: asking again, even through another witness, answers its index;
- the jobs waiting for a verdict are bounded (503), and each client address is rate-limited
  (429), both with Retry-After;
- a crates.io recipe may come from anyone, but must match the crates.io index (422).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from builder.recipe import MAX_RECIPE_BYTES, SOURCE_LOCAL, Recipe, Toolchain
from builder.sources import CrateStore
from logserver.client import LogClient
from logserver.core import note
from logserver.protocol.entries import MAX_LEAF_BYTES, Request
from logserver.protocol.requester import RequestSigner
from logserver.protocol.signed import Leaf
from synchronicity.localnet import LocalNetwork

TOOLCHAIN = Toolchain("1.80.1", "a" * 40, "b" * 64)


def local_recipe(name: str, crate: bytes) -> Recipe:
    return Recipe(
        name=name,
        version="0.1.0",
        crate_sha256=hashlib.sha256(crate).hexdigest(),
        cargo_lock=f'version = 4\n\n[[package]]\nname = "{name}"\nversion = "0.1.0"\n',
        toolchain=TOOLCHAIN,
        rootfs_sha256="c" * 64,
        source=SOURCE_LOCAL,
    )


def crates_io_recipe(name: str, version: str, crate_sha256: str) -> Recipe:
    return Recipe(
        name=name,
        version=version,
        crate_sha256=crate_sha256,
        cargo_lock=f'version = 4\n\n[[package]]\nname = "{name}"\nversion = "{version}"\n',
        toolchain=TOOLCHAIN,
        rootfs_sha256="c" * 64,
    )


@dataclass
class Builder:
    net: LocalNetwork
    client: httpx.Client
    requester: RequestSigner

    def signed(self, method: str, path: str, body: bytes) -> httpx.Response:
        headers = self.requester.headers(method, path, body)
        return self.client.request(method, path, content=body, headers=headers)

    def request_leaves(self) -> list[int]:
        with LogClient(self.net.log_url) as log:
            leaves = [Leaf.parse(data).entry.entry for data in log.leaves(0, log.size())]
        return [i for i, entry in enumerate(leaves) if isinstance(entry, Request)]


def assert_problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = r.json()
    assert body["status"] == status and body["detail"]
    return body


def start(tmp: Path, *witness_args: str, witnesses: int = 1) -> LocalNetwork:
    created = LocalNetwork.create(tmp / "net")
    net = LocalNetwork(created.dir, extra_witness_args=list(witness_args))
    net.log.start()
    for w in net.witnesses[:witnesses]:
        w.start()
    return net


@pytest.fixture
def builder(tmp_path: Path) -> Iterator[Builder]:
    net = start(tmp_path, "--request-rate", "0", "--max-pending-jobs", "3")
    try:
        with httpx.Client(base_url=net.config.witnesses[0].url, timeout=30) as client:
            yield Builder(net, client, net.requester())
    finally:
        net.stop()


def test_uploading_a_crate_needs_a_requester(builder: Builder, tmp_path: Path) -> None:
    crate = b"a local .crate, in spirit"
    sha = hashlib.sha256(crate).hexdigest()
    path = f"/crate/{sha}"
    # The log itself refuses unsigned blobs; the witness must not be a way around that.
    assert httpx.put(f"{builder.net.log_url}/blob/{sha}", content=crate).status_code == 403
    unsigned = builder.client.put(path, content=crate)
    assert_problem(unsigned, 401)
    assert "X-Request-Signature" in unsigned.headers["www-authenticate"]
    stranger = RequestSigner(
        note.Signer(builder.requester.name, bytes(32)), builder.requester.network_id
    )
    elsewhere = RequestSigner(builder.requester.signer, "another-network")
    nobody = RequestSigner(note.Signer("nobody.example", bytes(32)), builder.requester.network_id)
    for signer in (stranger, elsewhere, nobody):
        r = builder.client.put(path, content=crate, headers=signer.headers("PUT", path, crate))
        assert_problem(r, 403)
    for header in (
        "",
        "x",
        f"{builder.requester.name} not-base64!",
        f"{builder.requester.name} AAAA",
    ):
        r = builder.client.put(path, content=crate, headers={"X-Request-Signature": header})
        assert_problem(r, 403)
    # Signed for another body (or another path): refused.
    other = builder.requester.headers("PUT", path, b"other bytes")
    assert_problem(builder.client.put(path, content=crate, headers=other), 403)
    assert httpx.get(f"{builder.net.log_url}/blob/{sha}").status_code == 404
    assert builder.signed("PUT", path, crate).status_code == 201
    assert httpx.get(f"{builder.net.log_url}/blob/{sha}").content == crate
    assert_problem(builder.signed("PUT", f"/crate/{'0' * 64}", crate), 400)  # not its hash
    assert_problem(builder.signed("PUT", "/crate/not-a-hash", crate), 400)


def test_a_local_build_needs_a_requester_and_is_logged_once(builder: Builder) -> None:
    recipe = local_recipe("hello", b"hello crate")
    body = recipe.to_json()
    unsigned = builder.client.post("/request", content=body)
    assert_problem(unsigned, 401)
    forged = RequestSigner(note.Signer(builder.requester.name, bytes(32)), "x")
    r = builder.client.post(
        "/request", content=body, headers=forged.headers("POST", "/request", body)
    )
    assert_problem(r, 403)
    assert builder.request_leaves() == []

    first = builder.signed("POST", "/request", body)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer == {"job": recipe.job_id, "index": answer["index"], "existing": False}
    for _ in range(3):  # the same signed request again (a replay): the same job and index
        again = builder.signed("POST", "/request", body)
        assert again.json() == {"job": recipe.job_id, "index": answer["index"], "existing": True}
    assert builder.request_leaves() == [answer["index"]]
    assert_problem(builder.signed("POST", "/request", b'{"not": "a recipe"}'), 400)


def test_a_job_asked_of_two_witnesses_is_logged_once(tmp_path: Path) -> None:
    net = start(tmp_path, "--request-rate", "0", witnesses=2)
    try:
        requester = net.requester()
        recipe = local_recipe("twice", b"twice")
        body = recipe.to_json()
        headers = requester.headers("POST", "/request", body)
        answers = [
            httpx.post(w.url + "/request", content=body, headers=headers, timeout=30)
            for w in net.config.witnesses[:2]
        ]
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        first, second = (a.json() for a in answers)
        assert first["index"] == second["index"] and second["existing"]
        with LogClient(net.log_url) as log:
            assert log.size() == 1
    finally:
        net.stop()


def test_pending_jobs_are_bounded(builder: Builder) -> None:
    for i in range(3):
        r = builder.signed("POST", "/request", local_recipe(f"job-{i}", b"%d" % i).to_json())
        assert r.status_code == 200, r.text
    full = builder.signed("POST", "/request", local_recipe("one-too-many", b"x").to_json())
    assert "3 jobs are waiting" in str(assert_problem(full, 503)["detail"])
    assert int(full.headers["retry-after"]) > 0
    # A job that is already there is still answered.
    known = builder.signed("POST", "/request", local_recipe("job-1", b"1").to_json())
    assert known.status_code == 200 and known.json()["existing"]
    assert len(builder.request_leaves()) == 3


def test_each_client_is_rate_limited(tmp_path: Path) -> None:
    net = start(tmp_path, "--request-rate", "6", "--request-burst", "2")
    try:
        url = net.config.witnesses[0].url
        with httpx.Client(base_url=url, timeout=30) as client:
            sha = "0" * 64
            assert client.put(f"/crate/{sha}", content=b"x").status_code == 401
            assert client.post("/request", content=b"{}").status_code == 400
            limited = client.put(f"/crate/{sha}", content=b"x")
            assert_problem(limited, 429)
            assert 1 <= int(limited.headers["retry-after"]) <= 10
            assert_problem(client.post("/request", content=b"{}"), 429)
            assert client.get("/status").status_code == 200  # only the build endpoints
    finally:
        net.stop()


@pytest.mark.network
def test_anyone_may_ask_for_a_crates_io_release_the_index_knows(builder: Builder) -> None:
    cksum = CrateStore(builder.net.dir / "crates").index_cksum("itoa", "1.0.11")
    wrong = hashlib.sha256(b"a tampered itoa").hexdigest()
    for recipe, needle in [
        (crates_io_recipe("itoa", "1.0.11", wrong), cksum),
        (crates_io_recipe("itoa", "99.0.0", cksum), "not in the crates.io index"),
        (crates_io_recipe("no-such-crate-synchronicity", "1.0.0", cksum), "no crate"),
    ]:
        r = builder.client.post("/request", content=recipe.to_json())
        assert needle in str(assert_problem(r, 422)["detail"])
    assert builder.request_leaves() == []
    good = crates_io_recipe("itoa", "1.0.11", cksum)
    r = builder.client.post("/request", content=good.to_json())  # unsigned: anyone
    assert r.status_code == 200, r.text
    assert json.loads(r.content)["job"] == good.job_id
    assert builder.request_leaves() == [r.json()["index"]]


def test_a_recipe_too_large_for_a_request_leaf_is_413_before_anything(builder: Builder) -> None:
    """A recipe travels in the request leaf, at most 65,535 bytes: a larger one (a big
    Cargo.lock) is refused with 413 saying so, before the index is asked or the log written."""
    base = crates_io_recipe("itoa", "1.0.11", "0" * 64)
    padding = "# " + "x" * MAX_LEAF_BYTES + "\n"
    big = dataclasses.replace(base, cargo_lock=base.cargo_lock + padding)
    assert MAX_LEAF_BYTES < len(big.to_json()) < MAX_RECIPE_BYTES
    r = builder.client.post("/request", content=big.to_json())
    assert "too large for a request leaf" in str(assert_problem(r, 413)["detail"])
    assert builder.request_leaves() == []
