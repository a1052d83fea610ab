"""Secrets are 0600, always: keys from ``keygen`` and ``network init`` (also ``--force`` over
files that were 0644, whatever the umask) and every state file written by ``atomic_write``
(a builder's commitment nonces)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from logserver.core.errors import OperationalError
from logserver.fsutil import atomic_write
from tests.support.procs import run_cli
from witness.worker_state import JobRecord, JobRecords


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    """Run the block (and the commands it starts) with ``value`` as the umask."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def key_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.key"))


def test_network_init_keys_are_0600_also_after_force_over_0644(tmp_path: Path) -> None:
    with umask(0):
        done = run_cli("network", "init", "--dir", str(tmp_path), "--witnesses", "4")
    assert done.returncode == 0, done.stderr
    keys = key_files(tmp_path)
    witnesses = [f"witness-{i}.key" for i in range(1, 5)]
    assert [k.name for k in keys] == ["log.key", "requester.key", *witnesses]
    assert {k.name: mode(k) for k in keys} == {k.name: 0o600 for k in keys}
    for k in keys:  # as a careless copy or an older version left them
        k.chmod(0o644)
    before = {k.name: k.read_text() for k in keys}
    with umask(0o022):
        again = run_cli("network", "init", "--dir", str(tmp_path), "--force")
    assert again.returncode == 0, again.stderr
    assert {k.name: mode(k) for k in keys} == {k.name: 0o600 for k in keys}
    assert all(k.read_text() != before[k.name] for k in keys)  # fresh keys, too
    assert mode(tmp_path / "network.json") & 0o044  # the config and policy are public


def test_keygen_force_over_a_0644_file(tmp_path: Path) -> None:
    out = tmp_path / "log.key"
    out.write_text("an old key\n")
    out.chmod(0o644)
    with umask(0):
        done = run_cli("keygen", "example.test/log", "--out", str(out), "--force")
    assert done.returncode == 0, done.stderr
    assert mode(out) == 0o600 and out.read_text().startswith("PRIVATE+KEY+")


def test_atomic_write_is_private_whatever_the_umask_or_leftovers(tmp_path: Path) -> None:
    record = tmp_path / "job.json"
    leftover = tmp_path / ".job.json.tmp"  # a crash between open and rename left it 0644
    leftover.write_bytes(b"half")
    leftover.chmod(0o644)
    record.write_bytes(b"{}")
    record.chmod(0o644)
    with umask(0):
        atomic_write(record, b'{"nonce": "secret"}')
    assert mode(record) == 0o600 and record.read_bytes() == b'{"nonce": "secret"}'
    assert not leftover.exists()
    atomic_write(tmp_path / "public", b"x", 0o644)
    assert mode(tmp_path / "public") == 0o644


def test_worker_nonce_records_are_0600(tmp_path: Path) -> None:
    """The build worker's job records hold commitment nonces: written through atomic_write."""
    records = JobRecords(tmp_path)
    record = JobRecord("ab" * 32, "built", 7, 0, {}, nonce="the secret nonce", failure="x")
    with umask(0):
        records.put(record)
        records.set_cursor(8)
    written = tmp_path / "records" / f"{record.job}.json"
    assert b"the secret nonce" in written.read_bytes()
    assert mode(written) == 0o600 and mode(tmp_path / "scanned") == 0o600
    assert JobRecords(tmp_path).get(record.job) == record


def test_records_an_older_worker_left_readable_are_narrowed(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "records").mkdir()
    left = [tmp_path / "jobs" / "old.json", tmp_path / "records" / "x.json", tmp_path / "cursor"]
    for path in left[::2]:
        path.write_text("{}")
        path.chmod(0o644)
    JobRecords(tmp_path)
    assert [mode(path) for path in left[::2]] == [0o600, 0o600]


def test_a_corrupt_cursor_is_an_operational_error(tmp_path: Path) -> None:
    (tmp_path / "scanned").write_text("²")
    with pytest.raises(OperationalError, match="corrupt"):
        JobRecords(tmp_path).cursor()
