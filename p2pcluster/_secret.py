"""The cluster secret: where it lives, how it is created, rotated, imported and checked.

A secret is 32 random bytes, written as 43 characters of unpadded base64url. The secret file
holds one secret per line: the first is the current one, which seals everything; the lines
after it are older secrets still accepted, so a rotation can roll across the machines without a
partition. Blank lines and lines starting with ``#`` are ignored.

Where the secret comes from, first match wins:

1. ``P2PCLUSTER_SECRET`` (the secret itself; several may be given, comma-separated);
2. ``--secret-file PATH`` / ``Config.secret_file``;
3. ``$XDG_CONFIG_HOME/p2pcluster/secret`` (``~/.config/p2pcluster/secret``).

A file readable or writable by group or others is refused: whoever reads the secret can run
code on every peer.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ._errors import SecretError

__all__ = ["SecretSource", "default_secret_path", "load_secrets"]

SECRET_BYTES = 32
ENV_VAR = "P2PCLUSTER_SECRET"
KEEP_OLD = 2  # older secrets kept by a rotation
_TEXT = re.compile(r"^[A-Za-z0-9_-]{43}$")


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


def _check_mode(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise SecretError(
            f"secret file {path} is accessible by group or others (mode "
            f"{stat.S_IMODE(mode):04o}); anyone who can read it can run code on the cluster. "
            f"Fix it with: chmod 600 {path}"
        )


def read_secret_file(path: Path) -> tuple[bytes, ...]:
    """The secrets in ``path``, current first. Refuses unsafe modes and malformed lines."""
    try:
        _check_mode(path)
        text = path.read_text()
    except FileNotFoundError:
        if path == default_secret_path():
            create, where = "p2pcluster secret", ""
        else:
            where = f" --secret-file {shlex.quote(str(path))}"
            create = f"p2pcluster secret --new{where}"
        raise SecretError(
            f"no secret file at {path}; create one with `{create}`, or import the cluster's "
            f"secret with `p2pcluster secret --import{where}`"
        ) from None
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc}") from None
    lines = [ln.strip() for ln in text.splitlines()]
    found = tuple(decode_secret(ln, f"{path}:{i}") for i, ln in enumerate(lines, 1)
                  if ln and not ln.startswith("#"))
    if not found:
        raise SecretError(f"secret file {path} holds no secret")
    return found


def write_secret_file(path: Path, secrets_: tuple[bytes, ...]) -> None:
    """Atomically replace ``path`` with ``secrets_``; the file is created with mode 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = "".join(encode_secret(s) + "\n" for s in secrets_)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    if create and not secret_file and not path.exists():
        write_secret_file(path, (new_secret(),))
    return SecretSource(str(path), read_secret_file(path), path)


def rotate_secret_file(path: Path) -> tuple[bytes, ...]:
    """Put a new secret first, keep up to :data:`KEEP_OLD` older ones; return the new list."""
    old = read_secret_file(path) if path.exists() else ()
    updated = (new_secret(), *old[:KEEP_OLD])
    write_secret_file(path, updated)
    return updated


def import_secret(path: Path, text: str) -> tuple[bytes, ...]:
    """Make the secret in ``text`` current in ``path``, keeping older ones accepted."""
    secret = decode_secret(text, "imported secret")
    old = read_secret_file(path) if path.exists() else ()
    updated = (secret, *[s for s in old if s != secret][:KEEP_OLD])
    write_secret_file(path, updated)
    return updated
