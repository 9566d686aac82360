"""The code cache: bundles on disk, one directory per digest, private to this user.

A peer fetches a :class:`~._bundles.CodeBundle` once and keeps it here; worker processes put
the directories of a task's bundles on ``sys.path`` (:mod:`._loader`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ._bundles import CodeBundle, is_digest
from ._errors import P2PClusterError

__all__ = ["CodeCache"]


class CodeCache:
    """Bundles on disk, one directory per digest, private to this user.

    Code in here runs, so the directory is ``0700`` and each bundle appears atomically (a
    temporary directory renamed into place). Files are fsynced before the rename, so a crash
    cannot leave a half-written bundle under a valid digest; loads then trust the disk and do
    not re-hash it. A crash can leave a ``.tmp-*`` directory behind, which is harmless.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._known: set[str] = set()
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = self.root.stat()
        if st.st_uid != os.getuid():
            raise P2PClusterError(f"code cache {self.root} belongs to another user")
        if st.st_mode & 0o077:
            self.root.chmod(0o700)

    @staticmethod
    def default_root() -> Path:
        """``$XDG_CACHE_HOME/p2pcluster/code``, else ``~/.cache/p2pcluster/code``."""
        base = os.environ.get("XDG_CACHE_HOME", "")
        top = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
        return top / "p2pcluster" / "code"

    def path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise ValueError(f"not a bundle digest: {digest!r}")
        return self.root / digest

    def has(self, digest: str) -> bool:
        """Whether the bundle is here. A bundle seen once is remembered: it is never
        removed while a peer runs (delete the cache only with no peer running)."""
        if digest in self._known:
            return True
        found = self.path(digest).is_dir()
        if found:
            self._known.add(digest)
        return found

    def store(self, bundle: CodeBundle) -> Path:
        """Write ``bundle`` unless it is there; safe against a concurrent writer."""
        final = self.path(bundle.digest)
        if self.has(bundle.digest):
            return final
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            for rel, content in bundle.files:
                _write_file(tmp / rel, content)
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            # another writer won the race; its copy holds the same bytes
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final


def _write_file(path: Path, content: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(fd)

