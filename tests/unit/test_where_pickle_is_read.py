"""Nothing unauthenticated is ever unpickled: pickle is read in exactly three places, none of
them on the path of `p2pcluster run` or the `Cluster` API's values (docs/security.md).

- ``_worker_main`` and ``_workerproc``: the private pipes between a peer and its own worker
  processes;
- ``_joblib_task.loads``: joblib batches and their results, which reach it only inside the
  authenticated, encrypted channel; called by ``run_pickled`` (in a worker) and by the joblib
  backend (``p2pcluster/joblib.py``), and by nothing else.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "p2pcluster"
READERS = {"loads", "load", "Unpickler", "_loads", "_load"}
ALLOWED = {"_worker_main.py", "_workerproc.py", "_joblib_task.py"}


def _reads_pickle(tree: ast.AST) -> bool:
    """A call of pickle.loads/load/Unpickler (any alias of the module pickle or _pickle)."""
    aliases = {"pickle", "_pickle", "cPickle"}
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name in aliases}
        elif isinstance(node, ast.ImportFrom) and node.module in ("pickle", "_pickle"):
            names |= {a.asname or a.name for a in node.names if a.name in READERS}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            if (isinstance(fn, ast.Attribute) and fn.attr in READERS
                    and isinstance(fn.value, ast.Name) and fn.value.id in aliases):
                return True
            if isinstance(fn, ast.Name) and fn.id in names:
                return True
    return False


def test_only_the_worker_pipes_and_the_joblib_task_read_pickle() -> None:
    readers = {path.name for path in PACKAGE.rglob("*.py")
               if _reads_pickle(ast.parse(path.read_text()))}
    assert readers == ALLOWED


def test_only_the_joblib_backend_calls_the_joblib_loads() -> None:
    callers = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "_joblib_task" and any(
                    a.name == "loads" for a in node.names):
                callers.add(path.name)
    assert callers == {"joblib.py"}


def test_the_check_finds_a_reader() -> None:
    assert _reads_pickle(ast.parse("import pickle as p\np.loads(b'')"))
    assert _reads_pickle(ast.parse("from pickle import loads\nloads(b'')"))
    assert not _reads_pickle(ast.parse("import pickle\npickle.dumps(1)"))
