"""examples/sklearn_grid.py runs on an embedded peer (no daemon, no mDNS, loopback) and says
what it promises: the best parameters, and the fits by peer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "GuR6eQZe3E1ItJBMaDy2lDNPYRd-8vW9mzOQgV1L2kM"


@pytest.mark.slow
def test_the_sklearn_example_prints_the_best_parameters_and_the_peers(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="needs scikit-learn (the [sklearn] extra)")
    pytest.importorskip("joblib", reason="needs the [joblib] extra")
    env = dict(os.environ, P2PCLUSTER_SECRET=SECRET, P2PCLUSTER_MDNS="false",
               P2PCLUSTER_BIND_ADDRESS="127.0.0.1", P2PCLUSTER_PORT="0",
               P2PCLUSTER_CLUSTER=f"sklearn-{os.getpid()}", P2PCLUSTER_NODE_NAME="solo",
               PYTHONPATH=str(ROOT), XDG_RUNTIME_DIR=str(tmp_path / "run"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "sklearn_grid.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"best parameters: \{'C': [\d.]+, 'gamma': [\d.]+\} "
                        r"\(mean accuracy 0\.\d{4}\)", lines[0]), done.stdout
    assert re.fullmatch(r"100 fits in [\d.]+ s, by peer:", lines[1]), done.stdout
    assert lines[2:] == ["  solo: 100"], done.stdout


@pytest.mark.slow
def test_the_sklearn_example_runs_as_a_job_file_and_answers_json(tmp_path: Path) -> None:
    """``p2pcluster run examples/sklearn_grid.py``: main gets run's cluster, and its answer
    is printed as JSON."""
    pytest.importorskip("sklearn", reason="needs scikit-learn (the [sklearn] extra)")
    pytest.importorskip("joblib", reason="needs the [joblib] extra")
    from .test_run_cli import command, environment

    argv = command(tmp_path, ROOT / "examples" / "sklearn_grid.py")
    argv[argv.index("--workers") + 1] = "2"  # one worker in all: joblib runs the fits here
    done = subprocess.run(argv, cwd=tmp_path, env=environment(tmp_path), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert set(found["best_params"]) == {"C", "gamma"}
    assert 0.9 < found["mean_accuracy"] < 1
    assert found["fits"] == 100
    assert sum(found["fits_by_peer"].values()) == 100
