"""Duplicate names between live peers: the guard on membership (VirtualNetwork on the autojump
clock, and loopback), two daemons in-process, and `p2pcluster join` in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pcluster import Config, Membership, MemberStatus, NameTaken, _daemon, serve_membership
from p2pcluster._cli import _root
from p2pcluster._control_client import request_daemon
from p2pcluster._daemon import run_daemon
from p2pcluster._names import serve_name_guard
from p2pcluster._proto.envelope import Keyring
from p2pcluster._proto.meta import NodeMeta
from p2pcluster._trio_transport import TrioTransport
from p2pcluster.testing import VirtualNetwork

RING = Keyring.from_secrets([bytes(range(32))], "default")
SECRET = "GuR6eQZe3E1ItJBMaDy2lDNPYRd-8vW9mzOQgV1L2kM"
ROOT = Path(__file__).resolve().parents[2]


async def start_member(nursery: trio.Nursery, net: VirtualNetwork, ip: str, name: str,
                       seeds: tuple[tuple[str, int], ...] = (), *, started: int = 0
                       ) -> Membership:
    """A membership that publishes ``started`` in its metadata, as a daemon's peer does."""
    membership: Membership = await nursery.start(partial(
        serve_membership, Config.lan(node_name=name), RING, transport=net.host(ip),
        seeds=seeds, advertise=ip, meta=NodeMeta(started=started).encode()))
    return membership


def stamped(membership: Membership, other: Membership) -> bool:
    """``membership`` holds ``other`` alive with its start time."""
    return any(m.id == other.me.id and m.status == MemberStatus.ALIVE
               and NodeMeta.decode(m.meta).started for m in membership.members())


async def wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await trio.sleep(0.05)


async def test_the_later_starter_yields_and_the_first_stays(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    net = VirtualNetwork(seed=3)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await start_member(nursery, net, "10.0.0.1", "lab1", started=1000)
            await nursery.start(partial(serve_name_guard, first, started=1000))
            later = await start_member(nursery, net, "10.0.0.2", "lab1", (("10.0.0.1", 7946),),
                                       started=1001)
            with pytest.raises(NameTaken) as info:
                await serve_name_guard(later, started=1001)
            assert str(info.value) == ("another live peer is already named 'lab1' (at "
                                       "10.0.0.1:7946); choose another --name")
            await wait_until(lambda: stamped(first, later))
            await trio.sleep(5)  # virtual: the first's guard has seen the later's start time
            nursery.cancel_scope.cancel()  # the first's guard never raised: we got here
    assert [r.getMessage() for r in caplog.records if r.name == "p2pcluster"] == [
        "peer 10.0.0.2:7946 also calls itself 'lab1' and will leave: this peer started first"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_a_tie_is_broken_by_the_larger_id(seed: int,
                                                autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=seed)
    yielded: list[bytes] = []

    async def guard(membership: Membership) -> None:
        try:
            await serve_name_guard(membership, started=1000)
        except NameTaken:
            yielded.append(membership.me.id)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            one = await start_member(nursery, net, "10.0.0.1", "lab1", started=1000)
            two = await start_member(nursery, net, "10.0.0.2", "lab1", (("10.0.0.1", 7946),),
                                     started=1000)
            nursery.start_soon(guard, one)
            nursery.start_soon(guard, two)
            await wait_until(lambda: bool(yielded))
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
    assert yielded == [max(one.me.id, two.me.id)]


async def test_nobody_yields_to_a_peer_without_a_start_time(
        autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=5)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            embedded = await start_member(nursery, net, "10.0.0.1", "lab1")  # runs no guard
            daemon = await start_member(nursery, net, "10.0.0.2", "lab1", (("10.0.0.1", 7946),),
                                        started=2000)
            await nursery.start(partial(serve_name_guard, daemon, started=2000))
            await wait_until(lambda: any(m.id == embedded.me.id for m in daemon.members()))
            await trio.sleep(5)
            nursery.cancel_scope.cancel()


async def test_two_peers_of_one_name_on_one_host_are_no_conflict() -> None:
    """Real loopback: the same address, two ports (a predecessor, or a choice)."""
    config = Config.local(port=0, node_name="lab1")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            first: Membership = await nursery.start(partial(
                serve_membership, config, RING, transport=TrioTransport(),
                meta=NodeMeta(started=1000).encode()))
            await nursery.start(partial(serve_name_guard, first, started=1000))
            second: Membership = await nursery.start(partial(
                serve_membership, config, RING, transport=TrioTransport(),
                seeds=[first.local_address], meta=NodeMeta(started=2000).encode()))
            await nursery.start(partial(serve_name_guard, second, started=2000))
            await wait_until(lambda: stamped(first, second) and stamped(second, first))
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)  # the guards saw it all
            nursery.cancel_scope.cancel()


# --- daemons ---------------------------------------------------------------------------------


def fake_clock(monkeypatch: pytest.MonkeyPatch, *times: float) -> None:
    """The daemons' wall clock at start, one value per daemon: the start times, without
    waiting."""
    monkeypatch.setattr(_daemon, "time", types.SimpleNamespace(time=iter(times).__next__))


async def members_of(control: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (await request_daemon(control, "members"))["members"]
    return rows


async def test_the_later_daemon_leaves_gracefully(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PCLUSTER_SECRET", SECRET)
    fake_clock(monkeypatch, 1000.0, 1001.0)
    first_control, later_control = tmp_path / "a.sock", tmp_path / "b.sock"
    first = Config.local(port=0, mdns=False, interface="lo", node_name="lab1", workers=1)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(run_daemon, first, control=first_control))
            await wait_until(first_control.exists)
            port = (await members_of(first_control))[0]["port"]
            later = Config.local(port=0, mdns=False, bind_address="127.0.0.2", node_name="lab1",
                                 seeds=(f"127.0.0.1:{port}",), workers=1)
            with pytest.raises(BaseExceptionGroup) as info:
                await run_daemon(later, control=later_control)
            error = _root(info.value)
            assert isinstance(error, NameTaken)
            assert str(error) == (f"another live peer is already named 'lab1' (at 127.0.0.1:"
                                  f"{port}); choose another --name")
            assert not later_control.exists()
            rows = await members_of(first_control)
            assert sorted((r["host"], r["status"]) for r in rows) == [
                ("127.0.0.1", "alive"), ("127.0.0.2", "left")]  # left, not failed
            await request_daemon(first_control, "leave")


# --- the command line ------------------------------------------------------------------------


def cli_env(runtime: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PCLUSTER_")}
    return {**env, "P2PCLUSTER_SECRET": SECRET, "XDG_RUNTIME_DIR": str(runtime),
            "PYTHONPATH": str(ROOT), **extra}


def join(*args: str, env: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "p2pcluster", "join", "--preset", "local", "--port", "0",
            "--no-mdns", "--workers", "1", *args]


def test_join_refuses_a_name_a_live_peer_holds(tmp_path: Path) -> None:
    first_env = cli_env(tmp_path / "a")
    first = subprocess.Popen(join("--interface", "lo", "--name", "lab1", env=first_env),
                             env=first_env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while (members := subprocess.run(
                [sys.executable, "-m", "p2pcluster", "members", "--json"], env=first_env,
                capture_output=True, text=True, timeout=30, check=False)).returncode != 0:
            assert time.monotonic() < deadline, members.stderr
            time.sleep(0.1)
        port = json.loads(members.stdout)["members"][0]["port"]
        time.sleep(1.1)  # start times are whole seconds: make this one clearly the later
        later_env = cli_env(tmp_path / "b", P2PCLUSTER_BIND_ADDRESS="127.0.0.2")
        later = subprocess.run(
            join("--name", "lab1", "--seed", f"127.0.0.1:{port}", env=later_env),
            env=later_env, capture_output=True, text=True, timeout=30, check=False)
        assert later.returncode == 1
        assert later.stderr.splitlines()[-1] == (
            f"p2pcluster join: error: another live peer is already named 'lab1' (at "
            f"127.0.0.1:{port}); choose another --name")
        assert "Traceback" not in later.stderr
        assert first.poll() is None  # the first one runs on
    finally:
        first.terminate()
        assert first.wait(timeout=10) == 0


def test_join_refuses_a_name_with_a_control_character(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    done = subprocess.run(join("--interface", "lo", "--name", "lab\n1", env=env), env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert done.stderr == ("p2pcluster join: error: invalid Config: node_name 'lab\\n1' must "
                           "be printable: no control characters such as a newline or a tab\n")
