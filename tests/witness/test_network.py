"""A log and four witness processes on 127.0.0.1, with witnesses killed by SIGKILL.

Entries are appended continuously while an observer records every quorum-cosigned checkpoint
the log publishes. One witness down: cosigned checkpoints keep advancing; restarted, it catches
up. Two down: no quorum, so progress stops, and nothing conflicting is ever cosigned; restored,
progress resumes. At the end every published checkpoint is consistent with every other, and
every witness's mirror agrees with the log.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from logserver.core import tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.policy import Policy
from synchronicity.localnet import LocalNetwork


class Observer:
    def __init__(self, url: str, policy: Policy) -> None:
        self.url = url
        self.policy = policy
        self.seen: dict[int, bytes] = {}  # size -> root, of quorum-cosigned checkpoints
        self.acked: list[int] = []
        self.stop = threading.Event()
        self.errors: list[str] = []

    @property
    def published(self) -> int:
        return max(self.seen, default=0)

    def watch(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as c:
            while not self.stop.is_set():
                r = c.get("/checkpoint")
                if r.status_code == 200:
                    cp = self.policy.verify(r.content).checkpoint
                    if self.seen.setdefault(cp.size, cp.root_hash) != cp.root_hash:
                        self.errors.append(f"two cosigned roots at size {cp.size}")
                time.sleep(0.02)

    def append(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as c:
            i = 0
            while not self.stop.is_set():
                r = c.post("/add-entry", content=b"entry %d" % i)
                if r.status_code == 200:
                    self.acked.append(r.json()["index"])
                i += 1
                time.sleep(0.02)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def status(url: str) -> dict[str, object]:
    r = httpx.get(url + "/status", timeout=5)
    result: dict[str, object] = r.json()
    return result


@pytest.mark.slow
def test_witnesses_survive_kills_and_never_fork(tmp_path: Path) -> None:
    net = LocalNetwork.create(tmp_path, round_ms=400, max_round_ms=3000, entries="open").start()
    obs = Observer(net.log_url, net.config.policy())
    threads = [threading.Thread(target=obs.watch), threading.Thread(target=obs.append)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: obs.published >= 5, 30, "the first cosigned checkpoints")

        # One witness down (f = 1): progress goes on.
        net.witnesses[0].kill()
        at_kill = obs.published
        wait_for(lambda: obs.published >= at_kill + 20, 30, "progress with one witness down")

        # Restarted, it catches up on what it missed.
        net.witnesses[0].start()
        target = obs.published
        wait_for(
            lambda: int(str(status(net.witnesses[0].url)["cosigned_size"])) >= target,
            30,
            "the restarted witness to catch up",
        )

        # Two witnesses down: no quorum, no progress.
        net.witnesses[1].kill()
        net.witnesses[2].kill()
        time.sleep(1.0)  # what was already committed may still arrive
        stalled = obs.published
        time.sleep(4.0)
        assert obs.published == stalled, "a checkpoint was cosigned without a quorum"
        assert obs.acked[-1] >= stalled, "the log must keep accepting entries meanwhile"

        # Restored: progress resumes past everything appended while stalled.
        net.witnesses[1].start()
        net.witnesses[2].start()
        backlog = obs.acked[-1] + 1
        wait_for(lambda: obs.published >= backlog, 40, "progress after restoring the quorum")
    finally:
        obs.stop.set()
        for t in threads:
            t.join()
        try:
            check_consistency(net, obs)
        finally:
            net.stop()
    assert not obs.errors, obs.errors


def check_consistency(net: LocalNetwork, obs: Observer) -> None:
    with httpx.Client(base_url=net.log_url, timeout=10) as c:
        latest = Checkpoint.parse(c.get("/checkpoint").content.split(b"\n\n")[0] + b"\n")
        for size, root in obs.seen.items():
            if size == latest.size:
                assert root == latest.root_hash
                continue
            r = c.get("/proof/consistency", params={"old": size, "new": latest.size})
            proof = [base64.b64decode(h) for h in r.json()["hashes"]]
            tlog.check_tree(proof, latest.size, latest.root_hash, size, root)
        signed = c.get("/latest-checkpoint").content
        newest = Checkpoint.parse(signed.split(b"\n\n")[0] + b"\n")
        for w in net.witnesses:
            if w.proc is None or w.proc.poll() is not None:
                continue
            st = status(w.url)
            size, root = int(str(st["mirror_size"])), base64.b64decode(str(st["mirror_root"]))
            assert 0 < size <= newest.size
            if size == newest.size:
                assert root == newest.root_hash
                continue
            r = c.get("/proof/consistency", params={"old": size, "new": newest.size})
            proof = [base64.b64decode(h) for h in r.json()["hashes"]]
            tlog.check_tree(proof, newest.size, newest.root_hash, size, root)


def _metric(url: str, name: str, label: str = "") -> float:
    """A counter or gauge from a witness's /metrics (0 when absent)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name) and (not label or label in line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
def test_a_witness_away_past_the_pruning_horizon_rejoins_by_state_sync(tmp_path: Path) -> None:
    """The horizon is a setting (--keep-rounds 16): the peers prune the blocks the absent
    witness lacks within seconds; it rejoins, co-signs again, and then another witness can go
    down and the network still makes progress (which needs the rejoined one's vote)."""
    LocalNetwork.create(tmp_path, round_ms=300, max_round_ms=2000, entries="open")
    net = LocalNetwork(tmp_path, extra_witness_args=["--keep-rounds", "16"]).start()
    obs = Observer(net.log_url, net.config.policy())
    threads = [threading.Thread(target=obs.watch), threading.Thread(target=obs.append)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: obs.published >= 5, 30, "the first cosigned checkpoints")
        absent = net.witnesses[3]
        absent.kill()

        def heights() -> list[int]:
            return [int(str(status(w.url)["committed_height"])) for w in net.witnesses[:3]]

        start = min(heights())
        wait_for(lambda: min(heights()) > start + 80, 60, "the others to commit far past it")
        absent.start()
        target = obs.published
        wait_for(
            lambda: int(str(status(absent.url)["cosigned_size"])) >= target,
            30,
            "the returning witness to co-sign again",
        )
        syncs = _metric(absent.url, "witness_consensus_events_total", 'kind="state-sync"')
        assert syncs >= 1, "it could only have rejoined by state sync: history was pruned"
        net.witnesses[0].kill()  # now the network needs the returned witness
        at_kill = obs.published
        wait_for(lambda: obs.published >= at_kill + 10, 30, "progress with witness 1 down")
    finally:
        obs.stop.set()
        for t in threads:
            t.join()
        try:
            check_consistency(net, obs)
        finally:
            net.stop()
    assert not obs.errors, obs.errors


@pytest.mark.slow
def test_an_idle_network_does_not_spin_rounds(tmp_path: Path) -> None:
    net = LocalNetwork.create(tmp_path, round_ms=300, max_round_ms=2000, entries="open").start()
    try:
        r = httpx.post(net.log_url + "/add-entry", content=b"one entry", timeout=5)
        assert r.status_code == 200
        wait_for(
            lambda: int(str(status(net.witnesses[0].url)["cosigned_size"])) >= 1,
            20,
            "the entry to be cosigned",
        )
        time.sleep(2)
        first = int(str(status(net.witnesses[0].url)["round"]))
        time.sleep(10)
        idle_rounds = int(str(status(net.witnesses[0].url)["round"])) - first
        # Rounds end by timeouts of up to max_round_ms: about 10 s / 2 s, not 10 s / 75 ms.
        assert idle_rounds <= 10, idle_rounds
        r = httpx.post(net.log_url + "/add-entry", content=b"news", timeout=5)
        began = time.monotonic()
        wait_for(
            lambda: int(str(status(net.witnesses[0].url)["cosigned_size"])) >= 2,
            20,
            "news to be cosigned at once",
        )
        assert time.monotonic() - began < 3.0  # the leader proposes when the log has news
    finally:
        net.stop()
