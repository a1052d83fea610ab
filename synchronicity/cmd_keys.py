"""``synchronicity keygen`` and ``synchronicity note verify``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from logserver.core import note
from logserver.core.errors import UsageError
from synchronicity.keys import generate, read_verifier, write_private_key


def keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not note.is_valid_key_name(args.name):
        raise UsageError(f"invalid key name {args.name!r}: no spaces, no '+', at most 255 bytes")
    if not args.force and (out.exists() or out.is_symlink()):
        raise UsageError(f"{out} exists; use --force to overwrite it")
    private, vkey = generate(args.name, cosignature_key=args.cosignature)
    write_private_key(out, private)  # 0600 from the first byte, also over an older file
    Path(f"{out}.vkey").write_text(vkey + "\n")
    print(vkey)
    return 0


def note_verify(args: argparse.Namespace) -> int:
    verifier = read_verifier(args.vkey)
    data = Path(args.file).read_bytes() if args.file else sys.stdin.buffer.read()
    opened = note.open_note(data, [verifier])
    print(f"OK: signed by {opened.sigs[0].name}+{opened.sigs[0].key_id:08x}")
    return 0
