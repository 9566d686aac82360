"""The secret file on disk: read without following a link or blocking, checked before a byte
is trusted, replaced atomically and durably.

Whoever can read the secret can run code on every peer, and whoever can *write* it can make
a peer trust their cluster. So before the file is read:

- it is opened with ``O_NOFOLLOW | O_NONBLOCK``: a symbolic link is refused (someone could
  point it elsewhere), and a FIFO or a device opens at once instead of hanging the command;
- ``fstat`` on the open descriptor (no race with a rename) must show a regular file, owned
  by the user running p2pcluster, with no permission for group or others;
- its directory must belong to that user (or root) and must not be writable by group or
  others, unless it is sticky (``/tmp``): else another user could swap the file.

A write goes to a new file (``O_EXCL | O_NOFOLLOW``, mode 0600) in the same directory, which
is fsynced, renamed over the old one, and the directory fsynced: after a crash the file holds
either the old secrets or the new ones, never a mix or nothing. A path that exists but is not
a regular file of ours is refused rather than replaced.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from pathlib import Path

from ._errors import SecretError

__all__ = ["MAX_FILE_SIZE", "check_directory", "read_private_file", "write_private_file"]

#: Larger files are refused: a secret file holds a few lines.
MAX_FILE_SIZE = 64 * 1024
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"))


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _check_file(path: Path, info: os.stat_result) -> None:
    """Refuse anything but a regular file of ours that nobody else may touch."""
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"secret file {path} is {_kind(info.st_mode)}, not a regular file; "
                          "remove it, or point --secret-file at the file itself")
    if info.st_uid != os.geteuid():
        raise SecretError(
            f"secret file {path} belongs to {_user(info.st_uid)}, not to you "
            f"({_user(os.geteuid())}): another user could change the cluster you trust. "
            "Use a file of your own")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise SecretError(
            f"secret file {path} is accessible by group or others (mode {mode:04o}); "
            f"anyone who can read it can run code on the cluster. Fix it with: chmod 600 {path}")


def check_directory(directory: Path) -> None:
    """Refuse a directory that another user owns or may write to (sticky ones excepted)."""
    try:
        info = directory.stat()
    except OSError as exc:
        raise SecretError(f"cannot use the directory of the secret file {directory}: "
                          f"{exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise SecretError(f"{directory} should be the directory of the secret file, but it is "
                          f"{_kind(info.st_mode)}")
    if info.st_uid not in (os.geteuid(), 0):
        raise SecretError(
            f"the secret file's directory {directory} belongs to {_user(info.st_uid)}: that "
            "user could replace the secret. Keep the file in a directory of your own")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise SecretError(
            f"the secret file's directory {directory} is writable by group or others (mode "
            f"{mode:04o}): they could replace the secret. Fix it with: chmod go-w {directory}")


def read_private_file(path: Path) -> str:
    """The text of ``path`` once it passed every check of the module docstring.

    Raises ``FileNotFoundError`` if it does not exist, :class:`SecretError` otherwise.
    """
    check_directory(path.parent)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SecretError(f"secret file {path} is a symbolic link; it is not followed "
                              "(whoever controls the link controls the cluster you trust). "
                              "Point --secret-file at the file itself") from None
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
    try:
        _check_file(path, os.fstat(fd))
        data = os.read(fd, MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_SIZE:
        raise SecretError(f"secret file {path} is over {MAX_FILE_SIZE} bytes: not a secret "
                          "file")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise SecretError(f"secret file {path} is not text") from None


def _check_replaceable(path: Path) -> None:
    """An existing ``path`` may be replaced only if it is a regular file of ours."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    _check_file(path, info)


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably, mode 0600 (see the module
    docstring). Creates the directory (mode 0700) if need be."""
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_directory(directory)
    _check_replaceable(path)
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        view = memoryview(text.encode())
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
