"""The package's shape: no import cycle, the hub imports no transport, and
every module imports on its own in a fresh interpreter.

Imports are read from the source (module level, ``if TYPE_CHECKING:``
included: a circle of types is still a circle of design), so a cycle is
caught even where Python's import order happens to tolerate it today.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("livenotify", "storage_proc", "tasks")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Module-level imports (not in functions), with those under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            pending.extend([*node.body, *node.orelse])
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                pending.extend(handler.body)
    return found


def _edges(name: str, path: Path) -> set[str]:
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    targets: set[str] = set()
    for node in _top_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = here[: len(here) - node.level + 1]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        targets.add(module)
        # ``from pkg import sub`` imports the submodule pkg.sub.
        targets.update(f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES)
    # A module's own enclosing packages are being imported already (a package
    # __init__ importing its submodules is not a cycle).
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    edges: set[str] = set()
    for target in targets:
        # Importing a.b.c runs a and a.b first.
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if candidate in MODULES and candidate not in ancestors:
                edges.add(candidate)
    return edges


GRAPH = {name: _edges(name, path) for name, path in MODULES.items()}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_graph_is_read() -> None:
    # The reader really sees imports (a broken reader would find no cycle).
    assert "livenotify.protocol" in GRAPH["livenotify.session"]
    assert "livenotify.protocol.errors" in GRAPH["livenotify.protocol.client"]
    assert "livenotify.storage" in GRAPH["livenotify.server"]


def test_no_import_cycle() -> None:
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_hub_imports_no_transport() -> None:
    hub = [n for n in GRAPH if n == "livenotify.hub" or n.startswith("livenotify.hub.")]
    assert hub
    for name in hub:
        assert not any(t.startswith("livenotify.transports") for t in GRAPH[name]), name


def test_console_does_not_import_the_server() -> None:
    assert "livenotify.server" not in GRAPH["livenotify.console"]


@pytest.mark.parametrize(
    "module", sorted(n for n in MODULES if n.startswith("livenotify") and "__main__" not in n)
)
def test_each_module_imports_alone(module: str) -> None:
    # A fresh interpreter per module: an order-dependent import fails here.
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, timeout=60, cwd=ROOT)
