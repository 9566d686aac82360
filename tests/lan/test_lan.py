"""`p2pcluster join` on a virtual LAN: discovery, faults, leave, seeds, and avahi's view."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from p2pcluster import Config
from p2pcluster._ask import ask_daemon
from p2pcluster._errors import P2PClusterError
from p2pcluster._places import control_path
from p2pcluster._proto.broadcast import retransmit_limit
from p2pcluster._proto.suspicion import suspicion_bounds

from .conftest import OTHER_SECRET, ROOT, Peers, lan_tests, wait_until

pytestmark = lan_tests()
LAN = Config.lan()


def detection_bound(n: int) -> float:
    """Worst case, as in the simulator tests: two probe passes, Max suspicion, spreading."""
    period = LAN.probe_interval
    _, maximum = suspicion_bounds(LAN.suspicion_mult, LAN.suspicion_max_timeout_mult, n, period)
    spread = retransmit_limit(LAN.retransmit_mult, n) * LAN.gossip_interval
    return 2 * (n - 1) * period + period + maximum + spread


def everyone_sees(peers: Peers, hosts: list[int], names: set[str]) -> bool:
    return all(seen == names for seen in peers.alive_everywhere(hosts))


def alive_in_process(peers: Peers, host: int) -> set[str]:
    """Who ``host``'s daemon lists alive, asked over its control socket from this process (a
    unix socket is a file: the namespace does not hide it), so that a query costs
    milliseconds, not a new Python process; empty while the daemon is not up."""
    path = control_path("default", peers.env(host))
    try:
        rows = ask_daemon(None, str(path), "members")["members"]
    except (P2PClusterError, OSError):  # not up yet, or starting to listen
        return set()
    return {r["name"] for r in rows if r["status"] == "alive"}


def test_three_hosts_find_each_other_over_mdns_alone(make_lan) -> None:  # type: ignore[no-untyped-def]
    # The 5 s bound is measured by asking the daemons in-process every 50 ms: a `members`
    # CLI process per query can take seconds on a loaded 2-core CI machine by itself.
    peers = make_lan(3)
    start = time.monotonic()
    for host in (1, 2, 3):
        peers.start(host)
    everyone = {"h1", "h2", "h3"}
    with ThreadPoolExecutor(3) as pool:
        wait_until(lambda: all(seen == everyone for seen in pool.map(
            lambda h: alive_in_process(peers, h), (1, 2, 3))), 30.0,
            "all three list all three alive, through mDNS alone", interval=0.05)
    took = time.monotonic() - start
    print(f"all three saw all three {took:.2f} s after start")
    assert took <= 5.0, f"all three saw all three {took:.2f} s after start (bound 5 s)"
    assert everyone_sees(peers, [1, 2, 3], everyone)  # and the CLI says so too
    for host in (1, 2, 3):
        assert "using interface eth0 (10.77.0." in peers.log(host)
    # Registering ends with mDNS probing (about 0.75 s plus announcements), which may finish
    # after the peers have already found each other through browsing; wait for it.
    wait_until(lambda: all("advertising 'h" in peers.log(h) for h in (1, 2, 3)), 5.0,
               "every peer logs that its advertisement is registered")


def test_a_peer_with_another_secret_never_appears(make_lan) -> None:  # type: ignore[no-untyped-def]
    peers = make_lan(4)
    for host in (1, 2, 3):
        peers.start(host)
    peers.start(4, secret=OTHER_SECRET, name="stranger")
    wait_until(lambda: everyone_sees(peers, [1, 2, 3], {"h1", "h2", "h3"}), 15, "the three")
    time.sleep(8)  # time for the stranger to try, and for the warnings to be logged
    for host in (1, 2, 3):
        assert "stranger" not in {r["name"] for r in peers.members(host)}
    assert peers.alive(4) == {"stranger"}
    rejected = [h for h in (1, 2, 3) if any(
        "failed authentication" in line and "(10.77.0.4 x" in line
        for line in peers.log(h).splitlines())]  # the summary line names the source
    assert rejected, "no peer logged the stranger's rejected packets"


def test_a_second_cluster_name_stays_separate(make_lan) -> None:  # type: ignore[no-untyped-def]
    peers = make_lan(4)
    peers.start(1)
    peers.start(2)
    peers.start(3, "--cluster", "other")
    peers.start(4, "--cluster", "other")
    wait_until(lambda: everyone_sees(peers, [1, 2], {"h1", "h2"}), 15, "cluster default")
    wait_until(lambda: all(peers.alive(h, "--cluster", "other") == {"h3", "h4"}
                           for h in (3, 4)), 15, "cluster other")
    time.sleep(3)
    assert everyone_sees(peers, [1, 2], {"h1", "h2"})
    assert {r["name"] for r in peers.members(1)} == {"h1", "h2"}


def test_kill9_is_detected_and_a_restart_rejoins(make_lan) -> None:  # type: ignore[no-untyped-def]
    peers = make_lan(3)
    for host in (1, 2, 3):
        peers.start(host)
    wait_until(lambda: everyone_sees(peers, [1, 2, 3], {"h1", "h2", "h3"}), 15, "bootstrap")
    old_id = next(r["id"] for r in peers.members(1) if r["name"] == "h3")
    peers.kill9(3)
    took = wait_until(lambda: all(peers.status_of(h, "h3") == {"dead"} for h in (1, 2)),
                      detection_bound(3), "both survivors mark h3 dead")
    print(f"kill -9 detected by all in {took:.2f} s")
    peers.start(3)
    wait_until(lambda: everyone_sees(peers, [1, 2, 3], {"h1", "h2", "h3"}), 15, "rejoin")
    for host in (1, 2):
        rows = {r["id"]: r["status"] for r in peers.members(host)}
        assert rows[old_id] == "dead"  # the old process never comes back


def test_an_unplugged_host_heals_by_itself(make_lan) -> None:  # type: ignore[no-untyped-def]
    peers = make_lan(3)
    for host in (1, 2, 3):
        peers.start(host)
    wait_until(lambda: everyone_sees(peers, [1, 2, 3], {"h1", "h2", "h3"}), 15, "bootstrap")
    _, maximum = suspicion_bounds(LAN.suspicion_mult, LAN.suspicion_max_timeout_mult, 3,
                                  LAN.probe_interval)
    peers.lan.detach(3)
    time.sleep(maximum + 3)  # longer than the longest suspicion timeout
    assert peers.status_of(1, "h3") == {"dead"} and peers.status_of(3, "h1") == {"dead"}
    peers.lan.attach(3)
    took = wait_until(lambda: everyone_sees(peers, [1, 2, 3], {"h1", "h2", "h3"}), 60,
                      "the table heals after reattaching")
    print(f"healed {took:.1f} s after reattaching")


def test_sigterm_leaves_and_withdraws_the_mdns_record(make_lan) -> None:  # type: ignore[no-untyped-def]
    peers = make_lan(4)
    for host in (1, 2, 3):
        peers.start(host)
    wait_until(lambda: everyone_sees(peers, [1, 2, 3], {"h1", "h2", "h3"}), 15, "bootstrap")
    browser = peers.lan.popen(4, [sys.executable, str(ROOT / "tests/lan/browse.py"),
                                  "10.77.0.4", "12"], stdout=subprocess.PIPE, text=True)
    time.sleep(3)  # the browser sees the three records
    peers.signal(3, signal.SIGTERM)
    start = time.monotonic()
    assert peers.processes[3].wait(timeout=5) == 0
    assert time.monotonic() - start < 2.0, "a graceful leave exits within 2 s"
    wait_until(lambda: all(peers.status_of(h, "h3") == {"left"} for h in (1, 2)), 5,
               "the others see h3 as left")
    out, _ = browser.communicate(timeout=20)
    events = [json.loads(line) for line in out.splitlines()]
    assert any(e["event"] == "Added" and e["name"].startswith("h3.") for e in events), events
    assert any(e["event"] == "Removed" and e["name"].startswith("h3.") for e in events), events
    assert not any(e["event"] == "Removed" and not e["name"].startswith("h3.") for e in events)
    time.sleep(2)
    assert all(peers.status_of(h, "h3") == {"left"} for h in (1, 2))  # left, never failed


def test_seeds_form_the_cluster_without_multicast(make_lan) -> None:  # type: ignore[no-untyped-def]
    peers = make_lan(3)
    for host in (1, 2, 3):
        peers.lan.set_multicast(host, False)
    peers.start(1)
    peers.start(2, "--seed", "10.77.0.1")
    peers.start(3, "--seed", "10.77.0.1:7946")
    wait_until(lambda: everyone_sees(peers, [1, 2, 3], {"h1", "h2", "h3"}), 15,
               "seeds alone form the cluster")


AVAHI_CONF = """[server]
host-name=avahi-watcher
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
[publish]
disable-publishing=yes
"""
DBUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={path}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/>
<allow receive_sender="*"/></policy></busconfig>
"""
ODD_NAMES = ["lab one", "Ünïcødé 🚀 π", "with.dots.in.it", "back\\slash", "x" * 80]


@pytest.mark.skipif(shutil.which("avahi-daemon") is None or shutil.which("avahi-browse") is None,
                    reason="needs avahi-daemon and avahi-utils (CI installs them)")
def test_avahi_lists_and_resolves_every_peer_whatever_its_name(make_lan, tmp_path: Path
                                                                ) -> None:  # type: ignore[no-untyped-def]
    peers = make_lan(len(ODD_NAMES) + 1)
    watcher = len(ODD_NAMES) + 1
    bus = tmp_path / "bus"
    (tmp_path / "dbus.conf").write_text(DBUS_CONF.format(path=bus))
    (tmp_path / "avahi.conf").write_text(AVAHI_CONF)
    peers.lan.popen(watcher, ["dbus-daemon", "--nofork", f"--config-file={tmp_path}/dbus.conf"])
    wait_until(bus.exists, 5, "dbus-daemon is up")
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={bus}", "PATH": "/usr/sbin:/usr/bin:/bin"}
    avahi_log = (tmp_path / "avahi.log").open("w")
    peers.lan.popen(watcher, ["avahi-daemon", "--no-drop-root", "--no-chroot", "--no-rlimits",
                              "-f", str(tmp_path / "avahi.conf")], env=env, stdout=avahi_log,
                    stderr=subprocess.STDOUT)
    for host, name in enumerate(ODD_NAMES, 1):
        peers.start(host, name=name)
    expected = {f"10.77.0.{h}" for h in range(1, len(ODD_NAMES) + 1)}

    def resolved() -> set[str]:
        result = peers.lan.run(watcher, ["avahi-browse", "-rpt", "_p2pcluster._tcp"], env=env,
                               timeout=20)
        rows = [line.split(";") for line in result.stdout.splitlines() if line.startswith("=")]
        return {row[7] for row in rows if len(row) > 9 and row[8] == "7946"
                and '"c=default"' in row[9]}

    wait_until(lambda: resolved() == expected, 30, "avahi lists and resolves all five peers",
               interval=1.0)
    assert "Failed to split" not in (tmp_path / "avahi.log").read_text()
