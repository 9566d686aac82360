"""A virtual LAN of network namespaces: hosts on one Ethernet segment, for tests and benchmarks.

    python scripts/netns_lan.py up --hosts 3 [--prefix lan]
    python scripts/netns_lan.py exec [--prefix lan] 2 -- p2pcluster members
    python scripts/netns_lan.py down [--prefix lan]

Host ``i`` (1-based) is the namespace ``<prefix>-h<i>`` with ``eth0`` at 10.77.0.<i>/24 and an
on-link default route; a namespace ``<prefix>-sw`` holds the bridge (the "switch") all hosts
plug into. Multicast (mDNS) crosses it. From Python::

    with VirtualLan(3, prefix="t1") as lan:
        lan.popen(1, ["p2pcluster", "join"])
        lan.run(2, ["p2pcluster", "members"])
        lan.detach(3) ... lan.attach(3)        # take a port off the switch, put it back
        lan.set_multicast(1, False)

Teardown kills every process inside the namespaces and deletes them, even after a failure;
``down`` (or :func:`sweep`) also removes leftovers of a crashed run. Needs root and iproute2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

SUBNET = "10.77.0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def available() -> str | None:
    """None if namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (the ip command)"
    probe = f"p2pprobe-{os.getpid()}"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"cannot create network namespaces: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def namespaces(prefix: str) -> list[str]:
    listing = _ip("netns", "list", check=False).stdout.split("\n")
    names = [line.split()[0] for line in listing if line.strip()]
    return [n for n in names if n.startswith(prefix + "-")]


def _kill_inside(namespace: str) -> None:
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), sig)
        if sig == signal.SIGTERM and pids:
            time.sleep(0.3)
        pids = _ip("netns", "pids", namespace, check=False).stdout.split()


def sweep(prefix: str) -> None:
    """Kill everything in, and delete, every namespace of ``prefix``."""
    for namespace in namespaces(prefix):
        _kill_inside(namespace)
        _ip("netns", "del", namespace, check=False)


class VirtualLan:
    """``n`` hosts on one bridge. Use as a context manager."""

    def __init__(self, n: int, prefix: str = "lan") -> None:
        if len(prefix) > 8:  # interface names are at most 15 characters
            raise ValueError("prefix must be at most 8 characters")
        self.n = n
        self.prefix = prefix
        self.switch = f"{prefix}-sw"
        self._processes: list[subprocess.Popen[Any]] = []

    # --- topology ---------------------------------------------------------------------------

    def namespace(self, host: int) -> str:
        return f"{self.prefix}-h{host}"

    def address(self, host: int) -> str:
        return f"{SUBNET}.{host}"

    def _port(self, host: int) -> str:
        return f"{self.prefix}s{host}"

    def up(self) -> VirtualLan:
        sweep(self.prefix)
        try:
            _ip("netns", "add", self.switch)
            self._in_switch("link", "add", "br0", "type", "bridge")
            self._in_switch("link", "set", "br0", "up")
            for host in range(1, self.n + 1):
                self._add_host(host)
        except BaseException:
            self.down()
            raise
        return self

    def _add_host(self, host: int) -> None:
        ns, inner, outer = self.namespace(host), f"{self.prefix}h{host}", self._port(host)
        _ip("netns", "add", ns)
        _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "netns", self.switch)
        self._in_switch("link", "set", outer, "master", "br0", "up")
        _ip("-n", ns, "link", "set", inner, "name", "eth0")
        _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "dev", "eth0")

    def _in_switch(self, *args: str) -> None:
        _ip("-n", self.switch, *args)

    def down(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        sweep(self.prefix)

    def __enter__(self) -> VirtualLan:
        return self.up()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None
                 ) -> None:
        self.down()

    # --- faults -----------------------------------------------------------------------------

    def detach(self, host: int) -> None:
        """Unplug ``host`` from the switch: it can reach nobody, and nobody reaches it."""
        self._in_switch("link", "set", self._port(host), "nomaster")

    def attach(self, host: int) -> None:
        self._in_switch("link", "set", self._port(host), "master", "br0", "up")

    def set_multicast(self, host: int, enabled: bool) -> None:
        _ip("-n", self.namespace(host), "link", "set", "eth0", "multicast",
            "on" if enabled else "off")

    # --- processes --------------------------------------------------------------------------

    def command(self, host: int, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def run(self, host: int, argv: Sequence[str], **kwargs: Any
            ) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(host, argv), check=False, **kwargs)

    def popen(self, host: int, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``host``; it is killed at teardown if still running."""
        process = subprocess.Popen(self.command(host, argv), **kwargs)
        self._processes.append(process)
        return process


def main(argv: Sequence[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", default="lan", help="namespace name prefix (default: lan)")
    parser = argparse.ArgumentParser(description="A virtual LAN of network namespaces.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", parents=[common], help="create the hosts and the switch")
    up.add_argument("--hosts", type=int, default=3)
    commands.add_parser("down", parents=[common],
                        help="kill everything inside and delete the namespaces")
    run = commands.add_parser("exec", parents=[common], help="run a command in a host")
    run.add_argument("host", type=int)
    run.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "down":
        sweep(args.prefix)
        return 0
    if args.command == "up":
        reason = available()
        if reason:
            print(f"netns_lan: {reason}", file=sys.stderr)
            return 1
        lan = VirtualLan(args.hosts, args.prefix).up()
        for host in range(1, args.hosts + 1):
            print(f"{lan.namespace(host)}: {lan.address(host)}")
        return 0
    command = [a for a in args.argv if a != "--"]
    return subprocess.call(VirtualLan(0, args.prefix).command(args.host, command))


if __name__ == "__main__":
    sys.exit(main())
