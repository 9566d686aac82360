"""`p2pcluster join`: one peer in the foreground, until SIGINT, SIGTERM or `leave`.

It loads the secret, picks the interface, runs membership, advertises and browses over mDNS,
serves the local control socket, and logs what happens in the cluster in plain words. A
graceful leave tells the cluster (left, not failed), withdraws the mDNS record, and returns
within two seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ._config import Config
from ._control import Reply, serve_control
from ._discovery import Discovered, serve_discovery
from ._errors import P2PClusterError
from ._membership import Membership, serve_membership
from ._netutil import choose_interface
from ._proto.envelope import Keyring
from ._proto.membership import EventKind, Member
from ._proto.meta import NodeMeta
from ._secret import load_secrets
from ._transport import Address
from ._version import __version__

__all__ = ["member_row", "run_daemon"]

log = logging.getLogger("p2pcluster")
REJECTION_REPORT = 5.0  # seconds between checks for rejected traffic
REJECTION_QUIET = 60.0  # at most one warning per source this often


def member_row(member: Member, now: float) -> dict[str, Any]:
    """A member as the control socket reports it (and `members --json` prints it)."""
    meta = NodeMeta.decode(member.meta)
    return {
        "name": member.name, "id": member.id.hex(), "host": member.host, "port": member.port,
        "status": member.status.name.lower(), "incarnation": member.incarnation,
        "workers": meta.workers, "queue": meta.queue, "tags": list(meta.tags),
        "version": meta.version, "age": round(max(0.0, now - member.since), 1),
    }


async def resolve_seeds(seeds: tuple[str, ...], default_port: int) -> list[Address]:
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


class Daemon:
    """The running peer: control requests, logs, and the leave sequence."""

    def __init__(self, membership: Membership, config: Config) -> None:
        self.membership = membership
        self.config = config
        self.leave_requested = trio.Event()
        self.discovery_scope = trio.CancelScope()
        self.discovery_done = trio.Event()
        self.discovery_done.set()  # until discovery starts

    # --- control --------------------------------------------------------------------------

    async def handle(self, request: Any, reply: Reply) -> None:
        op = request.get("op")
        now = trio.current_time()
        if op == "members":
            rows = [member_row(m, now) for m in self.membership.members()]
            await reply({"ok": True, "cluster": self.config.cluster,
                         "self": self.membership.machine.node_id.hex(), "members": rows})
        elif op == "status":
            stats = dataclasses.asdict(self.membership.statistics())
            await reply({"ok": True, "cluster": self.config.cluster, "version": __version__,
                         "self": member_row(self.membership.me, now), "statistics": stats})
        elif op == "leave":
            await reply({"ok": True, "name": self.membership.me.name})
            self.leave_requested.set()
        else:
            await reply({"ok": False, "error": f"unknown operation {op!r}"})

    # --- background tasks -----------------------------------------------------------------

    async def discover(self, address: str) -> None:
        self.discovery_done = trio.Event()
        me = self.membership.me

        def found(peer: Discovered) -> None:
            known = {m.id for m in self.membership.members() if m.alive}
            if peer.node_id not in known:
                log.debug("mDNS introduced %s at %s:%d", peer.instance, *peer.address)
                self.membership.join([peer.address])

        try:
            with self.discovery_scope:
                await serve_discovery(cluster=self.config.cluster, node_id=me.id, name=me.name,
                                      address=address, port=me.port, on_peer=found)
        except OSError as exc:
            log.warning("mDNS is unavailable on %s (%s): only seeds and peers that contact "
                        "us will be found", address, exc)
        finally:
            self.discovery_done.set()

    async def log_events(self) -> None:
        words = {EventKind.JOIN: "joined", EventKind.LEAVE: "left the cluster",
                 EventKind.FAIL: "failed: declared dead", EventKind.RECOVER: "is back"}
        async with self.membership.subscribe() as events:
            async for event in events:
                member = event.member
                if event.kind in words:
                    log.info("peer %s (%s:%d) %s; %d alive", member.name, member.host,
                             member.port, words[event.kind],
                             sum(m.alive for m in self.membership.members()))
                else:
                    log.debug("peer %s updated its metadata", member.name)

    async def log_rejections(self) -> None:
        pending: dict[str, int] = {}
        last: dict[str, float] = {}
        while True:
            await trio.sleep(REJECTION_REPORT)
            now = trio.current_time()
            for host, count in self.membership.wire.take_rejected().items():
                pending[host] = pending.get(host, 0) + count
            for host in [h for h in pending if now - last.get(h, -REJECTION_QUIET)
                         >= REJECTION_QUIET]:
                log.warning("rejected %d packet(s) or connection(s) from %s that failed "
                            "authentication: a peer with another cluster secret or cluster "
                            "name?", pending.pop(host), host)
                last[host] = now

    async def wait_for_leave(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                async def on_signal() -> None:
                    async for signum in signals:
                        log.info("received %s", signal.Signals(signum).name)
                        self.leave_requested.set()

                nursery.start_soon(on_signal)
                await self.leave_requested.wait()
                nursery.cancel_scope.cancel()

    async def leave(self) -> None:
        """Gossip "left" and withdraw the mDNS record, concurrently (under 2 s)."""
        log.info("leaving cluster %r", self.config.cluster)
        self.discovery_scope.cancel()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.membership.leave)
            nursery.start_soon(self.discovery_done.wait)


async def run_daemon(config: Config, *, control: Path) -> None:
    """Run a peer until a signal or a `leave` request, then leave gracefully."""
    source = load_secrets(secret_file=config.secret_file, create=True)
    keyring = Keyring.from_secrets(source.secrets, config.cluster)
    try:
        iface = choose_interface(config.interface)
    except ValueError as exc:
        raise P2PClusterError(str(exc)) from None
    how = "chosen" if config.interface else "the default route's"
    log.info("using interface %s (%s), %s", iface.name, iface.address, how)
    advertise = config.advertise_address or iface.address
    if config.interface:
        config = dataclasses.replace(config, bind_address=iface.address)
    seeds = await resolve_seeds(config.seeds, config.port)
    workers = config.workers if config.workers is not None else (os.cpu_count() or 1)
    meta = NodeMeta(workers, 0, config.tags, __version__).encode()
    async with trio.open_nursery() as nursery:
        membership = await nursery.start(partial(
            serve_membership, config, keyring, seeds=seeds, meta=meta, advertise=advertise))
        daemon = Daemon(membership, config)
        await nursery.start(serve_control, control, daemon.handle)
        me = membership.me
        log.info("peer %s (id %s) in cluster %r at %s:%d, %d workers; control socket %s",
                 me.name, me.id.hex()[:8], config.cluster, me.host, me.port, workers, control)
        if config.mdns:
            nursery.start_soon(daemon.discover, iface.address)
        nursery.start_soon(daemon.log_events)
        nursery.start_soon(daemon.log_rejections)
        await daemon.wait_for_leave()
        await daemon.leave()
        nursery.cancel_scope.cancel()
    log.info("left; goodbye")
