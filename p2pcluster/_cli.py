"""The ``p2pcluster`` command. Each command parses its arguments and calls into the library."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ._errors import P2PClusterError
from ._version import __version__

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

_DESCRIPTION = """\
A peer-to-peer compute cluster for a LAN. Run `p2pcluster join` on each machine; the peers
find each other over mDNS, and any of them can run work on all of them with `p2pcluster run`.
Every peer must hold the same cluster secret: see `p2pcluster secret --help`."""

_SECRET_EPILOG = """\
examples:
  p2pcluster secret                      print the secret (created on first use)
  p2pcluster secret | ssh lab2 p2pcluster secret --import
                                         give another machine the same secret
  p2pcluster secret --new                rotate: a new current secret, old ones still accepted

The secret lives in $XDG_CONFIG_HOME/p2pcluster/secret (mode 0600). P2PCLUSTER_SECRET
(the secret itself) or --secret-file override it. Anyone holding it can run code on every
peer of the cluster: share it only over a secure channel."""

_PENDING = {
    "join": "run a peer on this machine and join the cluster (foreground)",
    "run": "run a job file on the cluster and print its result",
    "members": "list the members the local peer knows",
    "leave": "ask the local peer to leave the cluster gracefully",
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pcluster", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"p2pcluster {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in _PENDING.items():
        sub = commands.add_parser(name, help=summary, description=(
            f"{summary}.\n\nNot available in p2pcluster {__version__} yet: it exits with "
            "status 2."), formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        sub.set_defaults(handler=_pending(name))
    secret = commands.add_parser(
        "secret", help="print, create, rotate or import the cluster secret",
        description="Print the cluster secret, creating it on first use.",
        epilog=_SECRET_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = secret.add_mutually_exclusive_group()
    action.add_argument("--new", action="store_true",
                        help="rotate: make a new current secret and keep the old ones accepted")
    action.add_argument("--import", dest="import_", action="store_true",
                        help="read a secret from standard input and make it current")
    action.add_argument("--path", action="store_true", help="print the secret file's path")
    secret.add_argument("--secret-file", metavar="PATH",
                        help="use this file instead of the per-user default")
    secret.set_defaults(handler=_cmd_secret)
    return parser


def _pending(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        print(f"p2pcluster {name}: not available in p2pcluster {__version__} yet",
              file=sys.stderr)
        return EXIT_USAGE

    return handler


def _cmd_secret(args: argparse.Namespace) -> int:
    from . import _secret

    path = Path(args.secret_file) if args.secret_file else _secret.default_secret_path()
    if args.path:
        print(path)
        return EXIT_OK
    if (args.new or args.import_) and _secret.ENV_VAR in os.environ:
        raise P2PClusterError(
            f"{_secret.ENV_VAR} is set, so the secret file is not used; unset it to "
            "rotate or import"
        )
    if args.new:
        current = _secret.rotate_secret_file(path)[0]
        print(f"rotated: new current secret in {path}; older ones are still accepted. "
              "Import it on every machine, then restart the peers.", file=sys.stderr)
    elif args.import_:
        current = _secret.import_secret(path, sys.stdin.read())[0]
        print(f"imported the secret into {path}", file=sys.stderr)
    else:
        existed = path.exists()
        source = _secret.load_secrets(secret_file=args.secret_file, create=True)
        if not existed and source.path is not None:
            print(f"created a new cluster secret in {path}", file=sys.stderr)
        current = source.secrets[0]
    print(_secret.encode_secret(current))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``p2pcluster`` console script."""
    args = _build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except P2PClusterError as exc:
        print(f"p2pcluster {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
