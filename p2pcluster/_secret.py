"""The cluster secrets: where they come from, and the steps of a rotation.

A secret is 32 random bytes, written as 43 characters of unpadded base64url. A peer holds a
short list of them, its *keyring*: the first is the **current** secret, which this peer
seals everything with; the others are **accepted**: traffic sealed with them is let in.
Each secret is named by its *fingerprint*, 12 hex digits of a hash that reveals nothing of
it (``p2pcluster secret --list``).

A rotation on a live cluster is three steps, each done on every peer before the next
(``docs/security.md``), so that no two peers ever hold disjoint lists:

1. **add** the new secret: peers accept it (:func:`add_secret`, ``secret --add``);
2. **promote** it: peers send with it (:func:`promote_secret`, ``secret --promote``);
3. **revoke** the old one: nobody accepts it any more (:func:`revoke_secret`).

Two commands start over instead: :func:`new_secret_file`'s first use creates the file, and
:func:`import_secret` makes the file hold exactly one given secret (a new machine, or a
cluster re-keyed all at once after a leak).

The secret file holds one secret per line, the current one first; blank lines and lines
starting with ``#`` are ignored. Where the secrets come from, first match wins:

1. ``P2PCLUSTER_SECRET`` (the secret itself; several may be given, comma-separated, the
   current one first);
2. ``--secret-file PATH`` / ``Config.secret_file``;
3. ``$XDG_CONFIG_HOME/p2pcluster/secret`` (``~/.config/p2pcluster/secret``).

How the file is read and written safely is :mod:`._secretfile`'s business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._errors import SecretError
from ._secretfile import read_private_file, write_private_file

__all__ = ["SecretSource", "default_secret_path", "fingerprint", "load_secrets"]

SECRET_BYTES = 32
ENV_VAR = "P2PCLUSTER_SECRET"
#: Secrets one file may hold: a rotation needs two; more means old ones were never revoked.
MAX_SECRETS = 8
_TEXT = re.compile(r"^[A-Za-z0-9_-]{43}$")
_HEX = re.compile(r"^[0-9a-f]{4,12}$")
_HEADER = ("# p2pcluster cluster secrets. The first is current (this peer sends with it); the\n"
           "# others are accepted. Change with `p2pcluster secret --add/--promote/--revoke`.\n")


def encode_secret(secret: bytes) -> str:
    return base64.urlsafe_b64encode(secret).rstrip(b"=").decode()


def decode_secret(text: str, where: str) -> bytes:
    text = text.strip()
    if not _TEXT.match(text):
        raise SecretError(
            f"{where}: a secret is 43 characters of base64url, as printed by "
            "`p2pcluster secret`; got something else"
        )
    try:
        return base64.urlsafe_b64decode(text + "=")
    except binascii.Error as exc:  # pragma: no cover - the regex already rules this out
        raise SecretError(f"{where}: {exc}") from None


def fingerprint(secret: bytes) -> str:
    """The secret's public name: 12 hex digits of a domain-separated SHA-256."""
    return hashlib.sha256(b"p2pcluster/v1 fingerprint\x00" + secret).hexdigest()[:12]


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def default_secret_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "p2pcluster" / "secret"


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where the secrets came from (for messages) and the secrets, current first."""

    where: str
    secrets: tuple[bytes, ...]
    path: Path | None

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(fingerprint(s) for s in self.secrets)


def _missing(path: Path) -> SecretError:
    if path == default_secret_path():
        create, where = "p2pcluster secret", ""
    else:
        where = f" --secret-file {shlex.quote(str(path))}"
        create = f"p2pcluster secret --new{where}"
    return SecretError(f"no secret file at {path}; create one with `{create}`, or import the "
                       f"cluster's secret with `p2pcluster secret --import{where}`")


def read_secret_file(path: Path) -> tuple[bytes, ...]:
    """The secrets in ``path``, current first. Refuses unsafe files and malformed lines."""
    try:
        text = read_private_file(path)
    except FileNotFoundError:
        raise _missing(path) from None
    lines = [ln.strip() for ln in text.splitlines()]
    found = tuple(decode_secret(ln, f"{path}:{i}") for i, ln in enumerate(lines, 1)
                  if ln and not ln.startswith("#"))
    if not found:
        raise SecretError(f"secret file {path} holds no secret")
    return found


def write_secret_file(path: Path, secrets_: Sequence[bytes]) -> None:
    """Replace ``path`` with ``secrets_`` (current first), atomically, mode 0600."""
    unique = tuple(dict.fromkeys(secrets_))
    if not unique:
        raise SecretError("a secret file must hold at least one secret")
    write_private_file(path, _HEADER + "".join(encode_secret(s) + "\n" for s in unique))


def load_secrets(*, secret_file: str | Path | None = None,
                 environ: Mapping[str, str] | None = None, create: bool = False
                 ) -> SecretSource:
    """Find the secrets by the precedence above; with ``create``, make the default file."""
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        parts = [p for p in env[ENV_VAR].split(",") if p.strip()]
        found = tuple(decode_secret(p, ENV_VAR) for p in parts)
        return SecretSource(ENV_VAR, found, None)
    path = Path(secret_file) if secret_file else default_secret_path(env)
    if create and not secret_file and not os.path.lexists(path):
        write_secret_file(path, (new_secret(),))
    return SecretSource(str(path), read_secret_file(path), path)


# --- the steps of a rotation ------------------------------------------------------------------


def _held(path: Path) -> tuple[bytes, ...]:
    return read_secret_file(path) if os.path.lexists(path) else ()


def find_secret(held: Sequence[bytes], key: str, where: str) -> bytes:
    """The secret of ``held`` that ``key`` names: the secret itself, or a prefix (at least 4
    hex digits) of its fingerprint."""
    key = key.strip()
    if _TEXT.match(key):
        wanted = decode_secret(key, "the secret given")
        matches = [s for s in held if s == wanted]
    elif _HEX.match(key.lower()):
        matches = [s for s in held if fingerprint(s).startswith(key.lower())]
    else:
        raise SecretError(f"{key!r} is neither a secret (43 characters) nor a fingerprint "
                          "(4 to 12 hex digits, as `p2pcluster secret --list` shows)")
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(fingerprint(s) for s in held) or "none"
    if matches:
        raise SecretError(f"{key!r} matches several secrets in {where}: give more digits "
                          f"(held: {listed})")
    raise SecretError(f"{where} holds no secret {key!r} (held: {listed})")


def add_secret(path: Path, secret: bytes) -> tuple[bytes, ...]:
    """Step 1: accept ``secret`` as well, the current one unchanged (a missing file is
    created with it as its current secret). Returns the new list."""
    held = _held(path)
    if secret in held:
        return held
    if len(held) >= MAX_SECRETS:
        raise SecretError(f"{path} already holds {len(held)} secrets; revoke old ones first "
                          "(`p2pcluster secret --list`, then `--revoke FINGERPRINT`)")
    updated = (*held, secret)
    write_secret_file(path, updated)
    return updated


def promote_secret(path: Path, key: str) -> tuple[bytes, ...]:
    """Step 2: make the accepted secret ``key`` names current; the old current one stays
    accepted."""
    held = _held(path)
    secret = find_secret(held, key, str(path))
    updated = (secret, *(s for s in held if s != secret))
    if updated != held:
        write_secret_file(path, updated)
    return updated


def revoke_secret(path: Path, key: str) -> tuple[bytes, ...]:
    """Step 3: stop accepting the secret ``key`` names. The current one cannot be revoked:
    promote another first."""
    held = _held(path)
    secret = find_secret(held, key, str(path))
    if secret == held[0]:
        raise SecretError(
            f"{fingerprint(secret)} is the current secret of {path}: this peer sends with it. "
            "Promote the new secret first (`p2pcluster secret --promote FINGERPRINT`), on "
            "every peer, then revoke this one")
    updated = tuple(s for s in held if s != secret)
    write_secret_file(path, updated)
    return updated


def new_secret_file(path: Path) -> tuple[bytes, tuple[bytes, ...]]:
    """A fresh secret, added as in step 1 (current only if the file did not exist).
    Returns it and the new list."""
    secret = new_secret()
    return secret, add_secret(path, secret)


def import_secret(path: Path, text: str) -> tuple[bytes, ...]:
    """Make ``path`` hold exactly the secret in ``text``: every other one is dropped."""
    secret = decode_secret(text, "imported secret")
    write_secret_file(path, (secret,))
    return (secret,)
