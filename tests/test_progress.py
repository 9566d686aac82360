"""The progress line of `p2pcluster run`: done/total, rate, ETA, per-peer counts."""

from __future__ import annotations

import io

from p2pcluster._run import ProgressBar, format_result, render_progress


def test_the_progress_line_shows_counts_rate_eta_and_peers() -> None:
    line = render_progress(250, 1000, 2.0, {"lab1": 150, "lab2": 100}, width=20)
    assert line.startswith("[#####...............] 250/1000 tasks")
    assert "125/s" in line
    assert "ETA 6s" in line
    assert line.endswith("lab1:150 lab2:100")


def test_nothing_done_yet_has_no_eta() -> None:
    assert "ETA ?" in render_progress(0, 10, 0.5, {})


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
