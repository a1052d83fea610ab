"""``synchronicity build``, ``image bootstrap`` and ``image export``: local sandboxed builds and
their environment.

``build NAME`` builds the newest version that is not yanked; without ``--features``,
``--all-features`` or ``--no-default-features`` the crate's docs.rs selection, else its default
features (``feature_choice``, also used by ``rebuild``). ``--env-source`` names where to get the
environment a recipe pins when this host lacks it (spec/builds.md section 10).
``--variation SPEC`` or ``--variation-of BUILDER`` builds under one host variation
(spec/builds.md section 4.1): a network builder's exact conditions for a job, recomputed.
``image export`` is in :mod:`synchronicity.cmd_image`.
"""

from __future__ import annotations

import argparse
import re
import sys
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
from builder.variation import Variation, parse_variation, variation_of
from logserver.core.errors import UsageError
from logserver.protocol.network import NetworkConfig

DEFAULT_NETWORK = ".synchronicity/network/network.json"


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
    variation = variation_choice(args, recipe.job_id)
    result = build_crate(
        recipe,
        out,
        local_crate=local,
        environment=environment_options(args),
        variation=variation,
    )
    print(f"recipe digest: {result.job_id}")
    if not result.ok:
        print(f"build failed: {result.reason} ({result.detail})")
        if features is None and recipe.selection != Features():
            print(docs_rs_hint(recipe.selection))
        return 1
    print(f"output digest: {result.output_digest}")
    print(f"outputs: {out}")
    return 0


def variation_choice(args: argparse.Namespace, job: str) -> Variation | None:
    """``--variation SPEC``, or ``--variation-of BUILDER`` (a name or 0-based position of the
    network config's builders) for ``--job`` (default: the recipe's job id); None: neither."""
    if args.variation is not None and args.variation_of is not None:
        raise UsageError("give --variation or --variation-of, not both")
    if args.variation_of is None:
        if args.job is not None or args.network is not None:
            raise UsageError("--job and --network go with --variation-of")
        if args.variation is None:
            return None
        variation = parse_variation(args.variation)
        print(f"variation: {variation.spec()}", file=sys.stderr)
        return variation
    path = Path(args.network or DEFAULT_NETWORK)
    if not path.is_file():
        raise UsageError(f"--variation-of needs a network config: {path} is not a file")
    builders = [w.name for w in NetworkConfig.parse(path.read_bytes()).witnesses]
    chosen = args.variation_of
    if chosen.isdigit() and int(chosen) < len(builders):
        chosen = builders[int(chosen)]
    if chosen not in builders:
        raise UsageError(f"{args.variation_of} is not a builder of {path}: {', '.join(builders)}")
    wanted = args.job or job
    if re.fullmatch(r"[0-9a-f]{64}", wanted) is None:
        raise UsageError("--job is a job id: 64 lowercase hex digits")
    if wanted != job:
        print(f"note: the variation of job {wanted}, not of this recipe's {job}", file=sys.stderr)
    variation = variation_of(wanted, chosen, builders)
    print(f"variation: {variation.spec()} ({chosen}'s for job {wanted})", file=sys.stderr)
    return variation


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
