"""A `p2pcluster join` daemon in a subprocess on loopback, for the tests of its control path."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pcluster._control_client import request_daemon

ROOT = Path(__file__).resolve().parents[2]
WAIT = 20


@dataclass
class Daemon:
    cluster: str
    control: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        assert self.process.poll() is None, "the daemon died:\n" + self.log.read_text()

    def members(self) -> list[dict[str, Any]]:
        self.check_alive()
        rows: list[dict[str, Any]] = trio.run(request_daemon, self.control, "members")[
            "members"]
        return rows

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def fds_back_to(self, count: int, timeout: float = 20.0) -> int:
        """The daemon's open descriptors once they are back to ``count``, or the last count
        after ``timeout``: a daemon still busy with the last jobs' results closes a
        finished connection later, and would fool a wait for the count to hold still."""
        deadline = time.monotonic() + timeout
        now = self.open_fds()
        while now != count and time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.open_fds()
        return now

    def settled_fds(self, timeout: float = 10.0) -> int:
        """The daemon's open descriptors once the count holds still for half a second
        (a connection just closed may still be on its way out)."""
        deadline = time.monotonic() + timeout
        last = self.open_fds()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.open_fds()
            if now == last:
                return now
            last = now
        raise AssertionError(f"the daemon's descriptors never settled (last {last})")


def _limited(open_files: int | None) -> list[str]:
    """The start of a command line that runs Python, under ``open_files`` if given."""
    if open_files is None:
        return [sys.executable]
    return [sys.executable, "-c",
            "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, "
            f"({open_files}, {open_files})); os.execv(sys.executable, [sys.executable, "
            "*sys.argv[1:]])"]


@contextlib.contextmanager
def running_daemon(tmp_path: Path, secret: Path, cluster: str,
                   monkeypatch: pytest.MonkeyPatch, *, workers: int = 1,
                   extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
                   open_files: int | None = None) -> Iterator[Daemon]:
    """`p2pcluster join` with its own code cache (so code must travel), sharing
    XDG_RUNTIME_DIR with this process, where a Cluster finds its control socket. With
    ``open_files``, its soft and hard limits on open files are that (it cannot raise it)."""
    # A control socket's path must fit in 108 bytes; tmp_path can be longer than that.
    runtime = Path(tempfile.mkdtemp(prefix="p2pjobs-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(runtime),
           "XDG_CACHE_HOME": str(tmp_path / "daemon-cache"),
           "XDG_CONFIG_HOME": str(tmp_path / "xdg_config_home"), **(env or {})}
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*_limited(open_files), "-m", "p2pcluster", "join", "--preset", "local", "--no-mdns",
             "--port", "0", "--workers", str(workers), "--cluster", cluster,
             "--secret-file", str(secret), "--name", "d1", "--log-level", "debug", *extra],
            env=env, stderr=log, stdout=log)
    control = runtime / "p2pcluster" / f"{cluster}.sock"
    try:
        deadline = time.monotonic() + WAIT
        while True:
            assert process.poll() is None, log_path.read_text()
            with contextlib.suppress(Exception):
                if trio.run(request_daemon, control, "status"):
                    break
            assert time.monotonic() < deadline, "the daemon did not answer"
            time.sleep(0.05)
        yield Daemon(cluster, control, env, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(runtime, ignore_errors=True)
