"""mDNS / DNS-SD discovery with python-zeroconf, bridged into trio.

A peer advertises ``<instance>._p2pcluster._tcp.local.``: the instance is the peer's name made
safe for DNS-SD (see :func:`instance_label`), the SRV record points at its port (UDP and TCP),
and the TXT record (well under 200 bytes) holds the peer id, the cluster name, the protocol
version and the UDP port. Nothing in it is derived from the secret.

mDNS only *introduces* peers: a discovered peer of our cluster is handed to membership, which
joins it with a push-pull over the encrypted stream. Liveness is SWIM's business, since mDNS
records outlive a crashed peer by up to 75 minutes.

Zeroconf runs its own thread. Its browser callbacks must not block, so they only schedule the
event into trio with ``TrioToken.run_sync_soon`` (a non-blocking, thread-safe call); the slow
look-ups, registration and withdrawal run in ``trio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
import unicodedata
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from ._proto.membership import Member
from ._proto.messages import PROTOCOL_VERSION
from ._transport import Address

__all__ = ["SERVICE_TYPE", "Discovered", "instance_label", "serve_discovery",
           "serve_introductions"]

log = logging.getLogger("p2pcluster.discovery")

SERVICE_TYPE = "_p2pcluster._tcp.local."
MAX_LABEL = 63  # bytes in a DNS label
_RESERVE = 6  # room for the " (2)" zeroconf appends on a name conflict
RESOLVE_TIMEOUT = 3.0
UNREGISTER_TIMEOUT = 1.5


@dataclass(frozen=True, slots=True)
class Discovered:
    """A peer found by mDNS."""

    instance: str
    node_id: bytes
    cluster: str
    version: int
    address: Address


def instance_label(name: str) -> str:
    """``name`` as a DNS-SD instance label that every mDNS implementation can parse.

    python-zeroconf builds names as dotted strings, so a ``.`` (or ``\\``) in a name would
    split the label and avahi or Bonjour could no longer parse the record: both become ``-``.
    Runs of whitespace become one space, other control characters are dropped, and the label
    is cut to 63 bytes minus room for a conflict suffix, at a character boundary.
    """
    text = "".join("-" if ch in ".\\" else ch for ch in re.sub(r"\s+", " ", name)
                   if unicodedata.category(ch)[0] != "C")
    text = text.strip() or "peer"
    limit = MAX_LABEL - _RESERVE
    while len(text.encode()) > limit:
        text = text[:-1]
    return text.rstrip() or "peer"


def _host_label(node_id: bytes) -> str:
    """A host name for the SRV record that cannot clash with the machine's own."""
    base = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())[:40].strip("-") or "host"
    return f"{base}-p2p-{node_id.hex()[:8]}.local."


def _txt(node_id: bytes, cluster: str, port: int) -> dict[str, str]:
    return {"id": node_id.hex(), "c": cluster, "v": str(PROTOCOL_VERSION), "u": str(port)}


def parse_info(info: ServiceInfo) -> Discovered | None:
    """The peer an mDNS record describes, or None if the record is not one of ours."""
    props = {k.decode(errors="replace"): (v or b"").decode(errors="replace")
             for k, v in (info.properties or {}).items()}
    addresses = info.parsed_addresses(IPVersion.V4Only)
    try:
        node_id = bytes.fromhex(props["id"])
        version = int(props.get("v", "0"))
        port = int(props.get("u") or info.port or 0)
    except (KeyError, ValueError):
        return None
    if not addresses or not 0 < port < 65536 or len(node_id) != 16:
        return None
    return Discovered(info.name.removesuffix("." + SERVICE_TYPE), node_id, props.get("c", ""),
                      version, (addresses[0], port))


async def serve_discovery(
    *,
    cluster: str,
    node_id: bytes,
    name: str,
    address: str,
    port: int,
    on_peer: Callable[[Discovered], None],
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Advertise this peer on ``address``'s interface and report peers of ``cluster``.

    ``on_peer`` is called (in this trio task) for every peer of the same cluster and a
    supported protocol version, other than ourselves. ``task_status.started`` gives the
    instance name actually registered (zeroconf renames on a conflict). Raises ``OSError``
    if mDNS cannot start on that interface. On cancellation the record is withdrawn (a
    goodbye packet) before returning.
    """
    info = ServiceInfo(SERVICE_TYPE, f"{instance_label(name)}.{SERVICE_TYPE}", port=port,
                       addresses=[socket.inet_aton(address)],
                       properties=_txt(node_id, cluster, port), server=_host_label(node_id))
    on_change, receive = _changes()
    async with _open_zeroconf(address) as zc:
        # Browse first: peers already on the LAN are found while our own name is probed.
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_resolve_forever, zc, receive, cluster, node_id, on_peer)
                async with _registered(zc, info):
                    instance = info.name.removesuffix("." + SERVICE_TYPE)
                    log.info("advertising %r over mDNS on %s", instance, address)
                    task_status.started(instance)
                    await trio.sleep_forever()
        finally:
            browser.cancel()


Changes = trio.MemoryReceiveChannel[tuple[ServiceStateChange, str]]


def _changes() -> tuple[Callable[..., None], Changes]:
    """A browser handler, and the channel where it puts each change it is told of."""
    send, receive = trio.open_memory_channel[tuple[ServiceStateChange, str]](math.inf)
    token = trio.lowlevel.current_trio_token()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        # On zeroconf's thread: schedule, never block.
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(send.send_nowait, (state_change, name))

    return on_change, receive


@asynccontextmanager
async def _open_zeroconf(address: str) -> AsyncIterator[Zeroconf]:
    """Zeroconf on ``address``'s interface only, closed on exit (even when cancelled)."""
    zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=[address], ip_version=IPVersion.V4Only))
    try:
        yield zc
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(zc.close, abandon_on_cancel=True)


@asynccontextmanager
async def _registered(zc: Zeroconf, info: ServiceInfo) -> AsyncIterator[None]:
    """``info`` is advertised for the block (zeroconf renames it on a conflict); on exit it
    is withdrawn with a goodbye packet, within :data:`UNREGISTER_TIMEOUT`."""
    await _in_zeroconf_loop(zc, _register(zc, info))
    try:
        yield
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(UNREGISTER_TIMEOUT):
            await _in_zeroconf_loop(zc, _unregister(zc, info))


async def _register(zc: Zeroconf, info: ServiceInfo) -> None:
    """(In zeroconf's loop) probe the name, then announce it."""
    announced = await zc.async_register_service(info, allow_name_change=True)
    await announced


async def _unregister(zc: Zeroconf, info: ServiceInfo) -> None:
    """(In zeroconf's loop) send the goodbyes."""
    await (await zc.async_unregister_service(info))


async def _in_zeroconf_loop(zc: Zeroconf, coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` in zeroconf's asyncio loop and wait for it, without a thread.

    Cancelling the caller cancels ``coro`` too: a registration still probing when the peer
    stops must not hold up :meth:`Zeroconf.close`, which waits for the loop's tasks.
    """
    assert zc.loop is not None
    future = asyncio.run_coroutine_threadsafe(coro, zc.loop)
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def wake(_: object) -> None:  # on zeroconf's thread
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    try:
        await done.wait()
    finally:
        future.cancel()  # a no-op once it is done
    future.result()


async def _resolve_forever(zc: Zeroconf, events: Changes, cluster: str, node_id: bytes,
                           on_peer: Callable[[Discovered], None]) -> None:
    async with trio.open_nursery() as nursery:
        async for change, name in events:
            if change == ServiceStateChange.Removed:
                log.debug("mDNS record withdrawn: %s", name)
            else:  # resolve concurrently: one slow peer must not hold up the others
                nursery.start_soon(_resolve, zc, name, cluster, node_id, on_peer)


async def _resolve(zc: Zeroconf, name: str, cluster: str, node_id: bytes,
                   on_peer: Callable[[Discovered], None]) -> None:
    info = await trio.to_thread.run_sync(
        lambda: zc.get_service_info(SERVICE_TYPE, name, int(RESOLVE_TIMEOUT * 1000)),
        abandon_on_cancel=True)
    found = parse_info(info) if info is not None else None
    if found is None or found.node_id == node_id:
        return
    if found.cluster != cluster:
        log.debug("ignoring %s: cluster %r", found.instance, found.cluster)
    elif found.version != PROTOCOL_VERSION:
        log.warning("ignoring %s at %s: protocol version %d, we speak %d",
                    found.instance, found.address[0], found.version, PROTOCOL_VERSION)
    else:
        log.debug("mDNS found %s at %s:%d", found.instance, *found.address)
        on_peer(found)


class Introduced(Protocol):
    """What :func:`serve_introductions` needs of membership."""

    @property
    def me(self) -> Member: ...
    def members(self) -> list[Member]: ...
    def introduce(self, candidates: Sequence[Address]) -> None: ...


async def serve_introductions(membership: Introduced, *, cluster: str, address: str) -> None:
    """Advertise this peer and browse over mDNS on ``address``'s interface until cancelled,
    introducing every new peer of ``cluster`` to membership. If mDNS cannot start there,
    say so once and return: only seeds and peers that contact us will be found."""
    me = membership.me

    def found(peer: Discovered) -> None:
        known = {m.id for m in membership.members() if m.alive}
        if peer.node_id not in known:
            log.debug("mDNS introduced %s at %s:%d", peer.instance, *peer.address)
            membership.introduce([peer.address])

    try:
        await serve_discovery(cluster=cluster, node_id=me.id, name=me.name, address=address,
                              port=me.port, on_peer=found)
    except OSError as exc:
        log.warning("mDNS is unavailable on %s (%s): only seeds and peers that contact us "
                    "will be found", address, exc)
