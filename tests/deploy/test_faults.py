"""Faults on a real container network: one log and four witnesses from the node image.

Each test builds (or finds) the node image without any registry, starts the five nodes on a
private Docker bridge network of its own (``deploy.dockernet``), appends entries continuously
and watches every quorum-cosigned checkpoint the log publishes, while it partitions nodes off
the network, SIGKILLs and restarts them, or restarts them one by one. After every test:

- no acknowledged entry is lost: each is in the log at its index, under the final cosigned
  checkpoint (inclusion proofs checked for a sample);
- no two conflicting checkpoints were cosigned by a quorum: everything published verifies
  with the network's policy and is consistent with the final checkpoint;
- every witness's mirror (``GET /status``) is consistent with the log;
- progress resumed within a bounded time after the fault was healed.

The test talks to each node on a second bridge network (``control``) that the nodes never use
among themselves, so a node cut off the mesh still answers. Docker missing makes these tests
fail (the fixture raises), never skip.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from builder.image import docker_client
from deploy.dockernet import ContainerNetwork, write_container_config
from deploy.image import ensure_node_image
from logserver.core import tlog
from logserver.core.checkpoint import Checkpoint
from logserver.core.errors import OperationalError, VerificationError

pytestmark = [pytest.mark.docker, pytest.mark.slow]

WITNESSES = ["witness-1", "witness-2", "witness-3", "witness-4"]
# Bound on the time from healing a fault to cosigned checkpoints covering the backlog.
RESUME_SECONDS = 30.0


@pytest.fixture(scope="module")
def node_image() -> str:
    client = docker_client()
    try:
        return ensure_node_image(client).tag
    finally:
        client.close()


@pytest.fixture
def net(node_image: str, tmp_path: Path) -> Iterator[ContainerNetwork]:
    write_container_config(tmp_path, round_ms=300, max_round_ms=2000, entries="open")
    client = docker_client()
    network = ContainerNetwork(client, node_image, tmp_path)
    try:
        network.create()
        network.start()
        yield network
    finally:
        for name in network.nodes:  # shown by pytest only when the test failed
            print(f"===== {name}\n{network.logs(name)[-4000:]}")
        try:
            network.remove()
        finally:
            client.close()


class Traffic:
    """Appends entries to the log and records every cosigned checkpoint it publishes."""

    def __init__(self, net: ContainerNetwork) -> None:
        self.net = net
        self.policy = net.config.policy()
        self.log_url = net.url("log")
        self.acked: dict[int, bytes] = {}
        self.seen: dict[int, bytes] = {}  # size -> root of every quorum-cosigned checkpoint
        self.errors: list[str] = []
        self.lock = threading.Lock()  # acked and seen are read while the threads add to them
        self.stop_appending = threading.Event()
        self.stop_watching = threading.Event()
        self.appender = threading.Thread(target=self._append, daemon=True)
        self.watcher = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Traffic:
        self.appender.start()
        self.watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_appending.set()
        self.stop_watching.set()
        self.appender.join(10)
        self.watcher.join(10)

    @property
    def published(self) -> int:
        with self.lock:
            return max(self.seen, default=0)

    @property
    def appended(self) -> int:
        """One past the highest acknowledged index."""
        with self.lock:
            return max(self.acked, default=-1) + 1

    def acknowledged(self) -> dict[int, bytes]:
        with self.lock:
            return dict(self.acked)

    def cosigned(self) -> dict[int, bytes]:
        with self.lock:
            return dict(self.seen)

    def _refresh_url(self) -> None:
        with contextlib.suppress(OperationalError):  # a restarted container may move
            self.log_url = self.net.url("log")

    def _append(self) -> None:
        i = 0
        with httpx.Client(timeout=3) as client:
            while not self.stop_appending.is_set():
                data = b"deploy fault test entry %d" % i
                try:
                    r = client.post(self.log_url + "/add-entry", content=data)
                except httpx.TransportError:
                    self._refresh_url()
                    time.sleep(0.2)
                    continue
                if r.status_code == 200:
                    with self.lock:
                        self.acked[int(r.json()["index"])] = data
                i += 1
                time.sleep(0.02)

    def _watch(self) -> None:
        with httpx.Client(timeout=3) as client:
            while not self.stop_watching.is_set():
                try:
                    r = client.get(self.log_url + "/checkpoint")
                except httpx.TransportError:
                    time.sleep(0.2)
                    continue
                if r.status_code == 200:
                    try:
                        cp = self.policy.verify(r.content).checkpoint
                    except VerificationError as e:
                        self.errors.append(f"published checkpoint fails the policy: {e}")
                    else:
                        with self.lock:
                            root = self.seen.setdefault(cp.size, cp.root_hash)
                        if root != cp.root_hash:
                            self.errors.append(f"two cosigned roots at size {cp.size}")
                time.sleep(0.05)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Wait until ``condition`` holds; return how long it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def status(net: ContainerNetwork, name: str) -> dict[str, object]:
    r = httpx.get(net.url(name) + "/status", timeout=5)
    r.raise_for_status()
    result: dict[str, object] = r.json()
    return result


def cosigned_size(net: ContainerNetwork, name: str) -> int:
    try:
        return int(str(status(net, name)["cosigned_size"]))
    except httpx.HTTPError:
        return -1


def caught_up(net: ContainerNetwork, name: str, target: int) -> Callable[[], bool]:
    return lambda: cosigned_size(net, name) >= target


def progress_after(traffic: Traffic, amount: int, what: str) -> float:
    start = traffic.published
    return wait_for(lambda: traffic.published >= start + amount, RESUME_SECONDS, what)


def assert_stalled(traffic: Traffic, seconds: float) -> None:
    """No new cosigned checkpoint for ``seconds`` while the log keeps taking entries."""
    time.sleep(1.0)  # what was already committed may still arrive
    stalled, appended = traffic.published, traffic.appended
    time.sleep(seconds)
    assert traffic.published == stalled, "a checkpoint was cosigned without a quorum"
    assert traffic.appended > appended, "the log must keep accepting entries meanwhile"
    assert traffic.appended > stalled


def resume_after_heal(traffic: Traffic) -> float:
    """Time until cosigned checkpoints cover everything acknowledged so far."""
    backlog = traffic.appended
    took = wait_for(lambda: traffic.published >= backlog, RESUME_SECONDS, "progress after healing")
    print(f"resumed past the backlog of {backlog} in {took:.1f}s")
    return took


def finish(net: ContainerNetwork, traffic: Traffic) -> None:
    """Stop appending, let everything get cosigned, and check the invariants."""
    traffic.stop_appending.set()
    traffic.appender.join(10)
    wait_for(lambda: traffic.published >= traffic.appended, RESUME_SECONDS, "the last entries")
    assert not traffic.errors, traffic.errors
    with httpx.Client(base_url=net.url("log"), timeout=10) as log:
        final = traffic.policy.verify(log.get("/checkpoint").content).checkpoint
        check_published_consistent(log, final, traffic.cosigned())
        check_acknowledged_entries(log, final, traffic.acknowledged())
        newest = Checkpoint.parse(log.get("/latest-checkpoint").content.split(b"\n\n")[0] + b"\n")
        assert newest.size >= final.size
        check_mirrors(net, log, newest)


def check_published_consistent(
    log: httpx.Client, final: Checkpoint, seen: dict[int, bytes]
) -> None:
    assert seen, "no cosigned checkpoint was published"
    for size, root in seen.items():
        if size == final.size:
            assert root == final.root_hash, f"two cosigned roots at size {size}"
            continue
        assert size < final.size, "the log published a checkpoint and later a smaller one"
        r = log.get("/proof/consistency", params={"old": size, "new": final.size})
        proof = [base64.b64decode(h) for h in r.json()["hashes"]]
        tlog.check_tree(proof, final.size, final.root_hash, size, root)


def check_acknowledged_entries(
    log: httpx.Client, final: Checkpoint, acked: dict[int, bytes]
) -> None:
    assert acked, "no entry was acknowledged"
    assert max(acked) < final.size, "an acknowledged entry is not under the final checkpoint"
    for index, data in sorted(acked.items()):
        assert log.get(f"/entry/{index}").content == data, f"acknowledged entry {index} lost"
    sample = sorted(acked)[::25] + [max(acked)]
    for index in sample:
        r = log.get("/proof/inclusion", params={"index": index, "size": final.size})
        proof = [base64.b64decode(h) for h in r.json()["hashes"]]
        leaf = tlog.record_hash(acked[index])
        tlog.check_record(proof, final.size, final.root_hash, index, leaf)


def check_mirrors(net: ContainerNetwork, log: httpx.Client, newest: Checkpoint) -> None:
    for name in WITNESSES:
        st = status(net, name)
        size, root = int(str(st["mirror_size"])), base64.b64decode(str(st["mirror_root"]))
        assert 0 < size <= newest.size, f"{name}: mirror size {size}, log {newest.size}"
        if size == newest.size:
            assert root == newest.root_hash, f"{name}: mirror root differs from the log's"
            continue
        r = log.get("/proof/consistency", params={"old": size, "new": newest.size})
        proof = [base64.b64decode(h) for h in r.json()["hashes"]]
        tlog.check_tree(proof, newest.size, newest.root_hash, size, root)


def test_partitioned_witness_is_outvoted_then_catches_up(net: ContainerNetwork) -> None:
    with Traffic(net) as traffic:
        wait_for(lambda: traffic.published >= 5, RESUME_SECONDS, "the first cosigned checkpoints")
        net.partition("witness-1")
        progress_after(traffic, 20, "progress with one witness cut off (f = 1)")
        assert cosigned_size(net, "witness-1") < traffic.published, "the partition did not cut"
        net.heal("witness-1")
        target = traffic.published
        took = wait_for(
            caught_up(net, "witness-1", target),
            RESUME_SECONDS,
            "the healed witness to catch up",
        )
        print(f"witness-1 caught up {target} in {took:.1f}s")
        finish(net, traffic)


def test_partitioned_log_stalls_then_resumes(net: ContainerNetwork) -> None:
    with Traffic(net) as traffic:
        wait_for(lambda: traffic.published >= 5, RESUME_SECONDS, "the first cosigned checkpoints")
        net.partition("log")
        assert_stalled(traffic, 3.0)
        net.heal("log")
        resume_after_heal(traffic)
        finish(net, traffic)


def test_sigkill_and_restart_log_and_witnesses(net: ContainerNetwork) -> None:
    with Traffic(net) as traffic:
        wait_for(lambda: traffic.published >= 5, RESUME_SECONDS, "the first cosigned checkpoints")
        net.kill("log")
        acked_before_kill = traffic.acknowledged()
        net.start("log")
        with httpx.Client(base_url=net.url("log"), timeout=10) as log:
            for index, data in acked_before_kill.items():
                r = log.get(f"/entry/{index}")
                assert r.content == data, f"entry {index} acknowledged before SIGKILL is lost"
        resume_after_heal(traffic)

        net.kill("witness-2")
        progress_after(traffic, 10, "progress with one witness killed")
        net.kill("witness-3")
        assert_stalled(traffic, 3.0)
        net.start("witness-2", "witness-3")
        resume_after_heal(traffic)
        finish(net, traffic)


def test_rolling_restart_keeps_quorum(net: ContainerNetwork) -> None:
    with Traffic(net) as traffic:
        wait_for(lambda: traffic.published >= 5, RESUME_SECONDS, "the first cosigned checkpoints")
        for name in WITNESSES:
            net.stop(name)
            progress_after(traffic, 5, f"progress while {name} restarts")
            net.start(name)
            target = traffic.published
            wait_for(
                caught_up(net, name, target),
                RESUME_SECONDS,
                f"{name} to catch up before the next restart",
            )
        net.stop("log")
        net.start("log")
        resume_after_heal(traffic)
        finish(net, traffic)


def test_partition_without_quorum_never_forks(net: ContainerNetwork) -> None:
    with Traffic(net) as traffic:
        wait_for(lambda: traffic.published >= 5, RESUME_SECONDS, "the first cosigned checkpoints")
        net.partition("witness-1")
        net.partition("witness-2")
        assert_stalled(traffic, 4.0)
        # Nobody commits without a quorum: every witness's cosigned size stands still.
        before = {name: cosigned_size(net, name) for name in WITNESSES}
        time.sleep(2.0)
        assert {name: cosigned_size(net, name) for name in WITNESSES} == before
        net.heal("witness-1")
        net.heal("witness-2")
        resume_after_heal(traffic)
        finish(net, traffic)
