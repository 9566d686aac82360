"""`p2pcluster secret`: print the cluster secret, and the steps of a rotation.

Secrets go to stdout only when asked for (``secret``, ``--new``, ``--show``), so that they
can be piped to another machine; everything else is said on stderr. A command that changes
the file asks the local daemon, if one runs, to reload it (``--no-reload`` does not).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ._errors import P2PClusterError

__all__ = ["add_secret_command"]

EXIT_OK = 0
EXIT_FAILURE = 1

_DESCRIPTION = """\
Print the cluster secret (creating it on first use), or change the secrets this machine
holds. A peer holds a short list: the current secret, which it sends with, and older or
newer ones it still accepts. Each has a fingerprint (--list) that names it without
revealing it."""

_EPILOG = """\
examples:
  p2pcluster secret                      print the current secret (created on first use)
  p2pcluster secret | ssh lab2 p2pcluster secret --import
                                         a new machine: the same secret, and only it
  p2pcluster secret --list               fingerprints, and which one is current

rotate on a live cluster in three steps; finish each step on every machine first:
  1. add:     p2pcluster secret --new                       on one machine: makes a secret,
                                                            prints it and its fingerprint FP
              p2pcluster secret --show FP | ssh lab2 p2pcluster secret --add
                                                            each other machine accepts it
  2. promote: p2pcluster secret --promote FP                every machine sends with it
  3. revoke:  p2pcluster secret --revoke OLD                every machine refuses the old one
Peers try each secret they hold, so the cluster stays whole all along. Each step reloads
the local peer (`p2pcluster join`) at once: no restart. After editing the file by hand,
`p2pcluster secret --reload` (or SIGHUP to the peer) does the same. After a leak, do the
three steps at once, revoking the leaked secret last: see docs/security.md.

--import replaces every secret of the file: rolling it out makes peers that have not
imported yet unreachable until they do. KEY is a fingerprint (4 digits or more) or the
secret itself; prefer a fingerprint, or stdin for --add: a command line is visible to
other users of this machine.

The secrets live in $XDG_CONFIG_HOME/p2pcluster/secret (mode 0600, yours, not a link).
P2PCLUSTER_SECRET (the secrets themselves, comma-separated, the current one first) or
--secret-file override it. Anyone holding a secret can run code on every peer of the
cluster: share it only over a secure channel."""


def add_secret_command(commands: Any) -> None:
    """Add the `secret` command to the subparsers ``commands``."""
    secret = commands.add_parser(
        "secret", help="print the cluster secret; add, promote, revoke or import secrets",
        description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    action = secret.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true",
                        help="list the secrets' fingerprints, the current one first")
    action.add_argument("--new", action="store_true",
                        help="make a new secret and accept it (step 1 on the first machine); "
                             "print it. The current secret is unchanged")
    action.add_argument("--add", nargs="?", const="-", metavar="KEY",
                        help="accept KEY too, read from stdin if omitted (step 1)")
    action.add_argument("--promote", metavar="KEY",
                        help="send with the accepted secret KEY; the old one stays accepted "
                             "(step 2)")
    action.add_argument("--revoke", metavar="KEY",
                        help="stop accepting KEY (step 3); the current one cannot be revoked")
    action.add_argument("--import", dest="import_", action="store_true",
                        help="read a secret from stdin; it becomes the only one in the file")
    action.add_argument("--show", metavar="KEY", help="print the secret KEY names")
    action.add_argument("--reload", action="store_true",
                        help="make the local peer read its secret file again")
    action.add_argument("--path", action="store_true", help="print the secret file's path")
    secret.add_argument("--secret-file", metavar="PATH",
                        help="use this file instead of the per-user default")
    secret.add_argument("--no-reload", action="store_true",
                        help="after a change, do not ask the local peer to reload")
    secret.add_argument("--cluster", metavar="NAME",
                        help="the local peer's cluster, for the reload (default: default)")
    secret.add_argument("--control", metavar="PATH", help="the local peer's control socket")
    secret.set_defaults(handler=_cmd_secret)


def _cmd_secret(args: argparse.Namespace) -> int:
    from . import _secret

    path = Path(args.secret_file) if args.secret_file else _secret.default_secret_path()
    if args.path:
        print(path)
        return EXIT_OK
    if args.reload:
        return _reload(args, path)
    changes = args.new or args.import_ or args.add or args.promote or args.revoke
    if changes and _secret.ENV_VAR in os.environ:
        raise P2PClusterError(f"{_secret.ENV_VAR} is set, so the secret file is not used; "
                              "unset it to change the file")
    if args.list or args.show:
        return _read_only(args)
    if changes:
        _change(args, path)
        return EXIT_OK if args.no_reload else _reload(args, path, quiet_if_none=True)
    existed = os.path.lexists(path)
    source = _secret.load_secrets(secret_file=args.secret_file, create=True)
    if not existed and source.path is not None:
        print(f"created a new cluster secret in {path}", file=sys.stderr)
    print(_secret.encode_secret(source.secrets[0]))
    return EXIT_OK


def _read_only(args: argparse.Namespace) -> int:
    from . import _secret

    source = _secret.load_secrets(secret_file=args.secret_file)
    if args.show:
        found = _secret.find_secret(source.secrets, args.show, source.where)
        print(_secret.encode_secret(found))
        return EXIT_OK
    print(f"# {source.where}")
    for i, mark in enumerate(source.fingerprints):
        print(f"{mark}  {'current (sends and accepts)' if i == 0 else 'accepted'}")
    return EXIT_OK


def _change(args: argparse.Namespace, path: Path) -> None:
    """Carry out --new, --add, --promote, --revoke or --import, and say what became of it."""
    from . import _secret

    fp = _secret.fingerprint
    if args.new:
        secret, held = _secret.new_secret_file(path)
        print(_secret.encode_secret(secret))
        if len(held) == 1:
            print(f"created {path} with the new secret {fp(secret)}, current", file=sys.stderr)
        else:
            print(f"added the new secret {fp(secret)} to {path}: accepted, not yet sent with. "
                  f"Next: add it on every other machine (p2pcluster secret --show {fp(secret)}"
                  f" | ssh HOST p2pcluster secret --add), then promote it everywhere",
                  file=sys.stderr)
    elif args.add:
        secret = _secret.decode_secret(_read_key(args.add, "secret to add"), "the secret")
        held = _secret.add_secret(path, secret)
        role = "current" if held[0] == secret else "accepted, not yet sent with"
        print(f"{path}: {fp(secret)} is {role}", file=sys.stderr)
    elif args.promote:
        held = _secret.promote_secret(path, args.promote)
        print(f"{path}: {fp(held[0])} is current; {_others(held)}", file=sys.stderr)
    elif args.revoke:
        before = _secret.read_secret_file(path)
        held = _secret.revoke_secret(path, args.revoke)
        gone = next(s for s in before if s not in held)
        print(f"{path}: revoked {fp(gone)}; {fp(held[0])} is current; {_others(held)}",
              file=sys.stderr)
    else:
        held = _secret.import_secret(path, _read_key("-", "secret to import"))
        print(f"imported the secret {fp(held[0])} into {path}: the only one there now",
              file=sys.stderr)


def _others(held: tuple[bytes, ...]) -> str:
    from ._secret import fingerprint

    if len(held) == 1:
        return "no other secret is accepted"
    return "also accepted: " + ", ".join(fingerprint(s) for s in held[1:])


def _read_key(given: str, what: str) -> str:
    """``given``, or for ``-`` a line from stdin (not echoed at a terminal)."""
    if given != "-":
        print("note: a secret on the command line is visible to other users of this "
              "machine; prefer stdin", file=sys.stderr)
        return given
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{what} (not echoed): ")
    return sys.stdin.readline()


def _reload(args: argparse.Namespace, path: Path, *, quiet_if_none: bool = False) -> int:
    """Ask the local daemon to read its secrets again, and say what it holds now."""
    from ._ask import ask_daemon
    from ._control import NoDaemon

    try:
        answer = ask_daemon(args.cluster, args.control, "reload-secrets")
    except NoDaemon:
        if not quiet_if_none:
            raise
        print("no peer runs on this machine for that cluster: `p2pcluster join` reads the "
              "file when it starts", file=sys.stderr)
        return EXIT_OK
    except P2PClusterError as exc:
        print(f"p2pcluster secret: error: the local peer did not reload: {exc}",
              file=sys.stderr)
        return EXIT_FAILURE
    held = answer["fingerprints"]
    accepted = ", ".join(held[1:]) or "no other"
    print(f"the local peer {answer['peer']} reloaded {answer['source']}: it sends with "
          f"{held[0]}, accepts {accepted}", file=sys.stderr)
    if answer["source"] != str(path) and not args.reload:
        print(f"note: that peer reads {answer['source']}, not {path}", file=sys.stderr)
    return EXIT_OK
