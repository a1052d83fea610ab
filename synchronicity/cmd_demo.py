"""``synchronicity demo``: the log end to end on this machine.

It starts a log server on 127.0.0.1, appends entries over HTTP, downloads a tlog-proof for one
of them, verifies it offline against a trust policy, and checks the log with the monitor twice.
Everything lives under ``--dir`` (default: a fresh temporary directory).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from logserver.client import LogClient
from logserver.core import note, proof
from logserver.core.policy import Policy
from synchronicity.keys import write_private_key
from synchronicity.launcher import ServerProcess
from witness.monitor import Monitor

ORIGIN = "demo.synchronicity.local/log"


def _step(message: str) -> None:
    print(f"• {message}", file=sys.stderr, flush=True)


def demo(args: argparse.Namespace) -> int:
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="synchronicity-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    key = root / "log.key"
    if not key.exists():
        private, _ = note.generate_key(ORIGIN)
        write_private_key(key, private)  # 0600 from the first byte
    signer = note.Signer.from_private_key(key.read_text().strip())
    _step(f"starting a log server for {ORIGIN} (data in {root / 'data'})")
    server = ServerProcess(
        [
            *("log", "serve", "--key", str(key), "--data", str(root / "data")),
            *("--listen", "127.0.0.1:0", "--open"),
        ]
    ).start()
    try:
        return _run(args, root, signer, server.url)
    finally:
        server.stop()


def _run(args: argparse.Namespace, root: Path, signer: note.Signer, url: str) -> int:
    policy = Policy.for_network(signer.vkey, [], 0, log_url=url)
    (root / "policy").write_bytes(policy.to_bytes())
    with LogClient(url, timeout=30.0) as log:
        monitor = Monitor(policy, root / "monitor", log.checkpoint, log.consistency_proof)
        indexes = [log.add_entry(f"demo entry {i}\n".encode()) for i in range(args.entries)]
        _step(f"appended {len(indexes)} entries at indexes {indexes[0]}..{indexes[-1]}")
        seen = monitor.check_once()
        _step(f"monitor: checkpoint verified at size {seen.checkpoint.size}")
        chosen = indexes[len(indexes) // 2]
        proof_path = root / f"entry-{chosen}.tlog-proof"
        proof_path.write_bytes(log.tlog_proof(chosen))
        _step(f"downloaded {proof_path}")
        for i in range(args.entries):
            log.add_entry(f"more {i}\n".encode())
        entry = f"demo entry {chosen - indexes[0]}\n".encode()
        verified = proof.verify_proof(proof_path.read_bytes(), entry, policy)
        _step(
            f"verified offline: entry {verified.index} is in {verified.checkpoint.origin} "
            f"at size {verified.checkpoint.size}"
        )
        seen = monitor.check_once()
        _step(f"monitor: size {seen.checkpoint.size} is consistent with the previous checkpoint")
    print(f"OK: proof {proof_path} verified; policy {root / 'policy'}")
    print(f"    try: synchronicity verify --policy {root / 'policy'} --proof {proof_path}")
    return 0
