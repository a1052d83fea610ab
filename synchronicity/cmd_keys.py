"""``synchronicity keygen`` and ``synchronicity note verify``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from logserver.core import note
from logserver.core.errors import UsageError
from synchronicity.keys import generate, read_verifier


def keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not note.is_valid_key_name(args.name):
        raise UsageError(f"invalid key name {args.name!r}: no spaces, no '+', at most 255 bytes")
    private, vkey = generate(args.name, cosignature_key=args.cosignature)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        fd = os.open(out, flags, 0o600)
    except FileExistsError:
        raise UsageError(f"{out} exists; use --force to overwrite it") from None
    with os.fdopen(fd, "w") as f:
        f.write(private + "\n")
    os.chmod(out, 0o600)
    Path(f"{out}.vkey").write_text(vkey + "\n")
    print(vkey)
    return 0


def note_verify(args: argparse.Namespace) -> int:
    verifier = read_verifier(args.vkey)
    data = Path(args.file).read_bytes() if args.file else sys.stdin.buffer.read()
    opened = note.open_note(data, [verifier])
    print(f"OK: signed by {opened.sigs[0].name}+{opened.sigs[0].key_id:08x}")
    return 0
