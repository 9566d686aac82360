"""The viewing commands: `p2pcluster dashboard`, `p2pcluster jobs` and `p2pcluster top`.

Each asks the local daemon over its control socket (the operations ``dashboard``, ``jobs``
and ``overview`` of :func:`._dashboard.answer_view`); the daemon asks every live peer
(:mod:`._lookout`), so they show the whole cluster from any machine. `top` draws with the
standard library's curses: nothing to install.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["add_view_commands", "format_jobs", "format_members"]

Ask = Callable[..., dict[str, Any]]

_JOBS_EPILOG = """\
Lists the jobs of every live peer, as the local peer (`p2pcluster join`) gathers them:
those running and the last 50 that ended on each owner. DONE is tasks with a result of the
total, then who ran them (peer: tasks). A job whose owner did not answer this time is marked
"(stale)": what it said last. --json prints the same as the dashboard's /api/jobs."""

_TOP_EPILOG = """\
A full-screen view of the cluster, refreshed every second: the members (workers busy, queue,
CPU, memory, load) and the jobs with their progress. q quits (so does Ctrl-C)."""

_DASHBOARD_EPILOG = """\
Prints the web dashboard's URL of the peer running on this machine (with its token when it
listens on an address other than loopback). `p2pcluster join --dashboard HOST:PORT` moves it,
--no-dashboard turns it off."""


def add_view_commands(commands: Any, local_options: Callable[[Any], None], ask: Ask) -> None:
    """Add the three commands to ``commands`` (argparse sub-parsers); ``ask(args, op)``
    sends a request to the local daemon."""
    raw = argparse.RawDescriptionHelpFormatter
    dashboard = commands.add_parser(
        "dashboard", help="print (or --open) the local peer's web dashboard URL",
        description="Print the URL of the local peer's web dashboard.",
        epilog=_DASHBOARD_EPILOG, formatter_class=raw)
    local_options(dashboard)
    dashboard.add_argument("--open", action="store_true", help="open it in a web browser")
    dashboard.set_defaults(handler=lambda args: _cmd_dashboard(args, ask))
    jobs = commands.add_parser(
        "jobs", help="list running and recent jobs of the whole cluster",
        description="List the running and recent jobs of every peer, with their progress.",
        epilog=_JOBS_EPILOG, formatter_class=raw)
    local_options(jobs)
    jobs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    jobs.set_defaults(handler=lambda args: _cmd_jobs(args, ask))
    top = commands.add_parser(
        "top", help="a live full-screen view of members and jobs (q quits)",
        description="Show the members and jobs of the cluster, refreshed every second.",
        epilog=_TOP_EPILOG, formatter_class=raw)
    local_options(top)
    top.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                     help="seconds between refreshes (default: 1)")
    top.set_defaults(handler=lambda args: _cmd_top(args, ask))


def _cmd_dashboard(args: argparse.Namespace, ask: Ask) -> int:
    url: str = ask(args, "dashboard")["url"]
    print(url)
    if args.open:
        import webbrowser

        if not webbrowser.open(url):
            print("p2pcluster dashboard: no web browser found; open the URL above",
                  file=sys.stderr)
            return 1
    return 0


def _cmd_jobs(args: argparse.Namespace, ask: Ask) -> int:
    answer = ask(args, "jobs")
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    lines = format_jobs(answer["jobs"], answer["time"])
    silent = sorted(name for name, p in answer["peers"].items() if not p["answered"])
    print("\n".join(lines) if lines else "no jobs yet (run one with `p2pcluster run job.py`)")
    if silent:
        print(f"\nnot answering: {', '.join(silent)} (their jobs as they said last)")
    return 0


# --- formatting (shared by jobs and top) ------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 90:
        return f"{value:.1f}s"
    if value < 5400:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{value / 3600:.1f}h"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in table]


def format_jobs(jobs: list[dict[str, Any]], now: float) -> list[str]:
    """The job table of `jobs` and `top`: a row per job, then who ran its tasks."""
    if not jobs:
        return []
    header = ("JOB", "OWNER", "FUNCTION", "STATE", "DONE", "RATE", "ETA", "ERRORS", "AGE")
    rows: list[tuple[str, ...]] = []
    for job in jobs:
        percent = 100 * job["done"] / job["total"] if job["total"] else 100.0
        state = job["state"] + (" (stale)" if job["stale"] else "")
        rate = "-" if job["rate"] is None else f"{job['rate']:.1f}/s"
        rows.append((job["id"][:8], job["owner"], job["label"], state,
                     f"{job['done']}/{job['total']} {percent:.0f}%", rate,
                     _seconds(job["eta"]), str(job["errors"]),
                     _seconds(max(0.0, now - job["started"]))))
    lines = _table(header, rows)
    out = [lines[0]]
    for job, line in zip(jobs, lines[1:], strict=True):
        out.append(line)
        ran = "  ".join(f"{peer}: {n}" for peer, n in job["done_by"].items())
        held = "  ".join(f"{peer}: {n}" for peer, n in job["held_by"].items())
        if ran:
            out.append(f"    ran by    {ran}")
        if held:
            out.append(f"    queued at {held}")
    return out


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f}{unit}"
        size /= 1024
    return f"{size:.1f}TiB"


def format_members(members: list[dict[str, Any]]) -> list[str]:
    """The member table of `top`."""
    header = ("NAME", "STATE", "ADDRESS", "BUSY", "QUEUE", "CPU", "MEMORY", "LOAD", "VERSION")
    rows: list[tuple[str, ...]] = []
    for m in members:
        gone = m["status"] in ("dead", "left")
        busy = "-" if gone or m["busy"] is None else f"{m['busy']}/{m['workers']}"
        queue = m["queued"] if m["queued"] is not None else m["queue"]
        rows.append((m["name"] + (" *" if m["self"] else ""),
                     m["status"] + ("" if m["answered"] is not False or gone else " (silent)"),
                     f"{m['host']}:{m['port']}", busy, "-" if gone else str(queue),
                     "-" if m["cpu"] is None else f"{m['cpu']:.0f}%", _size(m["rss"]),
                     "-" if m["load"] is None else f"{m['load']:.2f}", m["version"] or "-"))
    return _table(header, rows)


# --- top ----------------------------------------------------------------------------------------


def _cmd_top(args: argparse.Namespace, ask: Ask) -> int:
    import curses

    ask(args, "overview")  # fail before the screen changes if no daemon runs
    error: list[str] = []
    curses.wrapper(lambda screen: _top_loop(screen, lambda: ask(args, "overview"),
                                            max(0.1, args.interval), error))
    if error:
        print(f"p2pcluster top: error: {error[0]}", file=sys.stderr)
        return 1
    return 0


def _top_loop(screen: Any, fetch: Callable[[], dict[str, Any]], interval: float,
              error: list[str]) -> None:
    from ._errors import P2PClusterError

    screen.timeout(int(interval * 1000))
    next_fetch = 0.0
    while True:
        if time.monotonic() >= next_fetch:
            try:
                view = fetch()
            except P2PClusterError as exc:
                error.append(str(exc))
                return
            next_fetch = time.monotonic() + interval
            _draw(screen, view)
        key = screen.getch()
        if key in (ord("q"), ord("Q"), 27):
            return


def _draw(screen: Any, view: dict[str, Any]) -> None:
    import curses

    alive = [m for m in view["members"] if m["status"] in ("alive", "suspect")]
    workers = sum(m["workers"] for m in alive)
    busy = sum(m["busy"] or 0 for m in alive)
    lines = [f"p2pcluster top - cluster {view['cluster']!r}: {len(alive)} peers, "
             f"{busy}/{workers} workers busy    {time.strftime('%H:%M:%S')}    q quits", "",
             *format_members(view["members"]), "",
             *(format_jobs(view["jobs"], view["time"]) or ["no jobs yet"])]
    screen.erase()
    height, width = screen.getmaxyx()
    for row, line in enumerate(lines[:height - 1]):
        screen.addnstr(row, 0, line, max(0, width - 1),
                      curses.A_BOLD if row == 0 else curses.A_NORMAL)
    screen.refresh()
