"""swarmd's modules import each other without cycles, counting every import: at module level,
inside functions, and under ``if TYPE_CHECKING:`` (a cycle there is still two modules that
each need the other to be understood)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

SWARMD = Path(__file__).resolve().parent.parent / "swarmd"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The swarmd modules ``path`` imports, by any import statement anywhere in it."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from swarmd import journal" names a module; "from swarmd.state import X" too
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out.update(n for n in names if n in modules)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = {f"swarmd.{p.stem}" for p in SWARMD.glob("*.py") if p.stem != "__init__"}
    return {f"swarmd.{p.stem}": _imports(p, modules) - {f"swarmd.{p.stem}"}
            for p in SWARMD.glob("*.py") if p.stem != "__init__"}


def test_swarmd_has_no_import_cycle() -> None:
    graph = import_graph()
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert len(order) == len(graph)


def test_the_graph_sees_type_checking_and_function_imports(tmp_path: Path) -> None:
    """The test above can fail: a TYPE_CHECKING import and a function-level one count."""
    f = tmp_path / "m.py"
    f.write_text("from typing import TYPE_CHECKING\n"
                 "if TYPE_CHECKING:\n    from swarmd.service import Orchestrator\n"
                 "def g():\n    from swarmd import heartbeat\n")
    assert _imports(f, {"swarmd.service", "swarmd.heartbeat", "swarmd.state"}) == {
        "swarmd.service", "swarmd.heartbeat"}
    cyclic = {"a": {"b"}, "b": {"a"}}
    try:
        list(graphlib.TopologicalSorter(cyclic).static_order())
    except graphlib.CycleError:
        pass
    else:
        raise AssertionError("graphlib did not see a cycle")


def test_the_parts_do_not_know_the_orchestrator() -> None:
    """The parts are composed by service.py; none of them reaches back into it."""
    graph = import_graph()
    for part in ("committer", "wakeups", "dronesoft", "buildlogs", "droneops", "heartbeat",
                 "publish", "state", "journal", "journal_events", "scheduler"):
        assert "swarmd.service" not in graph[f"swarmd.{part}"], part
