"""Code bundles: the files of a job or of an ``--include``, named by their digest.

Code travels as a :class:`CodeBundle`, a sorted list of ``(path, bytes)`` named by the
SHA-256 of its canonical CBOR. A peer fetches a bundle once and keeps it in its
:class:`~._codecache.CodeCache`, a directory per digest. Nothing about a task is pickled on
the way to a peer: the function travels by name (:mod:`._refs`), the arguments and results as
CBOR (:mod:`._values`), and a worker process loads the code (:mod:`._loader`).

The paths of a bundle are checked on both ends: relative, POSIX, no ``.`` or ``..`` component,
sorted and unique, so that a bundle from a peer cannot write outside its cache directory.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from ._errors import DecodeError, MessageTooLarge, SubmitError

__all__ = [
    "MAX_BYTES", "MAX_FILES", "MAX_PATH",
    "CodeBundle", "bundle_file", "bundle_tree", "is_digest", "job_module_name",
]

MAX_FILES = 10_000
MAX_BYTES = 64 * 2**20
MAX_PATH = 1024  # bytes of UTF-8 per bundle path
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")
_SKIP_DIRS = {"__pycache__"}


def _path_problem(path: Any) -> str | None:
    if type(path) is not str or not path:
        return f"a path must be a non-empty string, got {path!r}"
    if len(path.encode()) > MAX_PATH:
        return f"path {path[:60]!r}... is longer than {MAX_PATH} bytes"
    if path.startswith("/") or "\\" in path or "\0" in path:
        return f"path {path!r} is absolute or contains a backslash or NUL"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return f"path {path!r} has an empty, '.' or '..' component"
    return None


def _files_problem(files: Sequence[tuple[str, bytes]]) -> str | None:
    previous = ""
    for path, _ in files:
        problem = _path_problem(path)
        if problem:
            return problem
        if previous and path <= previous:
            return f"paths must be sorted and unique: {path!r} follows {previous!r}"
        if previous and path.startswith(previous + "/"):
            return f"{previous!r} is both a file and a directory"
        previous = path
    return None


@dataclass(frozen=True, slots=True)
class CodeBundle:
    """Files of a job or of an ``--include``, by POSIX relative path, sorted.

    The digest names the bundle everywhere (cache directory, :class:`FunctionRef`), so the
    encoding is canonical: one bundle, one byte string. The constructor checks the paths and
    raises ``ValueError``; :meth:`decode` raises :class:`~p2pcluster.ProtocolError` instead.
    """

    files: tuple[tuple[str, bytes], ...]
    _digest: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = _files_problem(self.files)
        if problem:
            raise ValueError(problem)

    def encode(self) -> bytes:
        """Canonical CBOR: ``[[path, bytes], ...]``."""
        return cbor2.dumps([list(item) for item in self.files], canonical=True)

    @property
    def digest(self) -> str:
        """Hex SHA-256 of :meth:`encode`, computed once."""
        if not self._digest:
            object.__setattr__(self, "_digest", hashlib.sha256(self.encode()).hexdigest())
        return self._digest

    @property
    def size(self) -> int:
        """Total bytes of file content."""
        return sum(len(data) for _, data in self.files)

    @classmethod
    def decode(
        cls, data: bytes, *, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES
    ) -> CodeBundle:
        """Decode bytes from a peer; refuse anything but a canonical, safe bundle."""
        from ._proto.codec import decode_cbor  # keeps worker processes from importing it

        if len(data) > max_bytes + max_files * (MAX_PATH + 16):
            raise MessageTooLarge(f"code bundle of {len(data)} bytes exceeds the limit")
        obj = decode_cbor(data)
        if type(obj) is not list:
            raise DecodeError("a code bundle is an array of [path, bytes]")
        if len(obj) > max_files:
            raise MessageTooLarge(f"code bundle of {len(obj)} files exceeds {max_files}")
        files = tuple(_decode_entry(item) for item in obj)
        if sum(len(content) for _, content in files) > max_bytes:
            raise MessageTooLarge(f"code bundle content exceeds {max_bytes} bytes")
        problem = _files_problem(files)
        if problem:
            raise DecodeError(f"code bundle: {problem}")
        bundle = cls(files)
        if bundle.encode() != bytes(data):
            raise DecodeError("code bundle is not in canonical form")
        return bundle


def _decode_entry(item: Any) -> tuple[str, bytes]:
    if type(item) is not list or len(item) != 2 or type(item[1]) is not bytes:
        raise DecodeError("a code bundle entry is [path: str, content: bytes]")
    return item[0], item[1]


def _check_size(bundle: CodeBundle, where: Path) -> CodeBundle:
    if len(bundle.files) > MAX_FILES or bundle.size > MAX_BYTES:
        raise SubmitError(
            f"{where} holds {len(bundle.files)} files and {bundle.size} bytes; peers accept at "
            f"most {MAX_FILES} files and {MAX_BYTES // 2**20} MiB. Ship only the package the "
            "tasks import, and let the tasks load large data themselves."
        )
    return bundle


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise SubmitError(f"{p}: no such {what}; check the path (it is relative to {Path.cwd()})")
    return p


def bundle_file(path: str | os.PathLike[str]) -> CodeBundle:
    """One file, stored under its base name: how a job file travels."""
    p = _existing(path, "file")
    if not p.is_file():
        raise SubmitError(f"{p} is not a file; pass a directory with --include instead")
    return _check_size(CodeBundle(((p.name, p.read_bytes()),)), p)


def bundle_tree(path: str | os.PathLike[str]) -> CodeBundle:
    """A file, or a directory ``pkg`` stored as ``pkg/...``: how an ``--include`` travels.

    Skips ``__pycache__``, ``*.pyc`` and directories whose name starts with a dot (``.git``,
    ``.venv``). Symbolic links to files are read; links to directories are not followed, so a
    link cannot pull a whole tree in by surprise.
    """
    p = _existing(path, "file or directory")
    if p.is_file():
        return bundle_file(p)
    top = p.resolve().name
    files: list[tuple[str, bytes]] = []
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        rel = Path(dirpath).relative_to(p)
        for name in filenames:
            if not name.endswith(".pyc"):
                files.append(((Path(top) / rel / name).as_posix(), (Path(dirpath) / name)
                              .read_bytes()))
    if not files:
        raise SubmitError(f"{p} contains no files to ship")
    return _check_size(CodeBundle(tuple(sorted(files))), p)


def job_module_name(digest: str) -> str:
    """The module name a job file is loaded under, on every peer: ``p2pjob_<16 hex>``."""
    return "p2pjob_" + digest[:16]


def is_digest(value: Any) -> bool:
    """Whether ``value`` is a bundle digest: 64 lowercase hex digits."""
    return type(value) is str and _DIGEST.match(value) is not None
