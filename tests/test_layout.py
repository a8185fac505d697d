"""The repository's layout: bench/ and harness/ never import from tests/ (tests are not a
library; what both need lives in harness/), and harness/ is not an installed package."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imports_of(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    """Every module an ``import`` / ``from ... import`` of the source names (relative imports
    resolved against ``package``), and ``importlib.import_module("...")`` literals."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            found.extend((node.lineno, f"{mod}.{a.name}") for a in node.names)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def from_tests(source: str, rel: Path) -> list[str]:
    return [f"{rel}:{line}: {mod}" for line, mod in imports_of(source, rel.parent.parts)
            if mod == "tests" or mod.startswith("tests.")]


@pytest.mark.parametrize("top", ["bench", "harness"])
def test_no_imports_from_tests(top: str) -> None:
    files = sorted((REPO / top).rglob("*.py"))
    assert files, f"{top}/ has no Python files"
    bad = [hit for f in files for hit in from_tests(f.read_text(), f.relative_to(REPO))]
    assert not bad, "imports from tests/ (move what is shared to harness/):\n" + "\n".join(bad)


def test_the_check_sees_every_import_form() -> None:
    source = ("import tests.conftest\nfrom tests import harness\nfrom . import fakes\n"
              "import importlib\nimportlib.import_module('tests.x')\nimport testsuite\n")
    hits = from_tests(source, Path("tests/gateway/probe.py"))
    assert [h.split(": ", 1)[1] for h in hits] == [
        "tests.conftest", "tests", "tests.harness", "tests.gateway", "tests.gateway.fakes",
        "tests.x"]
    assert from_tests("import testsuite\nfrom bench import common\n", Path("bench/x.py")) == []


def test_harness_is_not_installed() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    packages = cfg["options"]["packages"].split()
    assert "harness" not in packages
    assert "tests" not in packages
    assert {"swarmd", "gatewayd", "droned", "swarmlib"} <= set(packages)
