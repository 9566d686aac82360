"""The `members --versions` table: only what differs, and what agrees summed up."""

from __future__ import annotations

import pytest

from p2pcluster._tables import print_versions, versions_table


def peer(name: str, python: str, **packages: str) -> dict[str, object]:
    return {"name": name, "python": python, "implementation": "CPython", "system": "Linux",
            "machine": "x86_64", "packages": {"cbor2": "5.6.5", **packages}}


def test_only_the_differences_are_rows() -> None:
    rows, same = versions_table([peer("lab1", "3.11.7", numpy=""),
                                 peer("lab2", "3.11.7", numpy="1.26.4"),
                                 peer("lab3", "3.12.1", numpy="2.5.5")])
    assert rows == [["", "lab1", "lab2", "lab3"],
                    ["python", "CPython 3.11.7", "CPython 3.11.7", "CPython 3.12.1"],
                    ["numpy", "-", "1.26.4", "2.5.5"]]
    assert same == ["system Linux", "machine x86_64", "cbor2 5.6.5"]


def test_a_peer_that_did_not_answer_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    answer = {"cluster": "default", "peers": [peer("lab1", "3.11.7"), peer("lab2", "3.11.7"),
                                              {"name": "lab3", "error": "timed out"}]}
    assert print_versions(answer) == 0
    out = capsys.readouterr().out
    assert "no differences between the peers that answered" in out
    assert "lab3: no answer (timed out)" in out
    assert "2 of 3 live peers answered" in out
