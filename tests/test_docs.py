"""Documentation that can rot is checked: package examples run, public names are documented.

Every package's ``__init__.py`` has a docstring and an ``__all__``; the worked examples in them
(``>>>`` lines) run as doctests; every module has a docstring, and so does every public class.
"""

from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGES = ("logserver", "witness", "builder", "synchronicity", "deploy")
INITS = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("__init__.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("init", INITS, ids=[_module_name(p) for p in INITS])
def test_package_names_its_api_and_its_example_runs(init: Path) -> None:
    tree = ast.parse(init.read_text())
    assert ast.get_docstring(tree), f"{init} has no docstring"
    names = [
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    ]
    assert "__all__" in names, f"{init} does not name its public API in __all__"
    module = importlib.import_module(_module_name(init))
    for name in module.__all__:
        assert hasattr(module, name) or importlib.util.find_spec(f"{module.__name__}.{name}"), (
            f"{module.__name__}.__all__ names {name!r}, which does not exist"
        )
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert failures == 0


def test_every_module_and_public_class_has_a_docstring() -> None:
    missing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            where = path.relative_to(ROOT)
            if not ast.get_docstring(tree):
                missing.append(f"{where}: module")
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ClassDef)
                    and not node.name.startswith("_")
                    and not ast.get_docstring(node)
                ):
                    missing.append(f"{where}:{node.lineno} class {node.name}")
    assert missing == []
