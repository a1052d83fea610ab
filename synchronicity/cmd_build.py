"""``synchronicity build`` and ``synchronicity image bootstrap``: local sandboxed builds."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder import recipe as recipes
from builder.build import build_crate
from builder.image import (
    build_image_config,
    diff_image_config,
    ensure_build_image,
    update_lock,
)


def build(args: argparse.Namespace) -> int:
    spec: recipes.Recipe | str | Path = args.spec
    path = Path(args.spec)
    if path.suffix == ".json" and path.is_file():
        spec = recipes.from_json(path.read_bytes())
    elif path.suffix == ".crate":
        spec = path
    out = Path(args.out) if args.out else Path("build") / str(args.spec).replace("@", "-")
    result = build_crate(spec, out)
    print(f"recipe digest: {result.job_id}")
    if not result.ok:
        print(f"build failed: {result.reason} ({result.detail})")
        return 1
    print(f"output digest: {result.output_digest}")
    print(f"outputs: {out}")
    return 0


def bootstrap(args: argparse.Namespace) -> int:
    for name, config in (("build", build_image_config()), ("diff", diff_image_config())):
        update = args.update_lock
        image = update_lock(name, config) if update else ensure_build_image(config=config)
        print(f"{name} image {image.tag} (root file system sha256 {image.rootfs_sha256})")
    return 0
