"""The package layout's rules, read from the code's own imports (``ast``), not from a list.

- ``logserver/core`` imports only the standard library, ``nacl`` and itself (a verify-only
  install is the standard library and PyNaCl);
- ``logserver/protocol`` adds only itself;
- ``witness/consensus`` imports only the standard library, ``nacl``, ``logserver.core`` and
  itself;
- ``builder`` imports, of ours, only ``logserver.core`` and itself;
- nothing in ``logserver`` imports ``witness``, ``builder`` or ``synchronicity``; nothing in
  ``witness`` or ``builder`` imports ``synchronicity``;
- one canonical-JSON module; no two public classes with one name; no function over 100 lines.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGES = ("logserver", "witness", "builder", "synchronicity", "deploy")
OURS = set(PACKAGES) | {"tests"}
STDLIB = set(sys.stdlib_module_names)
MAX_FUNCTION_LINES = 100


def _modules(package: str, root: Path = ROOT) -> Iterator[Path]:
    yield from sorted((root / package).rglob("*.py"))


def _imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative ones resolved."""
    package = list(path.relative_to(root).parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module


def _violations(package: str, allowed: set[str], third_party: bool, root: Path = ROOT) -> list[str]:
    """Imports in ``package`` of modules outside ``allowed`` prefixes (and the stdlib)."""
    out = []
    for path in _modules(package, root):
        for line, module in _imports(path, root):
            top = module.split(".")[0]
            if top in STDLIB or top == "__future__":
                continue
            if any(module == a or module.startswith(a + ".") for a in allowed):
                continue
            if third_party and top not in OURS:
                continue
            out.append(f"{path.relative_to(root)}:{line} imports {module}")
    return out


@pytest.mark.parametrize(
    ("package", "allowed", "third_party"),
    [
        ("logserver/core", {"nacl", "logserver.core"}, False),
        ("logserver/protocol", {"nacl", "logserver.core", "logserver.protocol"}, False),
        ("witness/consensus", {"nacl", "logserver.core", "witness.consensus"}, False),
        ("builder", {"logserver.core", "builder"}, True),
        ("logserver", {"logserver"}, True),
        ("witness", {"logserver", "builder", "witness"}, True),
    ],
)
def test_imports_follow_the_layers(package: str, allowed: set[str], third_party: bool) -> None:
    assert list(_modules(package)), f"{package} has no modules"
    assert _violations(package, allowed, third_party) == []


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    """Negative control: the checker sees an import it must refuse."""
    core = tmp_path / "logserver" / "core"
    core.mkdir(parents=True)
    (core / "probe.py").write_text("import json\nfrom logserver import storage\nimport docker\n")
    (core / "fine.py").write_text("import nacl.signing\nfrom logserver.core import tlog\n")
    found = _violations("logserver/core", {"nacl", "logserver.core"}, False, tmp_path)
    assert len(found) == 2
    assert any("imports logserver" in v for v in found)
    assert any("imports docker" in v for v in found)


def test_one_canonical_json_module() -> None:
    modules = [
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in _modules(package)
        if "canon" in path.stem
    ]
    assert modules == ["logserver/core/canonical_json.py"]


def test_no_two_public_classes_share_a_name() -> None:
    homes: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in _modules(package):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    homes[node.name].append(path.relative_to(ROOT).as_posix())
    assert {name: where for name, where in homes.items() if len(where) > 1} == {}


def test_no_function_is_longer_than_a_screenful_or_two() -> None:
    long = []
    for package in PACKAGES:
        for path in _modules(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {lines}")
    assert long == []
