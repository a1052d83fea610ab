"""Hermetic reproducible builds: recipes, sources, the build image, the Docker sandbox, manifests.

Of this project's packages, only :mod:`logserver.core` is imported here (a test checks it).
:mod:`builder.recipe` and :mod:`builder.manifest` are pure values; :mod:`builder.environment`
obtains the build environment a recipe pins by digest; :mod:`builder.build` is the one-call
API (``resolve_recipe`` pins a crate, ``build_crate`` builds it in the sandbox of
:mod:`builder.sandbox` and returns the output manifest).

A worked example: a recipe is a value whose canonical JSON names the job.

>>> from builder import recipe
>>> pinned = recipe.Recipe(
...     name="itoa", version="1.0.11", crate_sha256="0" * 64, cargo_lock="version = 3\\n",
...     toolchain=recipe.Toolchain("1.95.0", "a" * 40, "b" * 64), rootfs_sha256="c" * 64)
>>> recipe.from_json(pinned.to_json()) == pinned
True
>>> len(pinned.job_id)
64
"""

__all__ = [
    "archive",
    "build",
    "choice",
    "container",
    "debian",
    "diff",
    "envarchive",
    "environment",
    "envsource",
    "fstree",
    "image",
    "lockfile",
    "manifest",
    "recipe",
    "sandbox",
    "sources",
    "standins",
    "toolchain",
    "variation",
    "volumes",
]
