"""The progress line of `p2pcluster run`: done/total, rate, ETA, per-peer counts."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcluster._run import (
    BAR_WIDTH,
    MAX_PEERS_SHOWN,
    ProgressBar,
    format_result,
    render_progress,
    terminal_columns,
)

PEERS = {f"node-{i}": 1000 + i for i in range(8)}


def test_the_progress_line_shows_counts_rate_eta_and_peers() -> None:
    line = render_progress(250, 1000, 2.0, {"lab1": 150, "lab2": 100}, columns=80)
    assert line.startswith("[" + "#" * 6 + "." * 18 + "] 250/1000 tasks")
    assert "125/s" in line
    assert "ETA 6s" in line
    assert line.endswith("lab1:150 lab2:100")


def test_nothing_done_yet_has_no_eta() -> None:
    assert "ETA ?" in render_progress(0, 10, 0.5, {})


def bar_width(line: str) -> int:
    return line.index("]") - 1 if line.startswith("[") else 0


@pytest.mark.parametrize("columns", [20, 40, 80, 200])
def test_the_line_never_exceeds_the_width(columns: int) -> None:
    for done, total in ((0, 10), (250, 1000), (999_999, 1_000_000), (10, 10)):
        line = render_progress(done, total, 3.0, PEERS, columns=columns)
        assert len(line) <= columns, (columns, line)
        assert f"{done}/{total}" in line


def test_peers_go_first_then_the_bar_narrows_then_it_goes() -> None:
    wide = render_progress(250, 1000, 2.0, PEERS, columns=200)
    assert bar_width(wide) == BAR_WIDTH
    assert wide.count("node-") == MAX_PEERS_SHOWN
    some = render_progress(250, 1000, 2.0, PEERS, columns=80)
    assert bar_width(some) == BAR_WIDTH and 0 < some.count("node-") < MAX_PEERS_SHOWN
    assert some.endswith("  node-7:1007")  # the busiest first
    none = render_progress(250, 1000, 2.0, PEERS, columns=60)
    assert bar_width(none) == BAR_WIDTH and "node-" not in none
    narrow = render_progress(250, 1000, 2.0, PEERS, columns=40)
    assert 0 < bar_width(narrow) < BAR_WIDTH and len(narrow) == 40
    assert narrow.endswith("250/1000 tasks  125/s  ETA 6s")
    tiny = render_progress(250, 1000, 2.0, PEERS, columns=20)
    assert bar_width(tiny) == 0 and tiny.startswith("250/1000 tasks")


@given(st.integers(0, 10**9), st.integers(1, 10**9), st.floats(0, 1e6),
       st.dictionaries(st.text(min_size=1, max_size=40), st.integers(0, 10**9), max_size=10),
       st.integers(1, 400))
def test_no_width_is_exceeded(done: int, total: int, elapsed: float,
                              per_peer: dict[str, int], columns: int) -> None:
    assert len(render_progress(min(done, total), total, elapsed, per_peer, columns)) <= columns


def test_the_bar_fits_the_terminal_it_draws_on(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeCluster:
        def progress(self):  # type: ignore[no-untyped-def]
            from p2pcluster import Progress

            return Progress(1000, 250, PEERS, 2.0)

    monkeypatch.setenv("COLUMNS", "50")
    stream = io.StringIO()
    ProgressBar(FakeCluster(), stream).draw()  # type: ignore[arg-type]
    line = stream.getvalue().removeprefix("\r\x1b[K")
    assert "250/1000 tasks" in line and len(line) <= 49  # one column short: never wraps
    monkeypatch.delenv("COLUMNS")
    assert terminal_columns(io.StringIO()) == 80  # not a terminal


def test_the_bar_draws_on_its_stream_and_clears_the_line() -> None:
    class FakeCluster:
        def progress(self):  # type: ignore[no-untyped-def]
            from p2pcluster import Progress

            return Progress(3, 1, {"a": 1}, 1.0)

    stream = io.StringIO()
    with ProgressBar(FakeCluster(), stream, interval=0.01) as bar:  # type: ignore[arg-type]
        bar.draw()
    text = stream.getvalue()
    assert "1/3 tasks" in text and "a:1" in text
    assert text.endswith("\r\x1b[K")


def test_results_print_as_json_or_repr() -> None:
    assert format_result({"a": [1, 2]}) == '{"a": [1, 2]}'
    assert format_result({1, 2}) == "{1, 2}"
    assert format_result(complex(1, 2)) == "(1+2j)"
