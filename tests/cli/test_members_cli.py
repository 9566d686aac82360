"""`p2pcluster members` on a canned answer from the daemon: what it lists and what it hides."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from p2pcluster import _cli

LIMIT = _cli.DEPARTED_HIDDEN_AFTER


def row(name: str, status: str, age: float) -> dict[str, Any]:
    return {"name": name, "id": name.encode().hex(), "host": "10.77.0.1", "port": 7946,
            "status": status, "incarnation": 0, "workers": 2, "queue": 0, "tags": [],
            "version": "0.1.0", "age": age}


ROWS = [row("lab1", "alive", 5.0), row("lab2", "suspect", LIMIT * 9),
        row("gone-soon", "left", LIMIT), row("crashed-now", "dead", 30.0),
        row("left-long-ago", "left", LIMIT + 1), row("died-long-ago", "dead", LIMIT * 6)]
HIDDEN = {"left-long-ago", "died-long-ago"}


@pytest.fixture(autouse=True)
def answer(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the daemon answers; a test may change it."""
    canned = {"ok": True, "cluster": "default", "self": ROWS[0]["id"], "members": list(ROWS)}

    def ask(args: argparse.Namespace, op: str, **body: Any) -> dict[str, Any]:
        assert op == "members"
        return canned

    monkeypatch.setattr(_cli, "_ask", ask)
    return canned


def members(capsys: pytest.CaptureFixture[str], *options: str) -> str:
    assert _cli.main(["members", *options]) == 0
    return capsys.readouterr().out


def listed(table: str) -> set[str]:
    return {line.split()[0] for line in table.splitlines()[1:] if line and
            not line.startswith(("cluster ", "("))}


def test_peers_departed_long_ago_are_hidden_and_counted(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    table = members(capsys)
    assert listed(table) == {r["name"] for r in ROWS} - HIDDEN
    lines = table.splitlines()
    assert lines[-2] == "cluster 'default': 1 alive of 6 known (* this peer)"
    assert lines[-1] == f"({len(HIDDEN)} departed peers hidden; --all shows them)"


def test_all_lists_everyone(capsys: pytest.CaptureFixture[str]) -> None:
    table = members(capsys, "--all")
    assert listed(table) == {r["name"] for r in ROWS}
    assert "hidden" not in table


def test_json_hides_the_same_unless_all(capsys: pytest.CaptureFixture[str]) -> None:
    shown = json.loads(members(capsys, "--json"))
    assert {r["name"] for r in shown["members"]} == {r["name"] for r in ROWS} - HIDDEN
    assert shown["hidden"] == len(HIDDEN)
    everyone = json.loads(members(capsys, "--json", "--all"))
    assert {r["name"] for r in everyone["members"]} == {r["name"] for r in ROWS}
    assert everyone["hidden"] == 0


def test_one_hidden_peer_is_singular(capsys: pytest.CaptureFixture[str],
                                     answer: dict[str, Any]) -> None:
    answer["members"] = ROWS[:5]
    assert members(capsys).splitlines()[-1] == "(1 departed peer hidden; --all shows them)"
    answer["members"] = ROWS[:4]
    assert members(capsys).splitlines()[-1].startswith("cluster 'default': ")  # none hidden


def test_help_explains_all(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main(["members", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--all also list the peers that left or died more than 10 minutes ago" in text
    assert "Peers that left or died more than 10 minutes ago are hidden" in text
