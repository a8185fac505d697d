"""Only supported interfaces of our dependencies (issue 14).

Two rules, checked over every Python file of the project (daemons, library, drone, CLI, bench,
harness, demo and the tests themselves):

1. A module of a third-party package is imported only if it is one that package documents
   (the allowlist below names each package's documented modules, with where they are
   documented). A package missing from the list fails the test: add it with its documentation.
   A module path with a segment that starts with ``_`` is never documented.
2. No underscore attribute of another package's object is read or written. Statically we
   cannot know every object's type, so an access ``x._name`` (not on ``self``/``cls``, not a
   dunder) is a violation when ``x`` comes from a third-party import (``trio._core``), or when
   no class or module of this project defines ``_name`` at all (so it can only be someone
   else's: ``ws._stream``). The few underscore names the standard library documents
   (``os._exit``, the namedtuple API) are allowed.

The checker is tested on small snippets first, so a checker that finds nothing cannot pass.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("swarmd", "gatewayd", "droned", "lib", "bench", "harness", "demo", "tests")
PROJECT_PACKAGES = {"swarmd", "gatewayd", "droned", "swarmlib", "bench", "harness", "demo", "tests"}

# package -> the modules its documentation presents as its API
DOCUMENTED: dict[str, set[str]] = {
    # https://trio.readthedocs.io/en/stable/reference-core.html, reference-io.html, reference-testing.html
    "trio": {"trio", "trio.abc", "trio.lowlevel", "trio.socket", "trio.testing", "trio.to_thread",
             "trio.from_thread"},
    # https://hypercorn.readthedocs.io/en/latest/how_to_guides/api_usage.html
    "hypercorn": {"hypercorn.config", "hypercorn.trio"},
    # https://quart.palletsprojects.com/en/latest/reference/api.html
    "quart": {"quart"},
    # https://github.com/pgjones/quart-trio#usage
    "quart_trio": {"quart_trio"},
    # https://werkzeug.palletsprojects.com/en/stable/exceptions/
    "werkzeug": {"werkzeug.exceptions"},
    # https://trio-websocket.readthedocs.io/en/stable/api.html
    "trio_websocket": {"trio_websocket"},
    # https://h11.readthedocs.io/en/latest/api.html
    "h11": {"h11"},
    # https://python-hyper.org/projects/wsproto/en/stable/api.html
    "wsproto": {"wsproto", "wsproto.events", "wsproto.connection", "wsproto.utilities",
                "wsproto.handshake", "wsproto.extensions"},
    # https://www.attrs.org/en/stable/api.html
    "attrs": {"attrs"},
    "attr": {"attr"},
    # https://catt.rs/en/stable/api.html
    "cattrs": {"cattrs", "cattrs.preconf.json", "cattrs.gen", "cattrs.errors", "cattrs.strategies",
               "cattrs.v"},
    # https://www.python-httpx.org/api/
    "httpx": {"httpx"},
    # https://prometheus.github.io/client_python/ (prometheus_client.core: "Custom Collectors")
    "prometheus_client": {"prometheus_client", "prometheus_client.core"},
    # https://dev.gentoo.org/~zmedico/portage/doc/api/ (portage's public API documentation)
    "portage": {"portage", "portage.versions", "portage.dep", "portage.dbapi", "portage.dbapi.bintree",
                "portage.xpak", "portage.gpkg", "portage.binpkg", "portage.util", "portage.exception",
                "portage.getbinpkg"},
    # test and benchmark tools
    "pytest": {"pytest"},  # https://docs.pytest.org/en/stable/reference/reference.html
    "hypothesis": {"hypothesis", "hypothesis.strategies", "hypothesis.stateful"},
    "playwright": {"playwright.sync_api"},  # https://playwright.dev/python/docs/api/class-playwright
    "yaml": {"yaml"},  # https://pyyaml.org/wiki/PyYAMLDocumentation
    "jsonschema": {"jsonschema"},  # https://python-jsonschema.readthedocs.io/en/stable/api/
    "referencing": {"referencing", "referencing.jsonschema"},  # https://referencing.readthedocs.io/
    "schemathesis": {"schemathesis"},  # https://schemathesis.readthedocs.io/
}

# Underscore names the standard library documents as API.
STDLIB_DOCUMENTED = {"_exit", "_replace", "_asdict", "_fields", "_make", "_field_defaults",
                     "_getframe", "_current_frames"}


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _is_submodule(module: str) -> bool:
    """Whether ``module`` (dotted) is a module on disk, found without importing anything."""
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return False
    for base in spec.submodule_search_locations:
        path = Path(base, *rest.split("."))
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return True
    return False


def _is_foreign(module: str) -> bool:
    top = _top(module)
    return bool(top) and top not in PROJECT_PACKAGES and top not in sys.stdlib_module_names \
        and top != "__future__"


def import_violations(tree: ast.AST, where: str) -> Iterator[str]:
    """Imports of third-party modules their package does not document."""
    for node in ast.walk(tree):
        modules: list[tuple[str, list[str]]] = []
        if isinstance(node, ast.Import):
            modules = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [(node.module, [alias.name for alias in node.names])]
        for module, names in modules:
            if not _is_foreign(module):
                continue
            top = _top(module)
            if top not in DOCUMENTED:
                yield f"{where}:{node.lineno}: {module}: package {top!r} is not in the " \
                      "documented-API list (add it with its documentation)"
            elif any(part.startswith("_") for part in module.split(".")) \
                    or module not in DOCUMENTED[top]:
                yield f"{where}:{node.lineno}: {module} is not a documented module of {top}"
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    yield f"{where}:{node.lineno}: from {module} import {name}: a private name"
                elif top in DOCUMENTED and _is_submodule(f"{module}.{name}") \
                        and f"{module}.{name}" not in DOCUMENTED[top]:
                    yield f"{where}:{node.lineno}: from {module} import {name}: " \
                          f"{module}.{name} is not a documented module of {top}"


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def module_attribute_violations(tree: ast.AST, where: str) -> Iterator[str]:
    """Undocumented submodules reached as attributes: ``import hypercorn.trio as h`` then
    ``h.tcp_server``, or ``import portage`` then ``portage.binpkg``."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_foreign(alias.name):
                    if alias.asname:
                        names[alias.asname] = alias.name
                    else:
                        names[_top(alias.name)] = _top(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and _is_foreign(node.module):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if _is_submodule(full):
                    names[alias.asname or alias.name] = full
    seen: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        parts = _dotted(node)
        if not parts or parts[0] not in names:
            continue
        module = names[parts[0]]
        for attr in parts[1:]:
            if not _is_submodule(f"{module}.{attr}"):
                break
            module = f"{module}.{attr}"
        top = _top(module)
        if module != names[parts[0]] and top in DOCUMENTED and module not in DOCUMENTED[top] \
                and (node.lineno, module) not in seen:
            seen.add((node.lineno, module))
            yield f"{where}:{node.lineno}: {module} (reached as an attribute) is not a " \
                  f"documented module of {top}"


def defined_private_names(trees: Iterable[ast.AST]) -> set[str]:
    """Every underscore name this project defines: functions, classes, attributes, fields."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value.isidentifier():
                names.add(node.value)  # __slots__ entries, setattr names
    return {n for n in names if n.startswith("_")}


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def attribute_violations(tree: ast.AST, where: str, ours: set[str]) -> Iterator[str]:
    """``x._name`` on another package's object."""
    foreign_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_foreign(alias.name):
                    foreign_names.add(alias.asname or _top(alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and _is_foreign(node.module):
            foreign_names.update(alias.asname or alias.name for alias in node.names)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or attr.startswith("__") or attr in STDLIB_DOCUMENTED:
            continue
        root = _root_name(node.value)
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if root in foreign_names:
            yield f"{where}:{node.lineno}: .{attr} of {root} (a third-party object)"
        elif attr not in ours:
            yield f"{where}:{node.lineno}: .{attr} is defined nowhere in this project: " \
                  "another package's private attribute"


def _project_files() -> list[Path]:
    files: list[Path] = []
    for d in SOURCE_DIRS:
        base = ROOT / d
        if base.is_dir():
            files.extend(p for p in sorted(base.rglob("*.py")) if ".venv" not in p.parts)
    return files


def _parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# --- the checker checks something --------------------------------------------------------------

def _check(source: str, ours: set[str] | None = None) -> list[str]:
    tree = ast.parse(source)
    names = defined_private_names([tree]) if ours is None else ours
    return sorted([*import_violations(tree, "x.py"), *attribute_violations(tree, "x.py", names),
                   *module_attribute_violations(tree, "x.py")])


@pytest.mark.parametrize("source", [
    "from hypercorn.trio.tcp_server import TCPServer",
    "import hypercorn.utils",
    "from hypercorn.trio.worker_context import WorkerContext",
    "import trio._core",
    "from trio import _core",
    "import somepackage_nobody_listed",
    "import trio\ntrio._core.current_task()",
    "async def f(ws):\n    async with ws._stream_lock:\n        await ws._stream.send_all(b'')",
    "from h11 import Connection\nConnection(1)._cstate",
    "from hypercorn.trio import tcp_server",
    "import hypercorn.trio as h\nh.tcp_server.TCPServer",
    "import hypercorn\nhypercorn.utils.wrap_app",
    "from hypercorn import utils",
])
def test_checker_finds_violations(source: str) -> None:
    assert _check(source), source


@pytest.mark.parametrize("source", [
    "import trio\nfrom hypercorn.trio import serve\nfrom hypercorn.config import Config",
    "import os\nos._exit(1)",
    "from collections import namedtuple\nP = namedtuple('P', 'a')\nP(1)._replace(a=2)",
    "class A:\n    def __init__(self):\n        self._x = 1\n    def f(self, other):\n"
    "        return other._x",
    "import h11\nimport wsproto.events\nfrom portage.versions import catpkgsplit",
])
def test_checker_accepts_supported_use(source: str) -> None:
    assert _check(source) == []


# --- the project -------------------------------------------------------------------------------

def test_no_undocumented_modules_or_foreign_private_attributes() -> None:
    files = _project_files()
    assert len(files) > 50, "the scan found too few files to mean anything"
    trees = {path: _parse(path) for path in files}
    ours = defined_private_names(trees.values())
    problems: list[str] = []
    for path, tree in trees.items():
        where = str(path.relative_to(ROOT))
        problems.extend(import_violations(tree, where))
        problems.extend(attribute_violations(tree, where, ours))
        problems.extend(module_attribute_violations(tree, where))
    assert sorted(problems) == [], "\n".join(sorted(problems))
