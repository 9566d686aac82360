"""Secret management: creation, permissions, rotation, import, overrides, and the CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from p2pcluster import SecretError
from p2pcluster._cli import main
from p2pcluster._secret import (
    decode_secret,
    default_secret_path,
    encode_secret,
    fingerprint,
    load_secrets,
    read_secret_file,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("P2PCLUSTER_SECRET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))  # no daemon to reload
    return tmp_path


def secret_path(home: Path) -> Path:
    return home / "config" / "p2pcluster" / "secret"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_first_use_creates_a_private_secret(home: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    code, out, err = run(capsys, "secret")
    assert code == 0
    path = secret_path(home)
    assert "created" in err and str(path) in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(decode_secret(out.strip(), "stdout")) == 32
    code, again, err = run(capsys, "secret")
    assert (code, again, err) == (0, out, "")  # the same secret, not a new one


def test_new_adds_a_secret_that_is_accepted_but_not_yet_sent_with(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, first, _ = run(capsys, "secret")
    code, second, err = run(capsys, "secret", "--new")
    assert code == 0 and second != first
    fp = fingerprint(decode_secret(second, "stdout"))
    assert f"added the new secret {fp}" in err and "promote" in err
    kept = read_secret_file(secret_path(home))
    assert [encode_secret(s) for s in kept] == [first.strip(), second.strip()]
    code, current, _ = run(capsys, "secret")
    assert current == first  # still sending with the first one


def test_import_replaces_every_secret_and_echoes_nothing(
        home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, "secret")
    run(capsys, "secret", "--new")
    shared = encode_secret(bytes(range(32)))
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(shared + "\n"))
    code, out, err = run(capsys, "secret", "--import")
    assert code == 0 and out == ""
    assert shared not in err and fingerprint(bytes(range(32))) in err
    assert read_secret_file(secret_path(home)) == (bytes(range(32)),)
    assert stat.S_IMODE(secret_path(home).stat().st_mode) == 0o600
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("hunter2"))
    code, _, err = run(capsys, "secret", "--import")
    assert code == 1 and "43 characters" in err and "hunter2" not in err


def test_group_readable_file_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "secret")
    path = secret_path(home)
    path.chmod(0o640)
    code, out, err = run(capsys, "secret")
    assert code == 1 and out == ""
    assert "accessible by group or others (mode 0640)" in err and "chmod 600" in err


def test_environment_overrides_files(home: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    value = encode_secret(bytes(32))
    monkeypatch.setenv("P2PCLUSTER_SECRET", value)
    code, out, _ = run(capsys, "secret")
    assert (code, out.strip()) == (0, value)
    assert not secret_path(home).exists()
    code, _, err = run(capsys, "secret", "--new")
    assert code == 1 and "P2PCLUSTER_SECRET is set" in err
    monkeypatch.setenv("P2PCLUSTER_SECRET", "short")
    with pytest.raises(SecretError):
        load_secrets()


def test_secret_file_option(home: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "team.secret"
    path.write_text("# team secret\n" + encode_secret(bytes(range(32))) + "\n")
    path.chmod(0o600)
    code, out, _ = run(capsys, "secret", "--secret-file", str(path))
    assert (code, out.strip()) == (0, encode_secret(bytes(range(32))))
    missing = tmp_path / "missing"
    code, _, err = run(capsys, "secret", "--secret-file", str(missing))
    assert code == 1 and "no secret file" in err  # an explicit file is never created


def test_malformed_file(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_text("not a secret\n")
    path.chmod(0o600)
    with pytest.raises(SecretError, match="bad:1"):
        load_secrets(secret_file=path)
    path.write_text("# only a comment\n")
    with pytest.raises(SecretError, match="holds no secret"):
        load_secrets(secret_file=path)


def test_path_and_default_location(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "secret", "--path")
    assert (code, out.strip()) == (0, str(secret_path(home)))
    assert default_secret_path({"HOME": "/h"}) == Path.home() / ".config/p2pcluster/secret"


def test_run_of_a_missing_job_file_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "run", "no-such-job.py")
    assert code == 1 and out == "" and "no job file at no-such-job.py" in err


def test_help_lists_the_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "p2pcluster", "--help"],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    for command in ("join", "run", "members", "leave", "secret"):
        assert command in result.stdout


def test_a_missing_secret_file_names_the_command_that_creates_it(tmp_path: Path) -> None:
    from p2pcluster._secret import read_secret_file

    path = tmp_path / "my secret"
    with pytest.raises(SecretError) as info:
        read_secret_file(path)
    message = str(info.value)
    assert f"`p2pcluster secret --new --secret-file '{path}'`" in message
    assert f"`p2pcluster secret --import --secret-file '{path}'`" in message
