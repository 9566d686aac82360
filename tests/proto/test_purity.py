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
