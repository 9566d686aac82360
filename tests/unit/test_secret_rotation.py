"""Rotation of the cluster secret: `secret --add`, `--promote`, `--revoke`, `--list`,
`--show`, and the three-step rollout, which never leaves two peers without a common key."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2pcluster import SecretError
from p2pcluster._cli import main
from p2pcluster._secret import (
    MAX_SECRETS,
    add_secret,
    decode_secret,
    encode_secret,
    fingerprint,
    promote_secret,
    read_secret_file,
    revoke_secret,
)

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW, OTHER = bytes(range(32)), bytes(range(1, 33)), bytes(range(2, 34))


@pytest.fixture
def path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))  # no daemon to reload
    monkeypatch.delenv("P2PCLUSTER_SECRET", raising=False)
    secret = tmp_path / "config" / "p2pcluster" / "secret"
    add_secret(secret, OLD)
    return secret


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_accepts_a_secret_without_sending_with_it(
        path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(capsys, "secret", "--add", stdin=encode_secret(NEW) + "\n",
                         monkeypatch=monkeypatch)
    assert (code, out) == (0, "")
    assert f"{fingerprint(NEW)} is accepted, not yet sent with" in err
    assert encode_secret(NEW) not in err
    assert read_secret_file(path) == (OLD, NEW)
    assert "no peer runs on this machine" in err  # nothing to reload, and it says so
    code, _, _ = run(capsys, "secret", "--add", stdin=encode_secret(NEW),
                     monkeypatch=monkeypatch)
    assert code == 0 and read_secret_file(path) == (OLD, NEW)  # twice: no duplicate


def test_add_from_the_command_line_warns_that_others_can_see_it(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "secret", "--add", encode_secret(NEW), "--no-reload")
    assert (code, out) == (0, "")
    assert "visible to other users" in err and "no peer runs" not in err
    assert read_secret_file(path) == (OLD, NEW)


def test_a_file_holds_a_bounded_number_of_secrets(path: Path) -> None:
    for i in range(1, MAX_SECRETS):
        add_secret(path, bytes([i]) * 32)
    with pytest.raises(SecretError, match="revoke old ones first"):
        add_secret(path, bytes([99]) * 32)


def test_promote_by_fingerprint_prefix_keeps_the_old_one_accepted(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_secret(path, NEW)
    code, out, err = run(capsys, "secret", "--promote", fingerprint(NEW)[:6])
    assert (code, out) == (0, "")
    assert f"{fingerprint(NEW)} is current; also accepted: {fingerprint(OLD)}" in err
    assert read_secret_file(path) == (NEW, OLD)
    _, current, _ = run(capsys, "secret")
    assert current.strip() == encode_secret(NEW)


def test_promote_refuses_a_secret_that_was_never_added(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "secret", "--promote", fingerprint(NEW))
    assert code == 1 and "holds no secret" in err and fingerprint(OLD) in err
    code, _, err = run(capsys, "secret", "--promote", encode_secret(NEW))
    assert code == 1 and "holds no secret" in err
    code, _, err = run(capsys, "secret", "--promote", "xyz")
    assert code == 1 and "neither a secret" in err
    assert read_secret_file(path) == (OLD,)


def test_an_ambiguous_prefix_is_refused(path: Path) -> None:
    seen: dict[str, bytes] = {}
    for i in itertools.count(1):  # two secrets whose fingerprints share 4 digits (birthday)
        secret = i.to_bytes(32, "big")
        first = seen.setdefault(fingerprint(secret)[:4], secret)
        if first != secret:
            break
    add_secret(path, first)
    add_secret(path, secret)
    with pytest.raises(SecretError, match="matches several secrets"):
        promote_secret(path, fingerprint(secret)[:4])
    assert promote_secret(path, fingerprint(secret))[0] == secret  # all 12 digits: one


def test_revoke_drops_a_secret_but_never_the_current_one(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_secret(path, NEW)
    code, _, err = run(capsys, "secret", "--revoke", fingerprint(OLD))
    assert code == 1 and "is the current secret" in err and "--promote" in err
    assert read_secret_file(path) == (OLD, NEW)
    code, out, err = run(capsys, "secret", "--revoke", fingerprint(NEW))
    assert (code, out) == (0, "")
    assert f"revoked {fingerprint(NEW)}" in err and "no other secret is accepted" in err
    assert read_secret_file(path) == (OLD,)
    with pytest.raises(SecretError, match="holds no secret"):
        revoke_secret(path, fingerprint(NEW))


def test_list_and_show(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_secret(path, NEW)
    code, out, _ = run(capsys, "secret", "--list")
    assert code == 0
    assert encode_secret(OLD) not in out and encode_secret(NEW) not in out
    lines = out.splitlines()
    assert lines[0] == f"# {path}"
    assert lines[1].startswith(f"{fingerprint(OLD)}  current")
    assert lines[2].startswith(f"{fingerprint(NEW)}  accepted")
    code, out, _ = run(capsys, "secret", "--show", fingerprint(NEW)[:5])
    assert (code, out.strip()) == (0, encode_secret(NEW))


def test_changes_are_refused_while_the_environment_holds_the_secret(
        path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("P2PCLUSTER_SECRET", f"{encode_secret(NEW)},{encode_secret(OLD)}")
    for argv in (["--add", encode_secret(OTHER)], ["--promote", fingerprint(OLD)],
                 ["--revoke", fingerprint(OLD)], ["--new"]):
        code, _, err = run(capsys, "secret", *argv)
        assert code == 1 and "P2PCLUSTER_SECRET is set" in err
    code, out, _ = run(capsys, "secret", "--list")
    assert out.splitlines()[1:] == [f"{fingerprint(NEW)}  current (sends and accepts)",
                                    f"{fingerprint(OLD)}  accepted"]


def _connected(a: tuple[bytes, ...], b: tuple[bytes, ...]) -> bool:
    """Can two peers holding ``a`` and ``b`` talk? Each must accept what the other sends
    with, or (with per-peer key choice) they must share a key at all; we ask the strict one."""
    return a[0] in b and b[0] in a


def test_the_three_step_rollout_never_partitions(tmp_path: Path) -> None:
    """Three machines roll the rotation one at a time through every step; at every moment,
    every pair can talk; at the end only the new secret is held anywhere."""
    files = [tmp_path / f"m{i}" / "secret" for i in range(3)]
    for f in files:
        add_secret(f, OLD)
    steps = [lambda f: add_secret(f, NEW), lambda f: promote_secret(f, fingerprint(NEW)),
             lambda f: revoke_secret(f, fingerprint(OLD))]
    for step in steps:
        for f in files:
            step(f)
            held = [read_secret_file(g) for g in files]
            for a, b in itertools.combinations(held, 2):
                assert _connected(a, b), (a, b)
    assert all(read_secret_file(f) == (NEW,) for f in files)


def test_promoting_before_every_machine_added_is_what_breaks(tmp_path: Path) -> None:
    """The check above can fail: skipping step 1 somewhere leaves a pair that cannot talk."""
    a, b = tmp_path / "a" / "secret", tmp_path / "b" / "secret"
    add_secret(a, OLD)
    add_secret(b, OLD)
    add_secret(a, NEW)
    promote_secret(a, fingerprint(NEW))
    assert not _connected(read_secret_file(a), read_secret_file(b))


def test_help_teaches_the_three_step_rollout() -> None:
    result = subprocess.run([sys.executable, "-m", "p2pcluster", "secret", "--help"],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    text = " ".join(result.stdout.split())
    for words in ("1. add:", "2. promote:", "3. revoke:", "--add", "--promote", "--revoke",
                  "--import replaces every secret", "SIGHUP", "docs/security.md"):
        assert words in text, words


def test_new_secret_prints_a_secret_that_add_takes(
        path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(capsys, "secret", "--new")
    new = decode_secret(out, "stdout")
    assert code == 0 and f"--show {fingerprint(new)}" in err
    other = path.parent / "other"
    code, _, _ = run(capsys, "secret", "--secret-file", str(other), "--add", stdin=out,
                     monkeypatch=monkeypatch)
    assert code == 0 and read_secret_file(other) == (new,)  # a new file: it is current
