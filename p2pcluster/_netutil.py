"""Interfaces and addresses: which address to advertise. Sends no packets.

On Linux the default route comes from ``/proc/net/route`` and interface addresses from the
``SIOCGIFADDR`` ioctl; elsewhere we fall back to resolving the host name.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ._errors import P2PClusterError
from ._transport import Address

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["Interface", "Where", "advertise_host", "choose_interface", "interfaces",
           "resolve_seeds", "where"]

_SIOCGIFADDR = 0x8915
_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_ROUTES = Path("/proc/net/route")
#: Interfaces that are never the LAN: container bridges and virtual links.
_VIRTUAL_PREFIXES = ("docker", "br-", "veth", "virbr", "cni", "flannel", "podman", "lxc",
                     "ifb", "tun", "tap")


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    address: str
    up: bool
    loopback: bool

    @property
    def virtual(self) -> bool:
        return self.name.startswith(_VIRTUAL_PREFIXES)


def _ioctl(name: str, request: int) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None


def interfaces() -> list[Interface]:
    """Every interface with an IPv4 address."""
    found = []
    for _, name in socket.if_nameindex():
        addr = _ioctl(name, _SIOCGIFADDR)
        flags = _ioctl(name, _SIOCGIFFLAGS)
        if addr is None or flags is None:
            continue
        (bits,) = struct.unpack_from("H", flags, 16)
        found.append(Interface(name, socket.inet_ntoa(addr[20:24]), bool(bits & _IFF_UP),
                               bool(bits & _IFF_LOOPBACK)))
    return found


def default_route_interface() -> str | None:
    """The interface holding the IPv4 default route, if any."""
    try:
        lines = _ROUTES.read_text().splitlines()[1:]
    except OSError:
        return None
    routes = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            routes.append((int(fields[6]), fields[0]))  # (metric, interface)
    return min(routes)[1] if routes else None


def choose_interface(wanted: str | None = None, *, available: list[Interface] | None = None,
                     default: str | None = None) -> Interface:
    """The interface to use: ``wanted`` (a name or an address), else the default route's.

    Without a default route, the first interface that is up and neither loopback nor
    virtual (docker0, veth...), else loopback. Raises ``ValueError`` if ``wanted`` is
    not found. ``available`` and ``default`` default to this machine's.
    """
    available = interfaces() if available is None else available
    if wanted:
        for iface in available:
            if wanted in (iface.name, iface.address):
                return iface
        names = ", ".join(f"{i.name} ({i.address})" for i in available) or "none"
        raise ValueError(f"no interface or address {wanted!r}; available: {names}")
    default = default_route_interface() if default is None else default
    ranked = sorted(available, key=lambda i: (i.name != default, not i.up, i.loopback,
                                              i.virtual))
    if ranked:
        return ranked[0]
    return Interface("lo", "127.0.0.1", up=True, loopback=True)


def is_specific(address: str) -> bool:
    """False for the wildcard 0.0.0.0 (and ::), True for a concrete address."""
    return not ipaddress.ip_address(address).is_unspecified


def advertise_host(config: Config) -> str:
    """The address to advertise: configured, else the specific bind address, else the
    address of the interface holding the default route."""
    if config.advertise_address:
        return config.advertise_address
    if is_specific(config.bind_address):
        return config.bind_address
    return choose_interface().address


@dataclass(frozen=True, slots=True)
class Where:
    """Where a peer binds, what it advertises, where it runs mDNS (None: nowhere), and how
    it chose, in words for its log."""

    bind: str
    advertise: str
    mdns_address: str | None
    how: str


def where(config: Config) -> Where:
    """Which address to bind, advertise and run mDNS on; loopback if there is no network.

    The one place a peer's address is chosen."""
    specific = config.advertise_address or config.bind_address
    if not config.interface and specific.startswith("127."):
        return Where(config.bind_address, specific, None, f"loopback ({specific})")
    try:
        iface = choose_interface(config.interface)
    except ValueError as exc:
        if config.interface:
            raise P2PClusterError(str(exc)) from None
        return _loopback_only()
    if iface.loopback and not config.interface:
        # choose_interface() falls back to loopback when nothing else is up (it does not
        # raise): that is the no-network case too. No mDNS there (lo does not multicast).
        return _loopback_only()
    bind = iface.address if config.interface else config.bind_address
    how = (f"interface {iface.name} ({iface.address}), "
           + ("chosen" if config.interface else "the default route's"))
    return Where(bind, config.advertise_address or iface.address,
                 iface.address if config.mdns else None, how)


def _loopback_only() -> Where:
    return Where("127.0.0.1", "127.0.0.1", None,
                 "no network interface with a default route: loopback only")


async def resolve_seeds(seeds: Sequence[str], default_port: int) -> list[Address]:
    """``host[:port]`` strings as IPv4 addresses."""
    resolved = []
    for seed in seeds:
        host, _, port_text = seed.rpartition(":") if ":" in seed else (seed, "", "")
        try:
            port = int(port_text) if port_text else default_port
            infos = await trio.socket.getaddrinfo(host, port, trio.socket.AF_INET,
                                                  trio.socket.SOCK_DGRAM)
        except (ValueError, OSError) as exc:
            raise P2PClusterError(f"seed {seed!r}: {exc}") from None
        resolved.append((str(infos[0][4][0]), port))
    return resolved
