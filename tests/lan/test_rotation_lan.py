"""Rotating the cluster secret on a live cluster: three `p2pcluster join` daemons in network
namespaces, each with its own secret file, rotated with `p2pcluster secret` step by step
(add, promote, revoke) while a job runs. Nobody may be suspected, the job's result must be
exact, and afterwards the revoked secret must be refused by every peer.

Real time. The job (tests/lan/jobs/paced.py) runs slow tasks until the rollout is over, then
fast ones: it spans the rollout however long the machine takes over it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import trio

from p2pcluster._control_client import request_daemon
from p2pcluster._secret import decode_secret, fingerprint

from .conftest import JOBS, SECRET, Peers, lan_tests, wait_until
from .test_jobs_lan import check_squares, finish

pytestmark = lan_tests()
HOSTS = [1, 2, 3]
TASKS, SECONDS = 600, 0.3  # 60 s on three one-worker peers, unless stopped early


def file_env(peers: Peers, host: int) -> dict[str, str]:
    """The host's environment without P2PCLUSTER_SECRET: its secret file is used."""
    env = {**peers.env(host), **peers.host_env(host)}
    env.pop("P2PCLUSTER_SECRET")
    return env


def secret_cli(peers: Peers, host: int, *args: str, stdin: str | None = None) -> str:
    """`p2pcluster secret ARGS` in ``host``; its stdout, after checking it exited 0."""
    done = peers.lan.run(host, [sys.executable, "-m", "p2pcluster", "secret", *args],
                         env=file_env(peers, host), input=stdin, timeout=30)
    assert done.returncode == 0, f"secret {' '.join(args)} at h{host}: {done.stderr}"
    if args[0] in ("--new", "--add", "--promote", "--revoke"):  # each reloads the daemon
        assert f"the local peer h{host} reloaded" in done.stderr, done.stderr
    out: str = done.stdout
    return out


def statistics(peers: Peers, host: int) -> dict[str, Any]:
    """The daemon's membership counters (the control socket is a file: no namespace)."""
    control = peers.workdir / f"run{host}" / "p2pcluster" / "default.sock"
    answer: dict[str, Any] = trio.run(request_daemon, control, "status")
    stats: dict[str, Any] = answer["statistics"]
    return stats


def joins_anyone(peers: Peers, secret: str, seconds: float) -> bool:
    """Start h4 with ``secret`` and the three peers as seeds (no mDNS): does it learn of any
    of them within ``seconds``? It asks each of them every 2 s while it knows nobody."""
    seeds = [arg for h in HOSTS for arg in ("--seed", peers.lan.address(h))]
    peers.start(4, "--no-mdns", *seeds, secret=secret)
    try:
        wait_until(lambda: "h4" in peers.alive(4), 30, "h4 is up")  # else proves nothing
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if peers.alive(4) - {"h4"}:
                return True
            time.sleep(0.3)
        return False
    finally:
        peers.signal(4, 15)
        peers.processes[4].wait(timeout=10)


def start_with_secret_files(peers: Peers, hosts: list[int]) -> None:
    """A `join` daemon on each host, each with the test secret imported into its own secret
    file; returns once all see each other."""
    for host in hosts:
        secret_cli(peers, host, "--import", stdin=SECRET + "\n")
        argv = [sys.executable, "-m", "p2pcluster", "join", "--name", f"h{host}",
                "--log-level", "debug", "--workers", "1"]
        log = peers.log_path(host).open("a")
        peers.processes[host] = peers.lan.popen(host, argv, env=file_env(peers, host),
                                                stdout=log, stderr=log)
    peers.wait_everyone_sees(hosts, timeout=30)


def test_a_rolling_rotation_under_a_running_job(make_lan, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    peers = make_lan(4)
    old = fingerprint(decode_secret(SECRET, "SECRET"))
    start_with_secret_files(peers, HOSTS)

    stop = tmp_path / "rollout-done"
    started = tmp_path / "rollout-done.started"
    run = peers.run_job(1, JOBS / "paced.py", str(TASKS), str(SECONDS), str(stop))
    wait_until(lambda: started.exists() and started.read_text().count("\n") >= 3, 30,
               "the job started")

    # Step 1: a new secret on h1, accepted everywhere.
    new = secret_cli(peers, 1, "--new").strip()
    fresh = fingerprint(decode_secret(new, "the new secret"))
    for host in HOSTS[1:]:
        secret_cli(peers, host, "--add", stdin=new + "\n")
    # Step 2: everyone sends with it. Step 3: everyone refuses the old one.
    for host in HOSTS:
        secret_cli(peers, host, "--promote", fresh)
    for host in HOSTS:
        secret_cli(peers, host, "--revoke", old)
    for host in HOSTS:
        listed = secret_cli(peers, host, "--list")
        assert listed.splitlines()[1:] == [f"{fresh}  current (sends and accepts)"], listed
    assert run.poll() is None, "the job ended before the rollout did: make it longer"
    stop.touch()

    check_squares(finish(run, 90), TASKS)
    stats = {host: statistics(peers, host) for host in HOSTS}
    for host in HOSTS:
        assert stats[host]["suspicions"] == 0, stats
        assert stats[host]["deaths_declared"] == 0 and stats[host]["refutations"] == 0, stats
        assert "declared dead" not in peers.log(host), peers.log(host)[-3000:]
    assert all(seen == {"h1", "h2", "h3"} for seen in peers.alive_everywhere(HOSTS))

    # The revoked secret is refused by every peer: h4, holding only it, is let in by none
    # of the three seeds it tries; holding the new one, it joins (the check can see a join).
    assert not joins_anyone(peers, SECRET, 8.0), peers.log(4)[-3000:]
    for host in HOSTS:
        assert "h4" not in {r["name"] for r in peers.members(host)}
    with contextlib.suppress(FileNotFoundError):
        peers.log_path(4).rename(tmp_path / "peer4-old-secret.log")
    assert joins_anyone(peers, new, 15.0), peers.log(4)[-3000:]
