"""`p2pcluster join`: one peer in the foreground, until SIGINT, SIGTERM or `leave`.

It loads the secret, picks the interface, runs membership, advertises and browses over mDNS,
serves the local control socket, and logs what happens in the cluster in plain words. A
graceful leave tells the cluster (left, not failed), withdraws the mDNS record, and returns
within two seconds. SIGHUP, or the control request ``reload-secrets`` (`p2pcluster secret
--reload`), makes it read its secrets again, with no restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ._config import Config
from ._control import FramedStream, serve_control
from ._control_server import ControlSession
from ._dashboard import DashboardPlace, answer_view, serve_dashboard
from ._errors import P2PClusterError, SecretError
from ._lookout import Lookout
from ._names import serve_name_guard
from ._peer import Peer, open_peer
from ._proto.control import CONTROL_VERSION, member_row, welcome
from ._proto.membership import EventKind
from ._rejections import RejectionReport
from ._shm import available as shm_available
from ._version import __version__

__all__ = ["run_daemon"]

log = logging.getLogger("p2pcluster")
REJECTION_REPORT = 5.0  # seconds between checks for rejected traffic
REJECTION_QUIET = 60.0  # at most one warning about rejected traffic this often


class Daemon:
    """The running peer: control connections, logs, and the leave sequence."""

    def __init__(self, peer: Peer, config: Config) -> None:
        self.peer = peer
        self.config = config
        self.leave_requested = trio.Event()
        self.lookout = Lookout(peer)  #: the cluster as this peer sees it (jobs, top, dashboard)
        self.dashboard = DashboardPlace("", "the dashboard has not started yet")
        self.dashboard_up = trio.Event()  #: set once ``dashboard`` says where it is (or not)

    # --- control --------------------------------------------------------------------------

    async def serve_connection(self, stream: FramedStream) -> None:
        """Greet a client (refusing another version in words it can read), then serve its
        session until it leaves."""
        hello = await stream.receive_map()
        if hello is None:
            return
        if hello.get("op") != "hello" or hello.get("version") != CONTROL_VERSION:
            await stream.send_map({"ok": False, "error": (
                f"this daemon speaks control protocol {CONTROL_VERSION} (p2pcluster "
                f"{__version__}); the client sent {hello.get('op')!r} of version "
                f"{hello.get('version', 1)!r}: use the same p2pcluster version on both")})
            return
        client = str(hello.get("client", "a client"))[:200]
        limit = hello.get("max_value_size")
        limit = min(self.config.max_value_size,
                    limit if type(limit) is int and limit > 0 else 2**62)
        me = self.peer.me
        await stream.send_map(welcome(peer=me.name, node=me.id.hex(),
                                      cluster=self.config.cluster, software=__version__,
                                      max_value_size=self.config.max_value_size,
                                      segments=shm_available()))
        await ControlSession(stream, self.peer, self.admin, client, limit,
                             segments=hello.get("segments") is True).serve()

    async def admin(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """A control request other than a job: members, status, leave, reload-secrets, or a
        view (jobs, overview, dashboard)."""
        if op == "dashboard":  # it may be starting still
            with trio.move_on_after(10):
                await self.dashboard_up.wait()
        if op in ("jobs", "overview", "dashboard"):
            return await answer_view(op, self.lookout, self.dashboard)
        now = trio.current_time()
        if op == "members":
            rows = [member_row(m, now) for m in self.peer.members()]
            return {"cluster": self.config.cluster, "self": self.peer.me.id.hex(),
                    "members": rows}
        if op == "status":
            stats = self.peer.statistics()
            return {"cluster": self.config.cluster, "version": __version__,
                    "self": member_row(self.peer.me, now),
                    "statistics": dataclasses.asdict(stats.membership),
                    "sharing": dataclasses.asdict(stats.sharing),
                    "wire": dataclasses.asdict(self.peer.wire_statistics())}
        if op == "versions":
            packages = body.get("packages", [])
            if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
                raise P2PClusterError("packages must be a list of distribution names")
            members = self.peer.members()
            rows = await self.peer.versions(
                [(m.id, m.name) for m in members if m.alive], packages[:64])
            meta = {m.name: member_row(m, now) for m in members}
            for row in rows:
                known = meta.get(row["name"], {})
                row.update(system=known.get("system", ""), machine=known.get("machine", ""),
                           software=known.get("version", ""))
            return {"cluster": self.config.cluster, "self": self.peer.me.name, "peers": rows}
        if op == "leave":
            self.leave_requested.set()
            return {"name": self.peer.me.name}
        if op == "reload-secrets":
            return await self.reload_secrets()
        raise P2PClusterError(f"unknown operation {op!r}")

    # --- background tasks -----------------------------------------------------------------

    async def run_dashboard(self) -> None:
        """Serve the dashboard; the peer does not wait for it (hypercorn loads in a thread),
        but an error (its address in use) ends the daemon."""
        try:
            async with trio.open_nursery() as nursery:
                self.dashboard = await nursery.start(serve_dashboard, self.peer, self.config,
                                                     self.lookout)
                self.dashboard_up.set()
        finally:
            self.dashboard_up.set()

    async def log_events(self) -> None:
        words = {EventKind.JOIN: "joined", EventKind.LEAVE: "left the cluster",
                 EventKind.FAIL: "failed: declared dead", EventKind.RECOVER: "is back"}
        async with self.peer.subscribe() as events:
            async for event in events:
                member = event.member
                if event.kind in words:
                    log.info("peer %s (%s:%d) %s; %d alive", member.name, member.host,
                             member.port, words[event.kind],
                             sum(m.alive for m in self.peer.members()))
                else:
                    log.debug("peer %s updated its metadata", member.name)

    async def log_rejections(self) -> None:
        """One warning line at most every :data:`REJECTION_QUIET` seconds about traffic
        that failed authentication, however many sources sent it."""
        report = RejectionReport(REJECTION_QUIET)
        while True:
            await trio.sleep(REJECTION_REPORT)
            report.add(self.peer.take_rejected())
            line = report.due(trio.current_time())
            if line is not None:
                log.warning("%s", line)

    async def reload_secrets(self) -> dict[str, Any]:
        """Read the secrets again (SIGHUP, `p2pcluster secret --reload`); raise
        :class:`~p2pcluster.SecretError` and keep the keys in use if they cannot be read."""
        try:
            source = await self.peer.reload_secrets()
        except SecretError as exc:
            log.error("could not reload the cluster secrets; keeping the keys in use: %s",  # noqa: TRY400 - the message says it all
                      exc)
            raise
        held = source.fingerprints
        log.info("reloaded the cluster secrets from %s: sending with %s, accepting %s",
                 source.where, held[0], ", ".join(held))
        return {"peer": self.peer.me.name, "source": source.where, "fingerprints": list(held)}

    async def serve_reload_signal(self, *, task_status: trio.TaskStatus[None]
                                  = trio.TASK_STATUS_IGNORED) -> None:
        """Reload the secrets on every SIGHUP (none is lost to the default action, which
        would end the process, once this has started)."""
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                log.info("received SIGHUP: reloading the cluster secrets")
                with contextlib.suppress(SecretError):
                    await self.reload_secrets()

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


async def run_daemon(config: Config, *, control: Path) -> None:
    """Run a peer until a signal or a `leave` request, then leave gracefully: gossip "left"
    and withdraw the mDNS record concurrently (under 2 s)."""
    started = round(time.time())
    async with open_peer(config, started=started, label_output=True) as peer:
        log.info("using %s", peer.where)
        daemon = Daemon(peer, config)
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.serve_reload_signal)
            await nursery.start(serve_control, control, daemon.serve_connection)
            me = peer.me
            log.info("peer %s (id %s) in cluster %r at %s:%d, %d workers; control socket %s",
                     me.name, me.id.hex()[:8], config.cluster, me.host, me.port,
                     peer.workers, control)
            nursery.start_soon(daemon.log_events)
            nursery.start_soon(daemon.log_rejections)
            nursery.start_soon(partial(serve_name_guard, peer, started=started))
            nursery.start_soon(daemon.run_dashboard)
            await daemon.wait_for_leave()
            log.info("leaving cluster %r", config.cluster)
            nursery.cancel_scope.cancel()
    log.info("left; goodbye")
