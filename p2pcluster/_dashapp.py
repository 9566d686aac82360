"""The dashboard's web application: a plain ASGI app, read-only, on the daemon's trio loop.

Routes (``docs/operations.md`` documents the JSON):

- ``/`` and ``/static/<file>``: the page, its script and its style, shipped in the package
  (``p2pcluster/dashboard/``): no build step, nothing fetched from elsewhere;
- ``/api/members``, ``/api/jobs``, ``/api/jobs/<id>``, ``/api/tasks?since=<unix seconds>``:
  JSON; ``/api/stream``: server-sent events, one JSON snapshot about every second;
- ``/metrics``: Prometheus' text format.

Only GET and HEAD are served: nothing here changes anything. On an address other than
loopback every request needs the token (``?token=``, an ``Authorization: Bearer`` header, or
the cookie a page load with ``?token=`` sets); on loopback none, but the ``Host`` header must
name loopback, which stops a web page elsewhere from reading the dashboard through DNS
rebinding.

A plain ASGI app rather than a framework: seven routes do not need one, and Starlette and
anyio would cost an idle daemon 2.7 MB of its 5 MB budget for the dashboard.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import trio

from ._lookout import Lookout
from ._metrics import CONTENT_TYPE, render_metrics
from ._peer import Peer

__all__ = ["DashboardApp", "is_loopback_host"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Seconds between two snapshots of the event stream.
STREAM_INTERVAL = 1.0
ASSETS = {"index.html": "text/html; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8",
          "dashboard.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
]


def is_loopback_host(host: str) -> bool:
    """Does ``host`` (a name or an address, without port) mean this machine only?"""
    host = host.strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DashboardApp:
    """The ASGI application. ``token``: required of every request if not None."""

    def __init__(self, peer: Peer, lookout: Lookout, *, token: str | None) -> None:
        self._peer = peer
        self._lookout = lookout
        self._token = token
        self._cookie = f"p2pcluster-token-{peer.address[1]}"
        self._assets: dict[str, bytes] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except HTTPError as exc:
                await _send(send, exc.status, str(exc).encode() + b"\n",
                            "text/plain; charset=utf-8")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPError(405, "the dashboard is read-only: GET and HEAD only")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        cookie = self._check(scope, query)
        path: str = scope["path"]
        head = scope["method"] == "HEAD"
        if path == "/api/stream":
            await self._stream(receive, send)
            return
        body, kind = await self._route(path, query)
        await _send(send, 200, b"" if head else body, kind, cookie=cookie, length=len(body))

    async def _route(self, path: str, query: dict[str, list[str]]) -> tuple[bytes, str]:
        lookout = self._lookout
        if path in ("/", "/index.html") or path.startswith("/static/"):
            return self._asset("index.html" if not path.startswith("/static/") else path[8:])
        if path == "/metrics":
            peer = self._peer
            text = render_metrics(peer.statistics(), peer.wire_statistics(), peer.members(),
                                  peer.me, peer.config.cluster)
            return text.encode(), CONTENT_TYPE
        if path == "/api/tasks":
            return _json(await lookout.tasks(_since(query)))
        if path.startswith("/api/jobs/"):
            return _json(await self._job(path.removeprefix("/api/jobs/")))
        if path in ("/api/members", "/api/jobs"):
            await lookout.refresh()
            return _json(lookout.members() if path == "/api/members" else lookout.jobs())
        raise HTTPError(404, f"no such page: {path}")

    async def _job(self, text: str) -> dict[str, Any]:
        try:
            job = bytes.fromhex(text)
        except ValueError:
            raise HTTPError(404, f"{text!r} is no job id (32 hex digits)") from None
        detail = await self._lookout.job(job)
        if detail is None:
            raise HTTPError(404, f"no live peer knows job {text}")
        return detail

    def _asset(self, name: str) -> tuple[bytes, str]:
        if name not in ASSETS:
            raise HTTPError(404, f"no such file: {name}")
        if name not in self._assets:
            self._assets[name] = resources.files("p2pcluster").joinpath(
                "dashboard", name).read_bytes()
        return self._assets[name], ASSETS[name]

    def _check(self, scope: Scope, query: dict[str, list[str]]) -> str | None:
        """Refuse a request without the token (or, on loopback, for another host name);
        the cookie to set when the token came in the query."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if self._token is None:
            host = headers.get("host", "localhost").rsplit(":", 1)[0]
            if not is_loopback_host(host):
                raise HTTPError(403, f"this dashboard serves loopback only, not {host!r}")
            return None
        offered = query.get("token", [""])[0]
        bearer = headers.get("authorization", "")
        candidates = [offered, bearer.removeprefix("Bearer ").removeprefix("token "),
                      *_cookies(headers.get("cookie", "")).get(self._cookie, [])]
        if not any(c and hmac.compare_digest(c.encode(), self._token.encode())
                   for c in candidates):
            raise HTTPError(403, "this dashboard needs its token: open the URL that `p2pcluster "
                                 "join` printed, or run `p2pcluster dashboard` on its machine")
        if not offered:
            return None
        return f"{self._cookie}={offered}; Path=/; HttpOnly; SameSite=Strict"

    async def _stream(self, receive: Receive, send: Send) -> None:
        """Server-sent events: a snapshot about every second, until the client leaves."""
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), *SECURITY_HEADERS]})
        async with trio.open_nursery() as nursery:
            async def until_gone() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_gone)
            await send({"type": "http.response.body", "body": b"retry: 2000\n\n",
                        "more_body": True})
            while True:
                began = trio.current_time()
                await self._lookout.refresh()
                data = json.dumps(self._lookout.snapshot(), separators=(",", ":"))
                await send({"type": "http.response.body",
                            "body": f"data: {data}\n\n".encode(), "more_body": True})
                await trio.sleep_until(began + STREAM_INTERVAL)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _send(send: Send, status: int, body: bytes, kind: str, *,
                cookie: str | None = None, length: int | None = None) -> None:
    headers = [(b"content-type", kind.encode()),
               (b"content-length", str(len(body) if length is None else length).encode()),
               *SECURITY_HEADERS]
    if cookie:
        headers.append((b"set-cookie", cookie.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json(value: Any) -> tuple[bytes, str]:
    return json.dumps(value, separators=(",", ":")).encode(), "application/json"


def _since(query: dict[str, list[str]]) -> float:
    text = query.get("since", [""])[0]
    if not text:
        return time.time() - 60
    try:
        since = float(text)
    except ValueError:
        raise HTTPError(400, f"since={text!r}: give Unix seconds, such as "
                             f"{time.time() - 60:.0f}") from None
    if not math.isfinite(since):
        raise HTTPError(400, "since must be a finite number of Unix seconds")
    return since


def _cookies(header: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            found.setdefault(name, []).append(value)
    return found
