"""A peer whose address changes (a new DHCP lease): it notices, logs it, and advertises the
new address over gossip and mDNS; the others list it alive at the new one. A peer bound to
its interface's address cannot follow, and says so.

Real `p2pcluster join` daemons in network namespaces; the address is changed with `ip`.
"""

from __future__ import annotations

from .conftest import Peers, lan_tests, netns_lan, wait_until

pytestmark = lan_tests()


def h2_as_seen_by_h1(peers: Peers) -> set[tuple[str, str]]:
    return {(r["host"], r["status"]) for r in peers.members(1) if r["name"] == "h2"}


def readdress(peers: Peers, host: int, address: str) -> None:
    namespace = peers.lan.namespace(host)
    netns_lan._ip("-n", namespace, "addr", "del", f"10.77.0.{host}/24", "dev", "eth0")
    netns_lan._ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
    netns_lan._ip("-n", namespace, "route", "replace", "default", "dev", "eth0")


def test_a_peer_whose_address_changes_is_found_at_the_new_one(make_lan) -> None:  # type: ignore[no-untyped-def]
    peers = make_lan(3)
    peers.start(1)
    peers.start(2)
    peers.start(3, "--interface", "eth0")
    peers.wait_everyone_sees([1, 2, 3], timeout=30)
    assert h2_as_seen_by_h1(peers) == {("10.77.0.2", "alive")}

    readdress(peers, 2, "10.77.0.12")
    readdress(peers, 3, "10.77.0.13")

    wait_until(lambda: "address changed from 10.77.0.2 to 10.77.0.12" in peers.log(2), 20,
               "h2 logs its new address")
    wait_until(lambda: "advertising 'h2' over mDNS on 10.77.0.12" in peers.log(2), 20,
               "h2 moves its mDNS record")
    wait_until(lambda: h2_as_seen_by_h1(peers) == {("10.77.0.12", "alive")}, 20,
               "h1 lists h2 alive at its new address")
    wait_until(lambda: {"h1", "h2"} <= peers.alive(2), 10, "h2 still lists h1 alive")
    assert all(peers.processes[h].poll() is None for h in (1, 2, 3))
    wait_until(lambda: "the address of interface eth0 changed from 10.77.0.3 to 10.77.0.13, "
               "but this peer is bound to 10.77.0.3 and cannot follow: restart it"
               in peers.log(3), 20, "h3, bound to its address, says it cannot follow")
