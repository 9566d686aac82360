"""`p2pcluster join`: one peer in the foreground, until SIGINT, SIGTERM or `leave`.

It loads the secret, picks the interface, runs membership, advertises and browses over mDNS,
serves the local control socket, and logs what happens in the cluster in plain words. A
graceful leave tells the cluster (left, not failed), withdraws the mDNS record, and returns
within two seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
from pathlib import Path
from typing import Any

import trio

from ._code import CodeBundle, FunctionRef
from ._config import Config
from ._control import ControlConnection, serve_control
from ._errors import P2PClusterError, ProtocolError
from ._jobs import JobRequest
from ._names import serve_name_guard
from ._peer import Peer, open_peer
from ._proto.membership import EventKind, Member
from ._proto.meta import NodeMeta
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


class Daemon:
    """The running peer: control requests, logs, and the leave sequence."""

    def __init__(self, peer: Peer, config: Config) -> None:
        self.peer = peer
        self.membership = peer.membership
        self.config = config
        self.leave_requested = trio.Event()

    # --- control --------------------------------------------------------------------------

    async def handle(self, request: Any, reply: ControlConnection) -> None:
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
        elif op == "submit":
            await self.submit(request, reply)
        elif op == "leave":
            await reply({"ok": True, "name": self.membership.me.name})
            self.leave_requested.set()
        else:
            await reply({"ok": False, "error": f"unknown operation {op!r}"})

    async def submit(self, request: Any, connection: ControlConnection) -> None:
        """Own a job for a local client (`p2pcluster run`, or a `Cluster`), and stream its
        results back as they come: ``{"results": [[index, status, payload, peer], ...]}``
        frames, then ``{"done": true}``. The job is cancelled if the client goes away."""
        try:
            job_request = job_request_from(request)
        except (P2PClusterError, ValueError, TypeError, KeyError) as exc:
            await connection({"ok": False, "error": f"bad job: {exc}"})
            return
        await connection({"ok": True, "peer": self.peer.name})
        send, receive = trio.open_memory_channel[list[Any]](math.inf)
        async with self.peer.open_job(job_request) as job:
            job.listeners.append(lambda batch: send.send_nowait([list(r) for r in batch]))
            async with trio.open_nursery() as nursery:
                async def client_gone() -> None:
                    await connection.receive()  # EOF or anything: the client is done
                    nursery.cancel_scope.cancel()

                async def finished() -> None:
                    await job.wait()
                    send.close()

                nursery.start_soon(client_gone)
                nursery.start_soon(finished)
                async for batch in receive:
                    while True:  # coalesce what is already there into one frame
                        try:
                            batch.extend(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await connection({"results": batch})
                await connection({"done": True, "cancelled": job.cancelled})
                nursery.cancel_scope.cancel()

    # --- background tasks -----------------------------------------------------------------

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


def job_request_from(request: dict[str, Any]) -> JobRequest:
    """Check and rebuild a job sent over the control socket."""
    ref = FunctionRef.from_wire(request["ref"])
    bundles = {}
    for digest, data in dict(request.get("bundles", {})).items():
        bundle = CodeBundle.decode(data)
        if bundle.digest != digest:
            raise ProtocolError(f"bundle {digest[:12]} has digest {bundle.digest[:12]}")
        bundles[digest] = bundle
    payloads = request["payloads"]
    if not isinstance(payloads, list) or not all(type(p) is bytes for p in payloads):
        raise TypeError("payloads must be a list of byte strings")
    timeout = request.get("timeout")
    chunksize = request.get("chunksize", 0)
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError("timeout must be a positive number of seconds")
    if type(chunksize) is not int or chunksize < 0:
        raise ValueError("chunksize must be a non-negative integer")
    return JobRequest(ref, bundles, payloads, None if timeout is None else float(timeout),
                      chunksize)


async def run_daemon(config: Config, *, control: Path) -> None:
    """Run a peer until a signal or a `leave` request, then leave gracefully: gossip "left"
    and withdraw the mDNS record concurrently (under 2 s)."""
    async with open_peer(config) as peer:
        log.info("using %s", peer.where)
        daemon = Daemon(peer, config)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, control, daemon.handle)
            me = peer.membership.me
            log.info("peer %s (id %s) in cluster %r at %s:%d, %d workers; control socket %s",
                     me.name, me.id.hex()[:8], config.cluster, me.host, me.port,
                     peer.pool.slots, control)
            nursery.start_soon(daemon.log_events)
            nursery.start_soon(daemon.log_rejections)
            nursery.start_soon(serve_name_guard, peer.membership)
            await daemon.wait_for_leave()
            log.info("leaving cluster %r", config.cluster)
            nursery.cancel_scope.cancel()
    log.info("left; goodbye")
