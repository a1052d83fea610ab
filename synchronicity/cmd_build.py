"""``synchronicity build``, ``image bootstrap`` and ``image export``: local sandboxed builds and
their environment.

``build NAME`` builds the newest version that is not yanked; without ``--features``,
``--all-features`` or ``--no-default-features`` the crate's docs.rs selection, else its default
features (``feature_choice``, also used by ``rebuild``). ``--env-source`` names where to get the
environment a recipe pins when this host lacks it (spec/builds.md section 10).
``image export`` is in :mod:`synchronicity.cmd_image`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from builder import recipe as recipes
from builder.build import build_crate, resolve_recipe
from builder.environment import EnvironmentOptions
from builder.envsource import parse_source
from builder.image import (
    build_image_config,
    diff_image_config,
    ensure_build_image,
    update_lock,
)
from builder.recipe import Features
from logserver.core.errors import UsageError


def feature_choice(args: argparse.Namespace) -> Features | None:
    """The features the command line asks for, or None to let the crate say (docs.rs)."""
    listed = tuple(f for f in re.split(r"[,\s]+", args.features or "") if f)
    if args.all_features and (listed or args.no_default_features):
        raise UsageError("--all-features excludes --features and --no-default-features")
    if not (listed or args.all_features or args.no_default_features):
        return None
    return Features(listed, not args.no_default_features, args.all_features).normalized()


def docs_rs_hint(selection: Features) -> str:
    """Why a build with the crate's docs.rs features may fail here, and what to do."""
    return (
        f"note: {selection.describe()} came from the crate's [package.metadata.docs.rs]; "
        "docs.rs builds them with a nightly toolchain, this builder with a stable one: "
        "choose with --features, --no-default-features or --all-features"
    )


def build(args: argparse.Namespace) -> int:
    features = feature_choice(args)
    path = Path(args.spec)
    if path.suffix == ".json" and path.is_file():
        if features is not None or args.pre:
            raise UsageError("a recipe already says which version and features to build")
        recipe = recipes.from_json(path.read_bytes())
    else:
        spec: str | Path = path if path.suffix == ".crate" else args.spec
        recipe = resolve_recipe(spec, features=features, pre=args.pre)
    out = Path(args.out) if args.out else Path("build") / f"{recipe.name}-{recipe.version}"
    local = path if path.suffix == ".crate" else None
    result = build_crate(recipe, out, local_crate=local, environment=environment_options(args))
    print(f"recipe digest: {result.job_id}")
    if not result.ok:
        print(f"build failed: {result.reason} ({result.detail})")
        if features is None and recipe.selection != Features():
            print(docs_rs_hint(recipe.selection))
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


def environment_options(args: argparse.Namespace) -> EnvironmentOptions:
    """``--env-source`` (repeatable) and ``--env-timeout``."""
    if args.env_timeout <= 0:
        raise UsageError("--env-timeout must be positive")
    sources = tuple(parse_source(text) for text in args.env_source or ())
    return EnvironmentOptions(sources=sources, timeout=args.env_timeout)
