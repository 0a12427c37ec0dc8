"""No import loops in server/: the imports between its modules form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import lorafleet.server

PACKAGE = "lorafleet.server"
ROOT = Path(lorafleet.server.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((PACKAGE, *parts))


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """The server modules `path` imports, at its top or inside a function (a deferred import
    still ties the two modules together), leaving out `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()
    nodes: list[ast.AST] = [ast.parse(path.read_text())]
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            nodes += node.orelse
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        nodes += ast.iter_child_nodes(node)
    return {name for name in found if name in MODULES}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                return [*path[path.index(imported) :], imported]
            if imported not in state and (found := visit(imported)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_walk_sees_the_request_path() -> None:
    graph = {name: imports(path) for name, path in MODULES.items()}
    assert "lorafleet.server.request_state" in graph["lorafleet.server.serving"]
    assert "lorafleet.server.engine.base" in graph["lorafleet.server.engine.vllm_http"]


def test_server_modules_import_no_loop() -> None:
    graph = {name: imports(path) for name, path in MODULES.items()}
    assert cycle(graph) is None, " -> ".join(cycle(graph) or [])


def test_a_deferred_import_counts(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from lorafleet.server.app import create_app\n"
        "def serve():\n    from lorafleet.server.runner import serve\n"
    )
    assert imports(module) == {"lorafleet.server.runner"}


def test_a_loop_is_found() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
