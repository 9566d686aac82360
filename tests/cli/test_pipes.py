"""A command whose reader went away (``p2pcluster secret | head -c 0``) leaves quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_closed_stdout_ends_a_command_with_141_and_no_traceback(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("P2PCLUSTER_SECRET", None)
    try:
        done = subprocess.run([sys.executable, "-m", "p2pcluster", "secret"], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=60,
                              check=False)
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
