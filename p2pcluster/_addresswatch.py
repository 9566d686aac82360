"""Where this peer is, kept current: mDNS on the current address, and a change of address
(a new DHCP lease, a laptop on another network) detected, logged and advertised again.

A peer that binds the wildcard address and advertises the address of the default route's
interface (the default) checks that address every :data:`ADDRESS_CHECK` seconds. When it
changes, the peer logs a warning, gossips its new address under a new incarnation (the others
update their table, as for a restart at a new address, without a death), and moves its mDNS
record: the old one is withdrawn, a new one published on the new address. A peer bound to
the address of an interface it was given (``interface``) cannot follow, since its socket is
bound to the old address: it logs a warning that says to restart it. A peer whose address is
set by hand (``advertise_address``, ``bind_address``) is not watched. With no network left
(only loopback), the peer keeps its address until one comes back.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from ._config import Config
from ._discovery import Introduced, serve_introductions
from ._errors import P2PClusterError
from ._netutil import Where, is_specific, where

__all__ = ["ADDRESS_CHECK", "Placed", "follows_interface", "serve_place"]

log = logging.getLogger("p2pcluster")

#: Seconds between two checks of this machine's address (a few system calls each).
ADDRESS_CHECK = 2.0


class Placed(Introduced, Protocol):
    """What :func:`serve_place` needs of membership."""

    def set_host(self, host: str) -> None: ...


def follows_interface(config: Config) -> bool:
    """Whether the advertised address is the interface's, so that it can change."""
    return not config.advertise_address and not is_specific(config.bind_address)


async def serve_place(membership: Placed, config: Config, place: Where, *,
                      check: float = ADDRESS_CHECK) -> None:
    """Run mDNS (if ``place`` has an address for it) and, for a peer whose address follows
    its interface, move both the advertised address and mDNS when it changes. Until
    cancelled."""
    while True:
        async with trio.open_nursery() as nursery:
            if place.mdns_address is not None:
                nursery.start_soon(_introductions, membership, config, place.mdns_address)
            if not follows_interface(config):
                await _warn_when_moved(config, place, check)  # returns never
            moved = await wait_for_move(config, place, check)
            nursery.cancel_scope.cancel()  # the old mDNS record is withdrawn
        log.warning("this peer's address changed from %s to %s (%s): advertising the new "
                    "one", place.advertise, moved.advertise, moved.how)
        membership.set_host(moved.advertise)
        place = moved


async def _warn_when_moved(config: Config, place: Where, check: float) -> None:
    """For a peer bound to its interface's address: say so each time that address changes,
    since the peer cannot follow. Until cancelled."""
    if not config.interface:
        await trio.sleep_forever()
    while True:
        moved = await wait_for_move(config, place, check)
        log.warning("the address of interface %s changed from %s to %s, but this peer is "
                    "bound to %s and cannot follow: restart it", config.interface,
                    place.advertise, moved.advertise, place.bind)
        place = moved


async def _introductions(membership: Introduced, config: Config, address: str) -> None:
    await serve_introductions(membership, cluster=config.cluster, address=address)


async def wait_for_move(config: Config, place: Where, check: float) -> Where:
    """Return where the peer is once its advertised address (or its mDNS address) differs
    from ``place``'s; a check that finds only loopback does not count."""
    while True:
        await trio.sleep(check)
        try:
            now = where(config)
        except (OSError, P2PClusterError) as exc:
            log.debug("could not check this peer's address: %s", exc)
            continue
        if now.advertise.startswith("127."):
            continue
        if (now.advertise, now.mdns_address) != (place.advertise, place.mdns_address):
            return now
