"""The daemon's dashboard: where it listens, its token, and hypercorn serving it on trio.

`p2pcluster join` serves :class:`~._dashapp.DashboardApp` at ``Config.dashboard``
(``127.0.0.1:8797`` unless told otherwise) with hypercorn's trio worker, in the daemon's own
trio loop: no thread, no second event loop, and the views read the peer's state directly.
hypercorn is the ``dashboard`` extra (``pip install 'p2pcluster[dashboard]'``); without it
the daemon runs as before and says how to get the dashboard.

On an address other than loopback, a random token (as Jupyter does) is required of every
request; the URL printed at start carries it, and `p2pcluster dashboard` asks the daemon for
it over the control socket, which only the daemon's user can open.
"""

from __future__ import annotations

import errno
import importlib
import logging
import secrets
import socket
from typing import Any, NamedTuple

import trio

from ._config import Config
from ._dashapp import DashboardApp, is_loopback_host
from ._errors import P2PClusterError
from ._lookout import Lookout
from ._peer import Peer

__all__ = ["DashboardPlace", "answer_view", "serve_dashboard"]

log = logging.getLogger("p2pcluster")
#: The default address; if its port is taken, the next of these many ports are tried.
DEFAULT = "127.0.0.1:8797"
SPARE_PORTS = 10
INSTALL = "pip install 'p2pcluster[dashboard]'"


class DashboardPlace(NamedTuple):
    """Where the dashboard is (``url``, with its token if it needs one), or why there is
    none (``url`` empty)."""

    url: str
    why_not: str = ""


async def serve_dashboard(peer: Peer, config: Config, lookout: Lookout, *,
                          task_status: trio.TaskStatus[DashboardPlace]
                          = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the dashboard until cancelled; ``task_status.started`` gives its place (with no
    URL if it is off, or hypercorn is not installed). An address in use is an error, unless
    it is the default one, which moves to one of the next ports."""
    if not config.dashboard:
        task_status.started(DashboardPlace("", "the dashboard is off (--no-dashboard)"))
        return
    try:  # in a thread: its import takes a while, and the peer's loop must not stall
        await trio.to_thread.run_sync(importlib.import_module, "hypercorn.trio")
        from hypercorn.config import Config as HypercornConfig
        from hypercorn.trio import serve
    except ImportError:
        why = f"the dashboard needs the dashboard extra: {INSTALL}"
        log.warning("no dashboard: %s (or turn it off with --no-dashboard)", why)
        task_status.started(DashboardPlace("", why))
        return
    host, _, port = config.dashboard.rpartition(":")
    host = host.strip("[]")
    sock = _bind(host, int(port), spare=SPARE_PORTS if config.dashboard == DEFAULT else 0)
    sock.listen(100)  # before anyone is told the URL: connections wait for hypercorn's accept
    token = None if is_loopback_host(host) else secrets.token_urlsafe(24)
    place = DashboardPlace(_url(host, sock.getsockname()[1], peer, token))
    settings = HypercornConfig()
    settings.bind = [f"fd://{sock.detach()}"]
    settings.accesslog = None
    settings.errorlog = logging.getLogger("p2pcluster.dashboard")
    settings.errorlog.setLevel(logging.WARNING)  # not hypercorn's "Running on": we say where
    settings.graceful_timeout = 0.5
    settings.include_server_header = False
    app = DashboardApp(peer, lookout, token=token)
    log.info("dashboard at %s", place.url)
    task_status.started(place)
    await serve(app, settings, mode="asgi")  # type: ignore[arg-type]


def _bind(host: str, port: int, *, spare: int) -> socket.socket:
    """A socket bound to ``host:port``; with ``spare``, if the port is taken, to one of the
    next ``spare`` ports, then to any free one (many peers on one machine, as in tests)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = [*range(port, port + spare + 1), *([0] if spare else [])]
    for candidate in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE and candidate != candidates[-1]:
                continue
            what = ("is in use" if exc.errno == errno.EADDRINUSE
                    else f"cannot be used: {exc.strerror}")
            raise P2PClusterError(
                f"the dashboard's address {host}:{candidate} {what}; choose another with "
                "--dashboard HOST:PORT (or P2PCLUSTER_DASHBOARD), or turn it off with "
                "--no-dashboard") from None
        else:
            return sock
    raise AssertionError("unreachable")  # pragma: no cover


def _url(host: str, port: int, peer: Peer, token: str | None) -> str:
    """The URL to open: a wildcard address shows as the peer's advertised address."""
    if host in ("0.0.0.0", "::", ""):
        host = peer.address[0]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


async def answer_view(op: str, lookout: Lookout, place: DashboardPlace) -> dict[str, Any]:
    """The control requests of the viewing commands: ``dashboard`` (where it is),
    ``jobs`` (`p2pcluster jobs`) and ``overview`` (`top`: members and jobs)."""
    if op == "dashboard":
        if not place.url:
            raise P2PClusterError(place.why_not)
        return {"url": place.url}
    await lookout.refresh()
    if op == "jobs":
        return lookout.jobs()
    return {**lookout.members(), "jobs": lookout.jobs()["jobs"]}
