"""The ``p2pcluster`` command. Each command parses its arguments and calls trio.run once."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._errors import P2PClusterError
from ._secret_cli import add_secret_command
from ._version import __version__
from ._viewcli import add_view_commands

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: The reader of our output went away (``p2pcluster jobs | head -3``): 128 + SIGPIPE, the
#: status of a program that SIGPIPE ended, as the shell knows it.
EXIT_BROKEN_PIPE = 141

_DESCRIPTION = """\
A peer-to-peer compute cluster for a LAN. Run `p2pcluster join` on each machine; the peers
find each other over mDNS, and any of them can run work on all of them with `p2pcluster run`.
Every peer must hold the same cluster secret: see `p2pcluster secret --help`."""

_JOIN_EPILOG = """\
examples:
  p2pcluster join                          join the cluster "default" found on this LAN
  p2pcluster join --name lab1 --workers 6  advertise 6 worker slots under the name lab1
  p2pcluster join --seed 192.168.1.20      where multicast does not pass (add --no-mdns)
  p2pcluster join --interface eth1         several NICs: choose the LAN one
  p2pcluster join --dashboard 0.0.0.0:8797 the dashboard on every address (with a token)

The peer runs in the foreground and logs to stderr. It serves a web dashboard of the whole
cluster on http://127.0.0.1:8797/ (logged at start; `p2pcluster dashboard` prints it).
Ctrl-C or SIGTERM (or `p2pcluster leave` from another terminal) leaves gracefully: the
others see it as left, not failed.
Every option may also come from the environment (P2PCLUSTER_<FIELD>, for example
P2PCLUSTER_SEEDS=a:7946,b:7946) or a TOML file (--config); see docs/config.md.
The firewall must let UDP and TCP through on the port (7946), and mDNS (UDP 5353)."""

_RUN_EPILOG = """\
The job file defines main(cluster, *args) (or async def main), and module-level task
functions; `cluster` is a concurrent.futures.Executor spread over the cluster:

  def square(x):
      return x * x

  def main(cluster, n="10000"):
      return sum(cluster.map(square, range(int(n))))

ARGS are passed to main as strings. The return value is printed on stdout as JSON (or repr);
progress and logs go to stderr. Arguments and results travel as CBOR: numbers, strings,
bytes, lists, dicts, sets, datetimes, Decimals... (see docs/jobs.md).

examples:
  p2pcluster run examples/pi.py                  estimate pi on every peer
  p2pcluster run job.py 1000 --include data/     ship a data directory with the job
  p2pcluster run --requires gpu job.py           run the tasks only on peers tagged gpu
  p2pcluster run job.py --quiet > result.json    the result alone; stderr only for errors

Where a `p2pcluster join` daemon runs on this machine, the job goes through it, to the whole
cluster. Without one, `run` starts an ephemeral peer here (its workers start at once) and
joins any peers it finds over mDNS: it names them as soon as it finds one, and says it is
alone only after looking for a whole second (a job done sooner gets no such line).

The modules and packages job.py imports from its own directory (or from any directory that
is neither the standard library nor an installed distribution) ship with it by themselves;
a line on stderr lists them. Tasks go only to peers with this Python's minor version and
every installed distribution the job imports at the same minor version (exactly, with
--strict-versions); a line on stderr names each peer left out, and why. A failing
task prints its remote traceback and `run` exits 1; Ctrl-C cancels the job on every peer."""

_MEMBERS_EPILOG = """\
Asks the peer running on this machine (started with `p2pcluster join`) for its view of the
cluster. STATE is alive, suspect (missed probes; it may yet answer), dead or left; AGE is
the time since the state last changed. Peers that left or died more than 10 minutes ago are
hidden (the last line says how many), in the table and in --json, unless --all is given.
--versions asks every live peer for its Python, platform and the versions of p2pcluster's
dependencies (and of each --package NAME), and prints what differs between them."""


def _add_local_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", metavar="NAME",
                        help="cluster name (default: default, or P2PCLUSTER_CLUSTER)")
    parser.add_argument("--control", metavar="PATH",
                        help="control socket of the local peer (default: "
                             "$XDG_RUNTIME_DIR/p2pcluster/<cluster>.sock)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pcluster", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"p2pcluster {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_join(commands)
    _add_run(commands)
    members = commands.add_parser(
        "members", help="list the members the local peer knows",
        description="List the members of the cluster, as the local peer sees them.",
        epilog=_MEMBERS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_local_options(members)
    members.add_argument("--json", action="store_true", help="print JSON instead of a table")
    members.add_argument("--versions", action="store_true",
                         help="compare the peers' Python, platform and package versions")
    members.add_argument("--package", action="append", default=[], metavar="NAME",
                         help="with --versions: a distribution to compare too (repeatable)")
    members.add_argument("--all", action="store_true",
                         help="also list the peers that left or died more than 10 minutes ago")
    members.set_defaults(handler=_cmd_members)
    leave = commands.add_parser(
        "leave", help="ask the local peer to leave the cluster gracefully",
        description="Ask the peer running on this machine to leave the cluster and exit.")
    _add_local_options(leave)
    leave.set_defaults(handler=_cmd_leave)
    add_view_commands(commands, _add_local_options, _ask)
    add_secret_command(commands)
    return parser


def _add_join(commands: Any) -> None:
    join = commands.add_parser(
        "join", help="run a peer on this machine and join the cluster (foreground)",
        description="Run a peer in the foreground: find the other peers of the cluster over "
                    "mDNS (and any seeds), and offer this machine's workers to it.",
        epilog=_JOIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_local_options(join)
    join.add_argument("--name", help="this peer's name (default: the host name)")
    join.add_argument("--workers", type=int, metavar="N",
                      help="worker processes offered (default: the CPU count)")
    join.add_argument("--port", type=int, help="UDP and TCP port (default: 7946)")
    join.add_argument("--seed", action="append", metavar="HOST[:PORT]",
                      help="a peer to join directly; repeatable")
    join.add_argument("--interface", metavar="IFACE",
                      help="interface name or address for mDNS and the advertised address "
                           "(default: the one holding the default route)")
    join.add_argument("--advertise", metavar="ADDR",
                      help="address other peers should use to reach this one")
    join.add_argument("--no-mdns", action="store_true",
                      help="do not use mDNS: rely on --seed (containers, several subnets)")
    join.add_argument("--tag", action="append", metavar="TAG",
                      help="a label advertised with this peer; repeatable")
    join.add_argument("--secret-file", metavar="PATH", help="the cluster secret's file")
    dashboard = join.add_mutually_exclusive_group()
    dashboard.add_argument("--dashboard", metavar="HOST:PORT",
                           help="serve the web dashboard here (default: 127.0.0.1:8797; on "
                                "an address other than loopback it asks for a token, printed "
                                "at start)")
    dashboard.add_argument("--no-dashboard", action="store_true",
                           help="do not serve the web dashboard")
    join.add_argument("--config", metavar="FILE", help="a TOML file of Config fields")
    join.add_argument("--preset", choices=("lan", "local"), default="lan",
                      help="timing preset (default: lan; local: all peers on this machine)")
    join.add_argument("--log-level", default="info",
                      choices=("debug", "info", "warning", "error"), help="default: info")
    join.add_argument("--json-logs", action="store_true", help="one JSON object per log line")
    join.set_defaults(handler=_cmd_join)


def _add_run(commands: Any) -> None:
    run = commands.add_parser(
        "run", help="run a job file on the cluster and print its result",
        description="Run JOB.py's main(cluster, *ARGS) with the cluster as an Executor.",
        epilog=_RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("job", metavar="JOB.py", help="the job file")
    run.add_argument("args", nargs="*", default=[], metavar="ARGS",
                     help="strings passed to main()")
    _add_local_options(run)
    run.add_argument("--secret-file", metavar="PATH", help="the cluster secret's file")
    run.add_argument("--include", action="append", default=[], metavar="PATH",
                     help="a file or package to ship with the job, beyond the modules its "
                          "imports ship by themselves (repeatable)")
    run.add_argument("--requires", action="append", default=[], metavar="TAG",
                     help="run the tasks only on peers with this tag (repeatable)")
    run.add_argument("--strict-versions", action="store_true",
                     help="run the tasks only where Python and the distributions the job "
                          "imports have exactly this machine's versions")
    run.add_argument("--workers", type=int, metavar="N",
                     help="worker processes of an ephemeral peer (default: the CPU count)")
    daemon = run.add_mutually_exclusive_group()
    daemon.add_argument("--local", action="store_true",
                        help="never use the local daemon: always start an ephemeral peer")
    daemon.add_argument("--daemon", action="store_true",
                        help="require the local daemon (fail if none runs)")
    run.add_argument("--no-mdns", action="store_true",
                     help="do not look for other peers over mDNS (seeds only)")
    run.add_argument("--seed", action="append", metavar="HOST[:PORT]",
                     help="a peer to join through (repeatable)")
    run.add_argument("--preset", choices=("lan", "local"), default="lan",
                     help="timing preset of an ephemeral peer (default: lan)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="print nothing on stderr but errors: no progress bar, no note on "
                          "where the job runs, log level error")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                     help="log level on stderr (default: warning; error with --quiet)")
    run.set_defaults(handler=_cmd_run)


# --- commands -------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Any:
    from ._config import Config

    changes: dict[str, Any] = {}
    for option, field in (("cluster", "cluster"), ("name", "node_name"),
                          ("workers", "workers"), ("port", "port"),
                          ("interface", "interface"), ("advertise", "advertise_address"),
                          ("secret_file", "secret_file"), ("dashboard", "dashboard")):
        value = getattr(args, option, None)
        if value is not None:
            changes[field] = value
    if getattr(args, "seed", None):
        changes["seeds"] = tuple(args.seed)
    if getattr(args, "tag", None):
        changes["tags"] = tuple(args.tag)
    if getattr(args, "no_mdns", False):
        changes["mdns"] = False
    if getattr(args, "no_dashboard", False):
        changes["dashboard"] = ""
    if getattr(args, "strict_versions", False):
        changes["strict_versions"] = True
    return Config.load(preset=getattr(args, "preset", "lan"),
                       toml=getattr(args, "config", None), **changes)


def _control_path(args: argparse.Namespace, cluster: str) -> Path:
    from ._control import control_path

    return Path(args.control) if args.control else control_path(cluster)


def _cmd_join(args: argparse.Namespace) -> int:
    import trio

    from ._daemon import run_daemon
    from ._logging import setup_logging

    setup_logging(args.log_level, json_lines=args.json_logs)
    config = _config(args)
    trio.run(lambda: run_daemon(config, control=_control_path(args, config.cluster)))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from ._logging import setup_logging
    from ._run import run_job_file

    setup_logging(args.log_level or ("error" if args.quiet else "warning"))
    config = _config(args)
    daemon = False if args.local else (True if args.daemon else None)
    return run_job_file(args.job, args.args, config=config,
                        control=Path(args.control) if args.control else None, daemon=daemon,
                        include=args.include, quiet=args.quiet, requires=args.requires)


def _ask(args: argparse.Namespace, op: str, **body: Any) -> dict[str, Any]:
    from ._ask import ask_daemon

    return ask_daemon(args.cluster, args.control, op, **body)


#: Seconds after which `members` hides a peer that left or died, unless ``--all``.
DEPARTED_HIDDEN_AFTER = 600.0


def _cmd_members(args: argparse.Namespace) -> int:
    if args.versions:
        from ._tables import print_versions

        return print_versions(_ask(args, "versions", packages=args.package),
                              as_json=args.json)
    answer = _ask(args, "members")
    rows = sorted(answer["members"], key=lambda r: (r["status"] != "alive", r["name"]))
    shown = rows if args.all else [r for r in rows if not _long_departed(r)]
    hidden = len(rows) - len(shown)
    if args.json:
        print(json.dumps({"cluster": answer["cluster"], "self": answer["self"],
                          "members": shown, "hidden": hidden}, indent=2))
        return EXIT_OK
    from ._tables import print_members

    print_members(shown, answer["self"])
    alive = sum(r["status"] == "alive" for r in rows)
    print(f"\ncluster {answer['cluster']!r}: {alive} alive of {len(rows)} known (* this peer)")
    if hidden:
        print(f"({hidden} departed peer{'s' if hidden > 1 else ''} hidden; --all shows them)")
    return EXIT_OK


def _long_departed(row: dict[str, Any]) -> bool:
    """Left or dead, and for longer than :data:`DEPARTED_HIDDEN_AFTER` (AGE is the time since
    the state changed)."""
    return row["status"] in ("left", "dead") and row["age"] > DEPARTED_HIDDEN_AFTER


def _cmd_leave(args: argparse.Namespace) -> int:
    answer = _ask(args, "leave")
    print(f"peer {answer['name']} is leaving the cluster", file=sys.stderr)
    return EXIT_OK


def _root(exc: BaseException) -> BaseException:
    """The one exception inside nested single-exception groups (trio wraps errors)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _broken_pipe() -> int:
    """Leave quietly: what is still buffered for stdout goes nowhere (else Python's flush
    at exit fails again, and says so on stderr)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``p2pcluster`` console script."""
    args = _build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except BaseException as exc:  # report the root cause; re-raise anything else
        root = _root(exc)
        if isinstance(root, KeyboardInterrupt):
            return 130
        if isinstance(root, BrokenPipeError):
            return _broken_pipe()
        if (isinstance(root, OSError) and root.errno == errno.EADDRINUSE
                and not isinstance(root, P2PClusterError)):  # membership's bind says it better
            root = P2PClusterError(f"{root.strerror}: another p2pcluster peer, or another "
                                   "program, uses that port; choose another with --port")
        if isinstance(root, P2PClusterError):
            print(f"p2pcluster {args.command}: error: {root}", file=sys.stderr)
            return EXIT_FAILURE
        raise
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
