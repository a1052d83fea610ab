"""A tiny standalone add-checkpoint witness: ``python -m witness.addcheckpoint_runner``.

For tests and small deployments; the witness node mounts the same routes on its own app.
Binds the socket itself (``--listen 127.0.0.1:0`` lets the kernel pick the port), then prints
one JSON line ``{"listen": "<host>:<port>", "vkeys": [...]}`` on stderr and serves with uvicorn
in this single process (one LMDB writer). Exit codes: 0 clean stop, 2 usage, 3 operational.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from logserver.cosignature import CosignatureSigner
from logserver.errors import FormatError, OperationalError, UsageError
from witness.addcheckpoint import MAX_REQUEST_BYTES, WitnessedLogs
from witness.addcheckpoint_http import AddCheckpointHandler, create_app
from witness.witness_state import WitnessState


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m witness.addcheckpoint_runner")
    parser.add_argument("--data", required=True, help="directory of the LMDB witness state")
    parser.add_argument(
        "--key",
        action="append",
        required=True,
        help="file holding a PRIVATE+KEY cosignature/v1 (type 0x04) key; repeatable",
    )
    parser.add_argument(
        "--log",
        action="append",
        nargs=2,
        metavar=("ORIGIN", "VKEY"),
        default=[],
        help="a log to witness and one of its Ed25519 note keys; repeatable",
    )
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    parser.add_argument("--max-body", type=int, default=MAX_REQUEST_BYTES)
    return parser


def _bind(listen: str) -> socket.socket:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen wants HOST:PORT, not {listen!r}")
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise OperationalError(f"cannot listen on {listen}: {exc.strerror}") from exc
    sock.listen(512)
    return sock


def _read_signer(path: str) -> CosignatureSigner:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise OperationalError(f"cannot read key file {path}: {exc.strerror}") from exc
    return CosignatureSigner.from_private_key(text)


def serve(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    signers = [_read_signer(path) for path in args.key]
    logs = WitnessedLogs.from_pairs((origin, vkey) for origin, vkey in args.log)
    sock = _bind(args.listen)
    handler = AddCheckpointHandler(
        logs, signers, WitnessState(Path(args.data)), max_body=args.max_body
    )
    host, port = sock.getsockname()[:2]
    print(
        json.dumps({"listen": f"{host}:{port}", "vkeys": [s.vkey for s in signers]}),
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(create_app(handler), log_config=None, access_log=False, lifespan="off")
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler found before
    # it started: make that handler a clean exit, so the state is closed and the code is 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        handler.close()
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return serve(sys.argv[1:] if argv is None else argv)
    except (UsageError, FormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
