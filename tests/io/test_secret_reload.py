"""A running `p2pcluster join` reloads its secrets, with no restart: on SIGHUP, and on the
control request that `p2pcluster secret` sends after each change. Real daemons on
loopback, real CLI commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pcluster import Config
from p2pcluster._control_client import request_daemon
from p2pcluster._proto.envelope import Keyring
from p2pcluster._proto.messages import Ping
from p2pcluster._secret import encode_secret, fingerprint, read_secret_file, write_secret_file
from p2pcluster._secure import SecureWire
from p2pcluster._trio_transport import TrioTransport

from .daemons import ROOT, Daemon, running_daemon

OLD, NEW = bytes(range(32)), bytes(range(100, 132))
WAIT = 30.0
LOOPBACK = ("--interface", "lo")


def status(daemon: Daemon) -> dict[str, Any]:
    daemon.check_alive()
    answer: dict[str, Any] = trio.run(request_daemon, daemon.control, "status")
    return answer


def alive_names(daemon: Daemon) -> set[str]:
    return {r["name"] for r in daemon.members() if r["status"] == "alive"}


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def secret_cli(daemon: Daemon, secret_file: Path, *args: str, stdin: str = ""
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pcluster", "secret", "--secret-file", str(secret_file),
         "--control", str(daemon.control), *args],
        input=stdin, capture_output=True, text=True, timeout=30, check=False,
        env={**daemon.env, "PYTHONPATH": str(ROOT)})


def place(tmp_path: Path, name: str) -> Path:
    """A working directory of its own for one daemon (its log, its code cache)."""
    path = tmp_path / name
    path.mkdir()
    return path


def private_file(tmp_path: Path, name: str, secrets: tuple[bytes, ...]) -> Path:
    path = tmp_path / name / "secret"
    write_secret_file(path, secrets)
    return path


def test_sighup_reloads_the_keyring_and_a_peer_held_out_gets_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """d2 holds another secret than d1: its joins are refused. Its file is fixed and it gets
    a SIGHUP: it seals with the cluster's secret now, and the two find each other."""
    monkeypatch.delenv("P2PCLUSTER_SECRET", raising=False)
    f1 = private_file(tmp_path, "one", (OLD,))
    f2 = private_file(tmp_path, "two", (NEW,))
    with running_daemon(place(tmp_path, "d1"), f1, "rot", monkeypatch, extra=LOOPBACK) as d1:
        port = status(d1)["self"]["port"]
        with running_daemon(place(tmp_path, "d2"), f2, "rot", monkeypatch,
                            extra=(*LOOPBACK, "--name", "d2", "--seed",
                                   f"127.0.0.1:{port}")) as d2:
            wait_for(lambda: "that failed authentication, from 1 source(s) (127.0.0.1 x"
                     in d1.log.read_text(), "d1 refuses d2's joins, with another secret")
            assert alive_names(d1) == {"d1"} and alive_names(d2) == {"d2"}
            write_secret_file(f2, (OLD, NEW))
            os.kill(d2.process.pid, signal.SIGHUP)
            wait_for(lambda: alive_names(d1) == alive_names(d2) == {"d1", "d2"},
                     "d1 and d2 list each other alive after d2's reload")
            d2.check_alive()  # SIGHUP's default action would have ended it
            log = d2.log.read_text()
            assert "received SIGHUP: reloading the cluster secrets" in log
            assert (f"reloaded the cluster secrets from {f2}: sending with {fingerprint(OLD)}, "
                    f"accepting {fingerprint(OLD)}, {fingerprint(NEW)}") in log


def test_a_broken_file_on_sighup_keeps_the_keys_in_use(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("P2PCLUSTER_SECRET", raising=False)
    f1 = private_file(tmp_path, "one", (OLD,))
    with running_daemon(place(tmp_path, "d1"), f1, "rot", monkeypatch, extra=LOOPBACK) as d1:
        f1.chmod(0o644)
        os.kill(d1.process.pid, signal.SIGHUP)
        wait_for(lambda: "could not reload the cluster secrets" in d1.log.read_text(),
                 "the daemon says it could not reload")
        assert "keeping the keys in use" in d1.log.read_text()
        result = secret_cli(d1, f1, "--reload")
        assert result.returncode == 1
        assert "the local peer did not reload" in result.stderr and "chmod 600" in result.stderr
        d1.check_alive()


async def _send_sealed(secret: bytes, cluster: str, port: int) -> None:
    """One Ping to 127.0.0.1:port sealed with ``secret`` (a peer that kept a revoked key)."""
    config = Config.local(port=0, mdns=False, cluster=cluster)
    wire = SecureWire(TrioTransport(), Keyring.from_secrets([secret], cluster), config,
                      node_id=os.urandom(16))
    channel = await wire.open_datagram(("127.0.0.1", 0))
    try:
        await channel.send(Ping(seq=1, target=b"\x00" * 16, updates=()), ("127.0.0.1", port),
                           b"\x00" * 16)
    finally:
        channel.close()


def test_a_rolling_rotation_by_control_request_never_loses_a_peer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two joined daemons go through add, promote, revoke, one peer at a time, each step
    applied by `p2pcluster secret` (which asks its daemon to reload). Nobody is suspected;
    at the end the revoked key is refused."""
    monkeypatch.delenv("P2PCLUSTER_SECRET", raising=False)
    files = [private_file(tmp_path, "one", (OLD,)), private_file(tmp_path, "two", (OLD,))]
    with running_daemon(place(tmp_path, "d1"), files[0], "rot", monkeypatch, extra=LOOPBACK) as d1:
        port = status(d1)["self"]["port"]
        with running_daemon(place(tmp_path, "d2"), files[1], "rot", monkeypatch,
                            extra=(*LOOPBACK, "--name", "d2", "--seed",
                                   f"127.0.0.1:{port}")) as d2:
            daemons = [d1, d2]
            wait_for(lambda: alive_names(d1) == alive_names(d2) == {"d1", "d2"}, "joined")
            steps = [("--add",), ("--promote", fingerprint(NEW)),
                     ("--revoke", fingerprint(OLD))]
            for step in steps:
                for daemon, path, name in zip(daemons, files, ("d1", "d2"), strict=True):
                    result = secret_cli(daemon, path, *step, stdin=encode_secret(NEW) + "\n")
                    assert result.returncode == 0, result.stderr
                    assert f"the local peer {name} reloaded {path}" in result.stderr
                    time.sleep(1.0)  # a few probe rounds (0.2 s each) in the mixed state
                    for d in daemons:
                        states = {r["name"]: r["status"] for r in d.members()}
                        assert states == {"d1": "alive", "d2": "alive"}, (step, states)
            assert all(read_secret_file(f) == (NEW,) for f in files)
            for d in daemons:
                stats = status(d)["statistics"]
                assert stats["suspicions"] == 0 and stats["deaths_declared"] == 0, stats
            before = status(d1)["statistics"]["dropped"]
            trio.run(_send_sealed, OLD, "rot", port)
            wait_for(lambda: status(d1)["statistics"]["dropped"] == before + 1,
                     "d1 drops a datagram sealed with the revoked secret")
            trio.run(_send_sealed, NEW, "rot", port)  # while the new one is let in
            time.sleep(0.5)
            assert status(d1)["statistics"]["dropped"] == before + 1
