"""Real `p2pcluster join` processes on a virtual LAN of network namespaces.

These tests need root and iproute2 (CI has both) and skip with the reason otherwise. They run
in real time, since they test real processes; each waits for a condition with a deadline.
"""

from __future__ import annotations

import contextlib
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
JOBS = Path(__file__).resolve().parent / "jobs"  # job files for `p2pcluster run`
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

    def host_env(self, host: int) -> dict[str, str]:
        """What makes ``host`` a machine of its own for jobs: its own code cache (so peers
        fetch a job's code from its owner) and ``P2P_TEST_HOST=h<host>``, which the worker
        processes inherit, so a task can tell where it ran."""
        cache = self.workdir / f"cache{host}"
        cache.mkdir(mode=0o700, exist_ok=True)
        return {"XDG_CACHE_HOME": str(cache), "P2P_TEST_HOST": f"h{host}"}

    def start(self, host: int, *args: str, secret: str = SECRET, name: str | None = None,
              env: dict[str, str] | None = None, wrap: tuple[str, ...] = ()
              ) -> subprocess.Popen[Any]:
        """Start a daemon in ``host``; ``env`` adds variables to :meth:`env`'s; ``wrap``
        is a command that runs the daemon's (``prlimit ... --``, ``sh -c '...; exec "$@"'``)."""
        log = self.log_path(host).open("a")
        argv = [*wrap, sys.executable, "-m", "p2pcluster", "join", "--name", name or f"h{host}",
                "--log-level", "debug", *args]
        process = self.lan.popen(host, argv,
                                 env=self.env(host, **(env or {}), P2PCLUSTER_SECRET=secret),
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

    # --- jobs -------------------------------------------------------------------------------

    def run_job(self, host: int, job: Path, *args: str) -> subprocess.Popen[str]:
        """`p2pcluster run --daemon JOB ARGS` in ``host``, through its daemon (same runtime
        directory, cache and secret); stdout and stderr are pipes. Not ``--quiet``: stderr
        says "submitting through the local daemon" (no progress bar: it is no terminal)."""
        argv = [sys.executable, "-m", "p2pcluster", "run", "--daemon", str(job), *args]
        process: subprocess.Popen[str] = self.lan.popen(
            host, argv, env=self.env(host, **self.host_env(host)), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        return process

    def wait_everyone_sees(self, hosts: list[int], timeout: float = 15.0) -> float:
        """Wait until every one of ``hosts`` lists exactly them (``h<i>``) alive."""
        names = {f"h{h}" for h in hosts}
        return wait_until(lambda: all(seen == names for seen in self.alive_everywhere(hosts)),
                          timeout, f"{sorted(names)} all list each other alive")

    def namespace_pids(self, host: int) -> list[int]:
        """Every process in ``host``'s namespace: its daemon, worker processes, clients."""
        listing = netns_lan._ip("netns", "pids", self.lan.namespace(host), check=False)
        return [int(pid) for pid in listing.stdout.split()]

    def kill9_all(self, host: int, pids: list[int] | None = None) -> list[int]:
        """``kill -9`` every process in ``host`` (the machine crashes): first ``pids`` if
        given (taken earlier, to kill at a precise moment), then whatever is left. Returns
        the pids killed; reaps the daemon."""
        killed = []
        deadline = time.monotonic() + 10
        for pid in pids or []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        while remaining := self.namespace_pids(host):
            if time.monotonic() > deadline:
                pytest.fail(f"processes {remaining} in h{host} survive kill -9")
            for pid in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.02)
        if host in self.processes:
            self.processes[host].wait(timeout=10)
        return killed


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
