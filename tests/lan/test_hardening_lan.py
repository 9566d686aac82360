"""Outsiders on the LAN cannot crash or bloat a daemon; clocks and code caches that fail are
reported, not fatal. Real `p2pcluster join` daemons in network namespaces; the attacker is
``attacks.py`` (standard library only, no secret) in a namespace of its own.
"""

from __future__ import annotations

import contextlib
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pcluster._proto.handshake import HELLO_SIZE

from .conftest import JOBS, Peers, lan_tests, netns_lan, wait_until
from .test_jobs_lan import check_squares, finish

pytestmark = lan_tests()
ATTACKS = Path(__file__).resolve().parent / "attacks.py"
PORT = "7946"


def attacker(peers: Peers, host: int, *args: str) -> subprocess.Popen[str]:
    """``attacks.py ARGS`` in ``host``'s namespace (killed at teardown)."""
    process: subprocess.Popen[str] = peers.lan.popen(
        host, [sys.executable, str(ATTACKS), *args], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    return process


def read_line(process: subprocess.Popen[str], timeout: float, what: str) -> str:
    """The next line ``process`` prints; fail if none comes within ``timeout``."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        pytest.fail(f"{what}: not within {timeout} s")
    line = process.stdout.readline()
    if not line:
        pytest.fail(f"{what}: the attacker exited ({process.wait()})")
    return line.strip()


def vm_kib(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (the peak) of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def open_sockets(pid: int) -> int:
    """How many sockets process ``pid`` has open."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += fd.readlink().name.startswith("socket:")
    return count


def log_lines(peers: Peers, host: int) -> list[str]:
    return peers.log(host).splitlines()


def daemon_is_well(peers: Peers, host: int, hosts: list[int]) -> None:
    assert peers.processes[host].poll() is None, peers.log(host)[-3000:]
    assert "Traceback" not in peers.log(host), peers.log(host)[-3000:]
    peers.wait_everyone_sees(hosts)


# --- bounded cost before authentication -------------------------------------------------------


@pytest.mark.parametrize("nofile", [1024, 200])
def test_2000_idle_connections_then_a_job_is_exact(make_lan, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                   nofile: int) -> None:
    """2,000 connections that send nothing, from 16 addresses, at a daemon whose limit on
    open files is ``nofile`` (soft and hard: it cannot raise it). At 1024 the handshake cap
    keeps it below the limit; at 200 it runs out (EMFILE), says so once, and goes on. Either
    way it stays in the cluster, closes every one of them, and then runs a job exactly."""
    peers = make_lan(3)
    logs = tmp_path / "tasks"
    logs.mkdir()
    peers.start(1, "--workers", "1", env=peers.host_env(1),
                wrap=("prlimit", f"--nofile={nofile}:{nofile}", "--"))
    peers.start(2, "--workers", "1", env=peers.host_env(2))
    peers.wait_everyone_sees([1, 2])
    pid = peers.processes[1].pid
    before = open_sockets(pid)
    sources = [f"10.77.0.{100 + i}" for i in range(16)]
    for source in sources:
        netns_lan._ip("-n", peers.lan.namespace(3), "addr", "add", f"{source}/24", "dev", "eth0")
    flood = attacker(peers, 3, "flood", peers.lan.address(1), PORT, "2000", *sources)
    _, opened, failed = read_line(flood, 60, "the attacker opens its connections").split()
    print(f"the attacker holds {opened} idle connections ({failed} failed to open)")
    assert int(opened) >= 1500
    # While the attacker holds them all, h1 lets go of every one it accepted (those the
    # kernel did not queue, past the listen backlog, trickle in as SYN-ACKs are resent).
    took = wait_until(lambda: open_sockets(pid) <= before + 4, 90,
                      "h1 holds no more sockets than before the flood", interval=0.5)
    print(f"h1 held {before} sockets before the flood, and as many again {took:.1f} s later")
    daemon_is_well(peers, 1, [1, 2])
    n = 40
    run = peers.run_job(1, JOBS / "tally.py", str(n), "0.02", str(logs))
    check_squares(finish(run, 60), n)
    assert flood.stdin is not None
    flood.stdin.close()
    closed = int(read_line(flood, 30, "the attacker counts what h1 closed").split()[1])
    print(f"h1 closed {closed} of them; the others it never accepted (kernel backlog)")
    assert closed >= 256
    warnings = [line for line in log_lines(peers, 1) if "cannot accept connections" in line]
    if nofile == 200:
        assert len(warnings) == 1 and "EMFILE" in warnings[0], warnings
    else:
        assert warnings == []
    daemon_is_well(peers, 1, [1, 2])


def test_a_replayed_hello_and_a_64_mib_frame_cost_under_5_mb(make_lan, tmp_path: Path  # type: ignore[no-untyped-def]
                                                             ) -> None:
    """The attacker gets a real ClientHello the way an outsider can: h2 is told to join
    through the attacker's address (as a forged mDNS record would) and says hello to it.
    Replayed to h1, the hello is answered, but what follows is read only up to the proof's
    exact size: three 64 MiB frames raise h1's peak memory by under 5 MB."""
    peers = make_lan(3)
    hello = tmp_path / "hello.bin"
    capture = attacker(peers, 3, "capture", PORT, str(hello))
    assert read_line(capture, 20, "the attacker listens") == "listening"
    peers.start(1)
    peers.start(2, "--seed", f"{peers.lan.address(3)}:{PORT}")
    assert read_line(capture, 30, "h2 says hello to the attacker") == f"captured {HELLO_SIZE}"
    peers.wait_everyone_sees([1, 2])
    pid = peers.processes[1].pid
    time.sleep(2)
    rss, peak = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")
    replay = attacker(peers, 3, "replay", peers.lan.address(1), PORT, str(hello), "3", "64")
    out, _ = replay.communicate(timeout=120)
    rounds = re.findall(r"reply (\d+) sent (\d+)", out)
    assert len(rounds) == 3, out
    for reply, sent in rounds:
        assert int(reply) == HELLO_SIZE  # h1 took the replayed hello for a real one...
        assert int(sent) < 64 << 20  # ...but closed the connection at the frame
    grown = max(vm_kib(pid, "VmHWM") - peak, vm_kib(pid, "VmRSS") - rss)
    print(f"h1: RSS {rss} KiB, peak {peak} KiB before; grew {grown} KiB; sent {rounds}")
    assert grown < 5 * 1024
    daemon_is_well(peers, 1, [1, 2])


def test_5000_spoofed_sources_write_at_most_a_few_log_lines(make_lan) -> None:  # type: ignore[no-untyped-def]
    """One junk datagram from each of 5,000 spoofed addresses (a raw socket in the attacker's
    namespace): h1, logging at info, sums them up in one warning."""
    peers = make_lan(3)
    peers.start(1, "--log-level", "info")
    peers.start(2)
    peers.wait_everyone_sees([1, 2])
    before = len(log_lines(peers, 1))
    spoof = attacker(peers, 3, "spoof", peers.lan.address(1), PORT, "5000")
    spoof.communicate(timeout=60)
    wait_until(lambda: "rejected" in peers.log(1), 15, "h1 sums the junk up")
    time.sleep(6)  # the next report interval: nothing more is written
    new = log_lines(peers, 1)[before:]
    print("\n".join(new))
    assert len(new) <= 3, new
    (line,) = [entry for entry in new if "rejected" in entry]
    match = re.search(r"rejected (\d+) packet", line)
    assert match and int(match.group(1)) >= 1000, line  # most arrived (UDP may drop some)
    assert "64+ source(s)" in line
    daemon_is_well(peers, 1, [1, 2])


# --- clocks and code caches --------------------------------------------------------------------


def test_a_clock_300_s_off_gives_the_warning(make_lan) -> None:  # type: ignore[no-untyped-def]
    """h2's clock runs 300 s ahead (clock_offset): each side drops the other's datagrams
    and says so once a minute, with the offset measured from the authenticated timestamps."""
    peers = make_lan(2)
    peers.start(1)
    peers.start(2, env={"P2PCLUSTER_CLOCK_OFFSET": "300"})
    wait_until(lambda: "stamped +300." in peers.log(1), 30, "h1 warns of h2's clock")
    wait_until(lambda: "stamped -300." in peers.log(2), 30, "h2 warns of h1's clock")
    (line,) = [entry for entry in log_lines(peers, 1) if "stamped +300." in entry]
    assert "WARNING" in line and peers.lan.address(2) in line and "replay window" in line
    time.sleep(3)
    assert peers.log(1).count("stamped +300.") == 1  # at most one a minute per peer


def test_a_full_code_cache_fails_the_task_and_the_peer_lives_on(make_lan, tmp_path: Path  # type: ignore[no-untyped-def]
                                                                ) -> None:
    """h1's code cache is on a full filesystem (a 256 KiB tmpfs, mounted in the daemon's
    own mount namespace): the job's tasks fail with the reason, h1 warns once and serves on;
    once there is room, the same job gives the exact answer."""
    peers = make_lan(1)
    logs = tmp_path / "tasks"
    logs.mkdir()
    cache = tmp_path / "smallcache"
    cache.mkdir(mode=0o700)
    mount = 'mount -t tmpfs -o size=256k,mode=0700 p2ptest "$0" && exec "$@"'
    peers.start(1, "--workers", "1", env={"XDG_CACHE_HOME": str(cache), "P2P_TEST_HOST": "h1"},
                wrap=("sh", "-c", mount, str(cache)))
    wait_until(lambda: peers.alive(1) == {"h1"}, 20, "h1 is up")
    inside = Path(f"/proc/{peers.processes[1].pid}/root{cache}")  # the daemon's view
    fill(inside / "fill")
    run = peers.run_job(1, JOBS / "tally.py", "3", "0", str(logs))
    out, err = run.communicate(timeout=60)
    assert run.returncode != 0, out
    assert "No space left on device" in err and "code cache" in err, err
    warnings = [line for line in log_lines(peers, 1) if "cannot store code" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], warnings
    daemon_is_well(peers, 1, [1])
    (inside / "fill").unlink()
    check_squares(finish(peers.run_job(1, JOBS / "tally.py", "3", "0", str(logs)), 60), 3)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until its filesystem is full."""
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert "No space" in str(exc), exc

