"""The control socket, the daemon in-process on loopback, and the real CLI in subprocesses."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pcluster import Config, P2PClusterError
from p2pcluster._control import FramedStream, NoDaemon, connect, control_path, serve_control
from p2pcluster._control_client import request_daemon
from p2pcluster._daemon import run_daemon

ROOT = Path(__file__).resolve().parents[2]
SECRET = "GuR6eQZe3E1ItJBMaDy2lDNPYRd-8vW9mzOQgV1L2kM"


async def echo(stream: FramedStream) -> None:
    while (message := await stream.receive_map()) is not None:
        await stream.send_map({"ok": True, "echo": message})


async def ask(path: Path, message: dict[str, Any]) -> dict[str, Any] | None:
    stream = await connect(path)
    try:
        await stream.send_map(message)
        return await stream.receive_map()
    finally:
        await stream.aclose()


async def test_control_round_trip_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "run" / "p2pcluster" / "default.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, echo)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        answer = await ask(path, {"op": "hello", "n": [1, 2]})
        assert answer == {"ok": True, "echo": {"op": "hello", "n": [1, 2]}}
        with pytest.raises(P2PClusterError, match="already running"):
            await serve_control(path, echo)
        nursery.cancel_scope.cancel()
    assert not path.exists()  # removed on the way out
    with pytest.raises(NoDaemon):
        await ask(path, {"op": "hello"})


async def test_a_stale_socket_from_a_crash_is_replaced(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file remains, nobody listens: what a kill -9 leaves behind
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, echo)
        assert (await ask(path, {"op": "x"}) or {})["ok"]
        nursery.cancel_scope.cancel()



async def test_a_client_that_leaves_mid_reply_does_not_stop_the_server(tmp_path: Path
                                                                       ) -> None:
    """A handler replying from inside a nursery (as the daemon streams a job's results) gets
    the broken connection wrapped in an ExceptionGroup; it ends that connection only.
    (It used to stop serve_control, and with it the daemon, whenever `p2pcluster run`
    closed its connection before the daemon's final "done" frame.)"""
    path = tmp_path / "c.sock"
    gone = trio.Event()

    async def handler(stream: FramedStream) -> None:
        message = await stream.receive_map()
        if message and message["op"] == "submit":
            await gone.wait()
            async with trio.open_nursery():
                for _ in range(100):  # the client has closed: EPIPE, soon enough
                    await stream.send_map({"ok": True, "results": [b"x" * 65536]})
        else:
            await stream.send_map({"ok": True})

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, handler)
        client = await connect(path)
        await client.send_map({"op": "submit"})
        await client.aclose()
        gone.set()
        await trio.sleep(0.1)
        assert (await ask(path, {"op": "x"}) or {})["ok"]  # still serving
        nursery.cancel_scope.cancel()


def test_control_paths(tmp_path: Path) -> None:
    assert control_path("lab", {"XDG_RUNTIME_DIR": "/run/user/7"}) == Path(
        "/run/user/7/p2pcluster/lab.sock")
    assert control_path("a/b", {}).name == "a_b.sock"
    assert f"p2pcluster-{os.getuid()}" in str(control_path("x", {}))


def loopback(**changes: Any) -> Config:
    return Config.local(port=0, mdns=False, interface="lo", **changes)


async def test_two_daemons_on_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PCLUSTER_SECRET", SECRET)
    first_control, second_control = tmp_path / "a.sock", tmp_path / "b.sock"
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_daemon(loopback(node_name="a"), control=first_control))
            while not first_control.exists():
                await trio.sleep(0.02)
            status = await request_daemon(first_control, "status")
            port = status["self"]["port"]
            nursery.start_soon(lambda: run_daemon(
                loopback(node_name="b", seeds=(f"127.0.0.1:{port}",), workers=3),
                control=second_control))
            while True:
                await trio.sleep(0.05)
                if not second_control.exists():
                    continue
                rows = (await request_daemon(first_control, "members"))["members"]
                if {r["name"] for r in rows if r["status"] == "alive"} == {"a", "b"}:
                    break
            b_row = next(r for r in rows if r["name"] == "b")
            assert b_row["workers"] == 3 and b_row["version"]
            assert (await request_daemon(second_control, "leave"))["name"] == "b"
            while not any(r["name"] == "b" and r["status"] == "left" for r in (
                    await request_daemon(first_control, "members"))["members"]):
                await trio.sleep(0.05)
            with pytest.raises(P2PClusterError, match="unknown operation 'bogus'"):
                await request_daemon(first_control, "bogus")
            await request_daemon(first_control, "leave")
    assert not first_control.exists() and not second_control.exists()


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pcluster", *args], capture_output=True,
                          text=True, env=env, timeout=30, check=False)


def test_the_cli_join_members_leave(tmp_path: Path) -> None:
    env = {**os.environ, "P2PCLUSTER_SECRET": SECRET, "XDG_RUNTIME_DIR": str(tmp_path),
           "PYTHONPATH": str(ROOT)}
    result = cli("members", env=env)
    assert result.returncode == 1
    assert "no p2pcluster peer is running for cluster 'default'" in result.stderr
    assert "p2pcluster join" in result.stderr
    daemon = subprocess.Popen(
        [sys.executable, "-m", "p2pcluster", "join", "--preset", "local", "--port", "0",
         "--no-mdns", "--interface", "lo", "--name", "solo", "--workers", "2"],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while (result := cli("members", "--json", env=env)).returncode != 0:
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.1)
        rows = json.loads(result.stdout)["members"]
        assert [(r["name"], r["status"], r["workers"]) for r in rows] == [("solo", "alive", 2)]
        table = cli("members", env=env).stdout
        assert table.splitlines()[0].split() == ["NAME", "ADDRESS", "STATE", "INC", "WORKERS",
                                                 "QUEUE", "AGE"]
        assert "solo *" in table and "1 alive of 1 known" in table
        assert cli("leave", env=env).returncode == 0
        assert daemon.wait(timeout=5) == 0
        log = daemon.stderr.read()  # type: ignore[union-attr]
        assert "using interface lo (127.0.0.1), chosen" in log
        assert "left; goodbye" in log
    finally:
        daemon.kill()
        daemon.wait()


def test_join_refuses_a_second_daemon_and_explains_a_busy_port(tmp_path: Path) -> None:
    env = {**os.environ, "P2PCLUSTER_SECRET": SECRET, "XDG_RUNTIME_DIR": str(tmp_path),
           "PYTHONPATH": str(ROOT)}
    args = ["--preset", "local", "--no-mdns", "--interface", "lo"]
    first = subprocess.Popen([sys.executable, "-m", "p2pcluster", "join", *args, "--port", "0"],
                             env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while cli("members", env=env).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = cli("join", *args, "--port", "0", env=env)
        assert second.returncode == 1 and "already running" in second.stderr
        port = json.loads(cli("members", "--json", env=env).stdout)["members"][0]["port"]
        other = cli("join", *args, "--port", str(port), "--cluster", "other", env=env)
        assert other.returncode == 1 and "--port" in other.stderr
    finally:
        first.terminate()
        assert first.wait(timeout=5) == 0


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    env = {**os.environ, "P2PCLUSTER_SECRET": SECRET, "XDG_RUNTIME_DIR": str(tmp_path),
           "PYTHONPATH": str(ROOT)}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "p2pcluster", "join", "--preset", "local", "--port", "0",
         "--no-mdns", "--interface", "lo", "--json-logs"], env=env, stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.monotonic() + 15
        while cli("members", env=env).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert cli("leave", env=env).returncode == 0
        assert daemon.wait(timeout=5) == 0
        lines = daemon.stderr.read().splitlines()  # type: ignore[union-attr]
        entries = [json.loads(line) for line in lines]
        assert entries and all({"time", "level", "logger", "message"} <= e.keys()
                               for e in entries)
        assert entries[-1]["message"] == "left; goodbye"
    finally:
        daemon.kill()
        daemon.wait()


async def test_a_control_path_too_long_for_a_unix_socket_is_a_clear_error(tmp_path: Path
                                                                         ) -> None:
    path = tmp_path / ("d" * 120) / "default.sock"
    with pytest.raises(P2PClusterError, match="longer than the 107 bytes"):
        await serve_control(path, echo)
    with pytest.raises(P2PClusterError, match="set a shorter XDG_RUNTIME_DIR"):
        await request_daemon(path, "status")
