"""Real `p2pcluster join` processes on a virtual LAN of network namespaces.

These tests need root and iproute2 (CI has both) and skip with the reason otherwise. They run
in real time, since they test real processes; each waits for a condition with a deadline.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("netns_lan", ROOT / "scripts" / "netns_lan.py")
assert _spec and _spec.loader
netns_lan = importlib.util.module_from_spec(_spec)
sys.modules["netns_lan"] = netns_lan
_spec.loader.exec_module(netns_lan)

UNAVAILABLE = netns_lan.available()
SECRET = "GuR6eQZe3E1ItJBMaDy2lDNPYRd-8vW9mzOQgV1L2kM"  # sha256(b"lan tests"), base64url
OTHER_SECRET = "ZrxeUaNGkJewfYzqR3Kyr2X5gYwzFnHZ5v4pCraiKpo"  # sha256(b"another cluster")
_counter = itertools.count()


def lan_tests() -> list[pytest.MarkDecorator]:
    return [pytest.mark.netns,
            pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.1) -> float:
    """Poll ``predicate`` until true; return the seconds it took, or fail saying ``what``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(interval)


class Peers:
    """Daemons on a VirtualLan: start, query, signal, and read their logs."""

    def __init__(self, lan: Any, workdir: Path) -> None:
        self.lan = lan
        self.workdir = workdir
        self.processes: dict[int, subprocess.Popen[Any]] = {}

    def env(self, host: int, **extra: str) -> dict[str, str]:
        runtime = self.workdir / f"run{host}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        config = self.workdir / f"config{host}"
        config.mkdir(mode=0o700, exist_ok=True)
        return {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(config),
                "P2PCLUSTER_SECRET": SECRET, "PYTHONPATH": str(ROOT), **extra}

    def log_path(self, host: int) -> Path:
        return self.workdir / f"peer{host}.log"

    def start(self, host: int, *args: str, secret: str = SECRET, name: str | None = None,
              ) -> subprocess.Popen[Any]:
        log = self.log_path(host).open("a")
        argv = [sys.executable, "-m", "p2pcluster", "join", "--name", name or f"h{host}",
                "--log-level", "debug", *args]
        process = self.lan.popen(host, argv, env=self.env(host, P2PCLUSTER_SECRET=secret),
                                 stdout=log, stderr=subprocess.STDOUT)
        self.processes[host] = process
        return process

    def cli(self, host: int, *args: str) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.lan.run(
            host, [sys.executable, "-m", "p2pcluster", *args], env=self.env(host), timeout=30)
        return result

    def members(self, host: int, *args: str) -> list[dict[str, Any]]:
        """`members --json` at ``host``; [] while its daemon is not up yet."""
        result = self.cli(host, "members", "--json", *args)
        if result.returncode != 0:
            return []
        rows: list[dict[str, Any]] = json.loads(result.stdout)["members"]
        return rows

    def alive(self, host: int, *args: str) -> set[str]:
        return {r["name"] for r in self.members(host, *args) if r["status"] == "alive"}

    def alive_everywhere(self, hosts: list[int], *args: str) -> list[set[str]]:
        """`alive` at every host, queried in parallel (each query is a new process)."""
        with ThreadPoolExecutor(len(hosts)) as pool:
            return list(pool.map(lambda h: self.alive(h, *args), hosts))

    def status_of(self, host: int, name: str) -> set[str]:
        return {r["status"] for r in self.members(host) if r["name"] == name}

    def signal(self, host: int, signum: int) -> None:
        self.processes[host].send_signal(signum)

    def kill9(self, host: int) -> None:
        self.processes[host].send_signal(signal.SIGKILL)
        self.processes[host].wait(timeout=10)

    def log(self, host: int) -> str:
        return self.log_path(host).read_text(errors="replace")


@pytest.fixture
def make_lan(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[int], Peers]]:
    """``make_lan(n)``: n hosts on a fresh virtual LAN, torn down after the test."""
    lans: list[Any] = []

    def make(n: int) -> Peers:
        lan = netns_lan.VirtualLan(n, prefix=f"t{os.getpid() % 1000}x{next(_counter)}")
        lans.append(lan)
        lan.up()
        return Peers(lan, tmp_path)

    yield make
    for lan in lans:
        lan.down()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        for log in sorted(tmp_path.glob("peer*.log")):
            print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-4000:]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
