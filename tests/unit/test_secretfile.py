"""The secret file's checks: no link followed, no FIFO hang, its owner and mode, its
directory, and a durable atomic write."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pcluster import SecretError
from p2pcluster._secret import encode_secret, load_secrets, read_secret_file, write_secret_file
from p2pcluster._secretfile import MAX_FILE_SIZE, read_private_file, write_private_file

ROOT = Path(__file__).resolve().parents[2]
SECRET = bytes(range(32))
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root to give a file to another user")


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    d = tmp_path / "conf"
    d.mkdir(mode=0o700)
    return d


def test_a_symbolic_link_is_not_followed(directory: Path) -> None:
    real = directory / "real"
    write_secret_file(real, (SECRET,))
    link = directory / "secret"
    link.symlink_to(real)
    with pytest.raises(SecretError, match="is a symbolic link; it is not followed"):
        read_secret_file(link)
    with pytest.raises(SecretError, match="a symbolic link, not a regular file"):
        write_secret_file(link, (SECRET,))  # nor replaced: it may be someone's on purpose
    assert link.is_symlink()


def test_a_dangling_link_is_not_created_through(tmp_path: Path, directory: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`secret` creates the default file on first use: not at a link's target."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("P2PCLUSTER_SECRET", raising=False)
    default = tmp_path / "xdg" / "p2pcluster" / "secret"
    default.parent.mkdir(parents=True, mode=0o700)
    target = directory / "planted"
    default.symlink_to(target)
    with pytest.raises(SecretError, match="symbolic link"):
        load_secrets(create=True)
    assert not target.exists()


def test_a_fifo_does_not_hang_the_command(tmp_path: Path, directory: Path) -> None:
    fifo = directory / "secret"
    os.mkfifo(fifo, 0o600)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "p2pcluster", "secret", "--secret-file", str(fifo)],
        check=False, capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(tmp_path)})
    assert time.monotonic() - start < 20
    assert result.returncode == 1 and result.stdout == ""
    assert "is a FIFO, not a regular file" in result.stderr
    with pytest.raises(SecretError, match="is a FIFO"):
        write_secret_file(fifo, (SECRET,))  # --import does not replace it either


def test_other_kinds_of_file_are_refused(directory: Path) -> None:
    (directory / "sub").mkdir(mode=0o700)
    with pytest.raises(SecretError, match="is a directory, not a regular file"):
        read_secret_file(directory / "sub")


def test_group_or_other_permissions_are_refused(directory: Path) -> None:
    path = directory / "secret"
    write_secret_file(path, (SECRET,))
    for mode in (0o640, 0o604, 0o620):
        path.chmod(mode)
        with pytest.raises(SecretError, match=f"mode {mode:04o}"):
            read_secret_file(path)
    path.chmod(0o400)
    assert read_secret_file(path) == (SECRET,)


@needs_root
def test_a_file_of_another_user_is_refused(directory: Path) -> None:
    path = directory / "secret"
    write_secret_file(path, (SECRET,))
    os.chown(path, NOBODY, -1)
    with pytest.raises(SecretError, match=rf"belongs to uid {NOBODY}.*not to you"):
        read_secret_file(path)
    with pytest.raises(SecretError, match=f"belongs to uid {NOBODY}"):
        write_secret_file(path, (SECRET,))


@needs_root
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    path = theirs / "secret"
    write_secret_file(path, (SECRET,))
    os.chown(theirs, NOBODY, -1)
    with pytest.raises(SecretError, match=f"directory {theirs} belongs to uid {NOBODY}"):
        read_secret_file(path)


def test_a_directory_others_may_write_is_refused_unless_sticky(directory: Path) -> None:
    path = directory / "secret"
    write_secret_file(path, (SECRET,))
    directory.chmod(0o777)
    with pytest.raises(SecretError, match=r"writable by group or others.*chmod go-w"):
        read_secret_file(path)
    with pytest.raises(SecretError, match="writable by group or others"):
        write_secret_file(path, (SECRET,))
    directory.chmod(0o1777)  # like /tmp: only the owner may rename or remove the file
    assert read_secret_file(path) == (SECRET,)


def test_a_huge_file_is_refused(directory: Path) -> None:
    path = directory / "secret"
    write_private_file(path, "#" * (MAX_FILE_SIZE + 1))
    with pytest.raises(SecretError, match="over 65536 bytes"):
        read_private_file(path)


def test_a_write_is_fsynced_then_renamed_then_the_directory_fsynced(
        directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = directory / "secret"
    write_secret_file(path, (SECRET,))
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        calls.append(f"fsync {kind}")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        assert Path(src).read_text().count(encode_secret(SECRET[::-1])) == 1  # complete
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_secret_file(path, (SECRET[::-1],))
    assert calls == ["fsync file", "replace", "fsync dir"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in directory.iterdir()] == ["secret"]  # no temporary file left
