"""The examples print exactly what README.md says they print (run on an embedded peer)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SHOWN = re.findall(r"^\$ p2pcluster run (examples/\S+\.py)[^\n]*\n(.*)$", README, re.M)
SECRET = "GuR6eQZe3E1ItJBMaDy2lDNPYRd-8vW9mzOQgV1L2kM"


def test_the_readme_shows_the_four_examples() -> None:
    assert {path for path, _ in SHOWN} == {"examples/pi.py", "examples/wordfreq.py",
                                           "examples/primes.py", "examples/arrays.py"}


@pytest.mark.parametrize(("path", "expected"), SHOWN, ids=[p for p, _ in SHOWN])
def test_example_prints_what_the_readme_shows(path: str, expected: str,
                                              tmp_path: Path) -> None:
    env = dict(os.environ, P2PCLUSTER_SECRET=SECRET, XDG_RUNTIME_DIR=str(tmp_path / "run"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    done = subprocess.run(
        [sys.executable, "-m", "p2pcluster", "run", path, "--preset", "local", "--no-mdns",
         "--cluster", f"examples-{os.getpid()}", "--quiet", "--local"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected.strip()
    # --quiet: nothing from p2pcluster itself (an example may print its own progress)
    assert not [line for line in done.stderr.splitlines() if line.startswith("p2pcluster")]


@pytest.mark.parametrize("path", ["examples/primes.py", "examples/arrays.py"])
def test_example_passes_its_own_self_test(path: str) -> None:
    """``python examples/X.py`` checks the example's answer without a cluster."""
    done = subprocess.run([sys.executable, path], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "self-test passed" in done.stdout
