"""Task output in the daemon's log: markers, labels, printable lines, long lines."""

from __future__ import annotations

import logging

import pytest
import trio

from p2pcluster._tasklog import log_task_output
from p2pcluster._taskoutput import MARK, MAX_LINE, TaskLabels, printable


class Chunks:
    """A stream that returns the given chunks, then the end."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def receive_some(self, max_bytes: int | None = None, /) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.chunks.pop(0) if self.chunks else b""


def logged(caplog: pytest.LogCaptureFixture, *chunks: bytes) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="p2pcluster.task"):
        trio.run(log_task_output, Chunks(*chunks), "stdout", 7)
    return [r.getMessage() for r in caplog.records]


def test_lines_are_labelled_by_the_last_marker(caplog: pytest.LogCaptureFixture) -> None:
    assert logged(caplog, b"boot\n", MARK + b"job ab12cd34 task 3\nhel", b"lo\nworld\n",
                  MARK + b"job ab12cd34 task 4\n", b"unfinished") == [
        "worker stdout (worker 7): boot",
        "job ab12cd34 task 3 stdout (worker 7): hello",
        "job ab12cd34 task 3 stdout (worker 7): world",
        "job ab12cd34 task 4 stdout (worker 7): unfinished",
    ]


def test_output_that_bypassed_the_marker_stays_with_the_previous_label(
        caplog: pytest.LogCaptureFixture) -> None:
    # A child process wrote "half" without a newline, then the next task began.
    assert logged(caplog, MARK + b"job 1 task 1\nhalf" + MARK + b"job 1 task 2\nnext\n") == [
        "job 1 task 1 stdout (worker 7): half", "job 1 task 2 stdout (worker 7): next"]


def test_control_characters_are_escaped_and_long_lines_cut(
        caplog: pytest.LogCaptureFixture) -> None:
    lines = logged(caplog, b"a\rb\x1b[2J\x00c\n", b"x" * (MAX_LINE * 2 + 10) + b"\n")
    assert lines[0] == r"worker stdout (worker 7): a\rb\x1b[2J\x00c"
    assert [len(line.split(": ", 1)[1]) for line in lines[1:]] == [MAX_LINE, MAX_LINE, 10]


def test_printable_and_labels() -> None:
    assert printable("plain") == "plain"
    assert printable("tab\there\u2028") == r"tab\there\u2028"
    labels = TaskLabels("ab12cd34", [5, 6, 7])
    assert labels.one(1) == TaskLabels("ab12cd34", [6])
