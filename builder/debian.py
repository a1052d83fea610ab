"""The Debian package sets of the build and diff images and their lock format (pure).

A lock pins an image's packages: one ``name=version`` line per installed package, sorted,
after ``#`` comment lines (what was asked for, suite, architecture). ``installed_packages``
reads the same listing from an image's ``var/lib/dpkg/status``; ``lock_differences`` says
how a bootstrapped image differs from its lock.
"""

from __future__ import annotations

import re

from logserver.core.errors import FormatError

# What the sandboxed builds find installed: a C and C++ toolchain and the system libraries and
# tools that the most used ``-sys`` crates look for (OpenSSL, zlib, SQLite, curl, compression
# libraries, D-Bus, udev, PostgreSQL, fonts, sound, USB, libsodium), pkg-config, cmake, make,
# perl, nasm, the autotools, clang and libclang for bindgen, protoc with its well-known types.
# A subset, chosen by use, of docs.rs's build environment (rust-lang/crates-build-env).
# libfaketime is not for the crates: the sandbox preloads it to shift the clock of the builds
# whose host variation says so (builder/variation.py, spec/builds.md section 4.1).
BUILD_PACKAGES = (
    "autoconf",
    "automake",
    "clang",
    "cmake",
    "g++",
    "gcc",
    "libasound2-dev",
    "libbz2-dev",
    "libc6-dev",
    "libclang-dev",
    "libcurl4-openssl-dev",
    "libdbus-1-dev",
    "libelf-dev",
    "libfaketime",
    "libfontconfig1-dev",
    "libfreetype-dev",
    "liblzma-dev",
    "libpq-dev",
    "libprotobuf-dev",
    "libsodium-dev",
    "libsqlite3-dev",
    "libssl-dev",
    "libtool",
    "libudev-dev",
    "libusb-1.0-0-dev",
    "libzstd-dev",
    "make",
    "nasm",
    "perl",
    "pkg-config",
    "protobuf-compiler",
    "zlib1g-dev",
)
# diffoscope with the tools it needs for what builds output: ELF objects and ar archives
# (binutils), binary dumps (xxd), zip archives (unzip).
DIFF_PACKAGES = ("binutils", "diffoscope-minimal", "unzip", "xxd")
_LOCK_LINE = re.compile(r"(?P<name>[a-z0-9][a-z0-9+.-]*)=(?P<version>[A-Za-z0-9.+~:-]+)")


def parse_lock(text: str) -> dict[str, str]:
    """The ``name=version`` lines of a lock (comments and blank lines ignored), strictly."""
    pins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _LOCK_LINE.fullmatch(line)
        if match is None:
            raise FormatError("image lock", f"line {number} is not name=version: {line!r}")
        if match["name"] in pins:
            raise FormatError("image lock", f"package {match['name']} appears twice")
        pins[match["name"]] = match["version"]
    if list(pins) != sorted(pins):
        raise FormatError("image lock", "packages are not sorted")
    return pins


def lock_text(
    repository: str,
    installed: dict[str, str],
    *,
    suite: str,
    variant: str,
    architecture: str,
    packages: tuple[str, ...],
) -> str:
    """The lock that records ``installed`` (from ``installed_packages``)."""
    lines = [
        f"# Debian packages of the {repository} image, as installed: name=version.",
        "# Bootstrapping installs exactly these versions and fails if the archive no longer has",
        "# them; `synchronicity image bootstrap --update-lock` rewrites this file.",
        f"# suite={suite} variant={variant} architecture={architecture}",
        f"# packages={','.join(sorted(packages))}",
    ]
    lines += [f"{name}={version}" for name, version in sorted(installed.items())]
    return "\n".join(lines) + "\n"


def installed_packages(dpkg_status: str) -> dict[str, str]:
    """Package name → version of every installed package of a ``var/lib/dpkg/status`` text."""
    installed: dict[str, str] = {}
    for stanza in dpkg_status.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status") != "install ok installed":
            continue
        name, version = fields.get("Package", ""), fields.get("Version", "")
        if _LOCK_LINE.fullmatch(f"{name}={version}") is None:
            raise FormatError("dpkg status", f"package {name!r} version {version!r}")
        if name in installed:
            raise FormatError("dpkg status", f"package {name} is installed twice")
        installed[name] = version
    return dict(sorted(installed.items()))


def lock_differences(expected: dict[str, str], found: dict[str, str]) -> list[str]:
    """Human-readable differences between a lock and an installed package set."""
    lines = []
    for name in sorted(set(expected) | set(found)):
        want, got = expected.get(name), found.get(name)
        if want != got:
            lines.append(f"{name}: locked {want or '(absent)'}, installed {got or '(absent)'}")
    return lines
