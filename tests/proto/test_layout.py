"""The modules of the sans-IO core import each other as a DAG: no cycle, not even for types.

Every import between two `_proto/` modules is an edge, absolute or relative, at run time or
under ``if TYPE_CHECKING:``, at module level or inside a function. A cycle means two modules
that cannot be read, tested or changed apart, however it is hidden. Imports that leave
`_proto/` (`.._errors`, and `.._config` for types) are no edges here: they cannot close a
cycle inside `_proto/`, and tests/proto/test_purity.py decides which ones are allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import p2pcluster._proto

PROTO_DIR = Path(p2pcluster._proto.__file__).parent
PACKAGE = "p2pcluster._proto"


def _imported(node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The `_proto` modules (among ``known``) that one import statement names."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.startswith(PACKAGE + ".")]
        return {n.removeprefix(PACKAGE + ".").split(".")[0] for n in names} & known
    if node.level == 1 or (node.level == 0 and node.module == PACKAGE):
        base = None if node.level == 0 else node.module
    elif node.level == 0 and (node.module or "").startswith(PACKAGE + "."):
        base = (node.module or "").removeprefix(PACKAGE + ".")
    else:
        return set()  # another package, or out of `_proto/`
    if base is None:  # from . import a, b
        return {a.name for a in node.names} & known
    return {base.split(".")[0]} & known


def import_graph(directory: Path) -> dict[str, set[str]]:
    """Module name -> the modules of ``directory`` it imports."""
    paths = {p.stem: p for p in sorted(directory.glob("*.py"))}
    known = set(paths)
    graph = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, known)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of module names (first == last), or None for a DAG."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name, [name])):
            return cycle
    return None


def test_proto_imports_form_a_dag() -> None:
    graph = import_graph(PROTO_DIR)
    assert graph["swim"] >= {"membership", "probe", "sync"}  # the graph is really read
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from . import b\n")
    (tmp_path / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n")
    (tmp_path / "c.py").write_text("def f():\n    import p2pcluster._proto.a\n")
    (tmp_path / "d.py").write_text("from .._config import Config\nfrom .a import x\n")
    graph = import_graph(tmp_path)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    del graph["c"], graph["b"]
    graph["a"] = set()
    assert find_cycle(graph) is None
