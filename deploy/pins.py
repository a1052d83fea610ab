"""The node image's dependency lock: exact versions of everything ``synchronicity[server]`` needs.

The versions are those installed in the environment that builds the image (the one the tests
ran in), so the image runs what was tested. ``resolve_pins`` walks requirement strings through
a lookup of installed distributions; it is pure (the lookup is passed in) so it can be tested
on fabricated metadata. ``lock_text`` renders the pins as a pip requirements file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from logserver.core.errors import FormatError, UsageError


@dataclass(frozen=True)
class Installed:
    """An installed distribution: its version and its declared requirement strings."""

    version: str
    requires: tuple[str, ...]


Lookup = Callable[[str], Installed | None]
MarkerEnvironment = dict[str, str]


def _applies(marker: Marker | None, extra: str, environment: MarkerEnvironment | None) -> bool:
    if marker is None:
        return True
    return marker.evaluate({**(environment or {}), "extra": extra})


def resolve_pins(
    roots: Iterable[str], lookup: Lookup, environment: MarkerEnvironment | None = None
) -> dict[str, str]:
    """Exact versions of ``roots`` and all they require, as installed: {canonical name: version}.

    A root or requirement that is not installed, or installed at a version its requirer
    excludes, is a UsageError: the building environment is not the one the lock should pin.
    """
    pins: dict[str, str] = {}
    done: set[tuple[str, str]] = set()  # (name, extra) pairs already expanded
    pending: list[tuple[str, str]] = [(text, "") for text in roots]
    while pending:
        text, required_by_extra = pending.pop()
        try:
            requirement = Requirement(text)
        except InvalidRequirement as e:
            raise FormatError("requirement", f"{text!r}: {e}") from e
        if not _applies(requirement.marker, required_by_extra, environment):
            continue
        name = canonicalize_name(requirement.name)
        installed = lookup(name)
        if installed is None:
            raise UsageError(f"{name} is required ({text!r}) but not installed")
        if not requirement.specifier.contains(installed.version, prereleases=True):
            raise UsageError(f"{name} {installed.version} is installed but {text!r} is required")
        pins[name] = installed.version
        for extra in ["", *sorted(canonicalize_name(e) for e in requirement.extras)]:
            if (name, extra) in done:
                continue
            done.add((name, extra))
            pending.extend((child, extra) for child in installed.requires)
    return dict(sorted(pins.items()))


def lock_text(pins: dict[str, str]) -> str:
    """A requirements file: one ``name==version`` line a pin, sorted by name."""
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
