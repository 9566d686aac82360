"""The sans-IO core never touches I/O, clocks, threads or global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import p2pcluster._proto

PROTO_DIR = Path(p2pcluster._proto.__file__).parent
FORBIDDEN = {"trio", "socket", "time", "threading", "asyncio", "selectors", "subprocess",
             "multiprocessing", "os", "logging", "concurrent", "signal", "zeroconf", "select"}
# `random.Random` may be imported for type hints of injected generators; nothing else from
# `random` (its module-level functions share one global generator).
ALLOWED_FROM_RANDOM = {"Random"}
MODULES = sorted(PROTO_DIR.glob("*.py"))
# What `_proto/` may import from the rest of the package. At run time only `_errors`, which is
# pure (exception classes). Under `if TYPE_CHECKING:` also `_config`, for annotations: such
# an import never runs, so it cannot pull I/O in (and it is no edge of the import graph
# that tests/proto/test_layout.py checks for cycles, as it leaves `_proto/`).
OUTSIDE_AT_RUN_TIME = {"_errors"}
OUTSIDE_FOR_TYPES = {"_config", "_errors"}


def _violations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN or top == "random":
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in FORBIDDEN:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            if top == "random":
                extra = {a.name for a in node.names} - ALLOWED_FROM_RANDOM
                if extra:
                    found.append(f"line {node.lineno}: from random import {sorted(extra)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
            node.func.id in ("__import__", "open", "exec", "eval")
        ):
            found.append(f"line {node.lineno}: {node.func.id}()")
        elif isinstance(node, ast.Attribute) and node.attr == "import_module":
            found.append(f"line {node.lineno}: importlib.import_module")
    return found


def _type_only_imports(tree: ast.Module) -> set[int]:
    """ids of the import statements inside ``if TYPE_CHECKING:`` blocks."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            found |= {id(n) for stmt in node.body for n in ast.walk(stmt)
                      if isinstance(n, (ast.Import, ast.ImportFrom))}
    return found


def _outside_targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules of the package outside `_proto/` that ``node`` imports ("" for the package
    itself, ".." for anything above it)."""
    if isinstance(node, ast.Import):
        names = [a.name.split(".") for a in node.names]
        return [n[1] if len(n) > 1 else "" for n in names
                if n[0] == "p2pcluster" and n[1:2] != ["_proto"]]
    if node.level == 0:
        parts = (node.module or "").split(".")
        if parts[0] != "p2pcluster" or parts[1:2] == ["_proto"]:
            return []
        return [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
    if node.level == 1:
        return []
    if node.level > 2:
        return [".."]
    return [node.module.split(".")[0]] if node.module else [a.name for a in node.names]


def _escapes(path: Path) -> list[str]:
    """Imports that leave `_proto/`, but for the exceptions above."""
    tree = ast.parse(path.read_text(), str(path))
    type_only = _type_only_imports(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        allowed = OUTSIDE_FOR_TYPES if id(node) in type_only else OUTSIDE_AT_RUN_TIME
        for target in _outside_targets(node):
            if target not in allowed:
                found.append(f"line {node.lineno}: imports {target or 'p2pcluster'}")
    return found


def test_there_are_modules_to_check() -> None:
    assert {p.name for p in MODULES} >= {"codec.py", "messages.py", "envelope.py",
                                         "handshake.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_proto_module_is_pure(path: Path) -> None:
    assert _violations(path) == []


def test_the_checker_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom random import choice\nimport trio.lowlevel\n"
                   "from socket import socket\nx = __import__('os')\n")
    assert len(_violations(bad)) == 5
    ok = tmp_path / "ok.py"
    ok.write_text("from random import Random\nimport hashlib\n")
    assert _violations(ok) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_proto_module_imports_nothing_else_of_the_package(path: Path) -> None:
    assert _escapes(path) == []


def test_the_checker_catches_imports_that_leave_proto(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from .. import _config\nfrom .._config import Config\n"
                   "from .._peer import Peer\nfrom ... import x\nimport p2pcluster._cli\n"
                   "from p2pcluster import _daemon\nfrom p2pcluster._secure import Wire\n"
                   "if TYPE_CHECKING:\n    from .._peer import Peer\n")
    assert len(_escapes(bad)) == 8
    ok = tmp_path / "ok.py"
    ok.write_text("from .._errors import ProtocolError\nfrom . import codec\n"
                  "from .messages import Ping\nfrom p2pcluster._proto.codec import encode\n"
                  "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                  "    from .._config import Config\n")
    assert _escapes(ok) == []
