"""The dashboard's pure parts: the task ring, captured output, usage in the metadata, the
JSON views, the task stream's bars, /proc readings, and the terminal tables."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from p2pcluster import Config, P2PClusterError
from p2pcluster._capture import OUTPUT_LIMIT, BoundedText, captured
from p2pcluster._dashapp import is_loopback_host
from p2pcluster._proto.activity import JobReport, JobState, PeerTasks, TaskRecord
from p2pcluster._proto.meta import MAX_META, NodeMeta, Usage
from p2pcluster._proto.roster import Member
from p2pcluster._proto.wiretypes import MemberStatus
from p2pcluster._proto.workmessages import JobSpec
from p2pcluster._taskring import TaskLog, TaskRun
from p2pcluster._usage import CpuMeter, load_average, resident_kib
from p2pcluster._viewcli import format_jobs, format_members
from p2pcluster._views import job_json, member_json, merge_bar, new_bar

JOB = b"j" * 16
SPEC = JobSpec(JOB, b"o" * 16, "mod", "fn", None, (), None)


def record(seq: int, started: float, seconds: float, *, slot: int = 0, status: int = 0,
           job: bytes = JOB) -> TaskRecord:
    return TaskRecord(seq, job, b"o" * 16, "fn", seq, slot, started, seconds, status)


# --- the ring of tasks ----------------------------------------------------------------------


def test_the_ring_keeps_the_last_records_and_answers_what_is_new() -> None:
    log = TaskLog(capacity=3)
    assert log.last == 0 and log.after(0, 0.0, 10) == []
    for i in range(5):
        log.record(SPEC, i, 0, TaskRun(100.0 + i, 0.5, i % 2))
    assert log.last == 5
    assert [r.seq for r in log.after(0, 0.0, 10)] == [3, 4, 5]
    assert [r.seq for r in log.after(4, 0.0, 10)] == [5]
    assert [r.seq for r in log.after(0, 0.0, 2)] == [4, 5]  # the newest, oldest first
    assert [r.seq for r in log.after(0, 103.4, 10)] == [4, 5]  # ended at 103.5 and later
    assert [(r.task, r.slot, r.started) for r in log.of_job(JOB)] == [
        (2, 0, 102.0), (3, 1, 103.0), (4, 0, 104.0)]
    assert log.statistics().recorded == 5 and log.statistics().kept == 3


def test_the_ring_bounds_output_and_only_a_jobs_detail_carries_it() -> None:
    log = TaskLog(capacity=100, output_budget=25)
    log.record(SPEC, 0, 0, TaskRun(1.0, 0.1, 0, "a" * 10, "b" * 5))
    log.record(SPEC, 1, 1, TaskRun(2.0, 0.1, 0, "c" * 10, ""))
    assert log.statistics().output_chars == 25
    assert all(r.stdout == "" for r in log.after(0, 0.0, 10))  # a survey carries no output
    assert [(r.stdout, r.stderr) for r in log.of_job(JOB)] == [
        ("a" * 10, "b" * 5), ("c" * 10, "")]
    log.record(SPEC, 2, 0, TaskRun(3.0, 0.1, 0, "d" * 10))  # over budget: the oldest goes
    assert [r.stdout for r in log.of_job(JOB)] == ["", "c" * 10, "d" * 10]
    assert log.statistics().output_chars == 20
    assert log.of_job(b"x" * 16) == []
    empty = TaskLog(capacity=0)
    empty.record(SPEC, 0, 0, TaskRun(1.0, 0.1, 0, "out"))
    assert empty.after(0, 0.0, 10) == [] and empty.statistics().output_chars == 0


# --- what a task prints -----------------------------------------------------------------------


def test_bounded_text_keeps_head_and_tail() -> None:
    text = BoundedText(limit=10)
    assert text.write("hello") == 5
    assert text.getvalue() == "hello"
    for _ in range(100):
        text.write("0123456789")
    value = text.getvalue()
    assert value.startswith("hello") and value.endswith("56789")
    assert "[... 995 characters cut ...]" in value
    with pytest.raises(TypeError):
        text.write(b"bytes")  # type: ignore[arg-type]


def test_captured_swaps_and_restores_the_streams() -> None:
    saved = sys.stdout, sys.stderr
    with captured() as output:
        print("out")
        print("err", file=sys.stderr)
        sys.stdout = io.StringIO()  # a task that replaces the stream
    assert (sys.stdout, sys.stderr) == saved
    assert output.texts() == ("out\n", "err\n")
    with captured() as output:
        print("x" * (OUTPUT_LIMIT * 3))
    assert len(output.texts()[0]) < OUTPUT_LIMIT + 100


# --- usage in the gossiped metadata ---------------------------------------------------------


def test_usage_travels_in_the_metadata_under_c_m_l() -> None:
    meta = NodeMeta(4, 2, ("gpu",), "0.1.0", 1_700_000_000, "CPython 3.11.7", "Linux",
                    "x86_64", usage=Usage(37.4, 123_456, 1.234))
    decoded = NodeMeta.decode(meta.encode())
    assert decoded.usage == Usage(37.0, 123_456, 1.23)
    assert (decoded.workers, decoded.queue, decoded.tags) == (4, 2, ("gpu",))
    assert decoded.python_version == "3.11.7" and decoded.machine == "x86_64"
    assert NodeMeta.decode(NodeMeta(4).encode()).usage is None
    import cbor2

    bad = cbor2.dumps({"w": 1, "q": 0, "t": [], "v": "", "c": -1, "m": 5, "l": "x"})
    assert NodeMeta.decode(bad).usage is None and NodeMeta.decode(bad).workers == 1


def test_usage_is_dropped_rather_than_exceeding_the_limit() -> None:
    tags = (*(f"t{i:03d}" * 10 for i in range(11)), "x" * 20)  # fills most of the 512 bytes
    plain = NodeMeta(2, 0, tags, "0.1.0").encode()
    assert MAX_META - 20 < len(plain) <= MAX_META
    crowded = NodeMeta(2, 0, tags, "0.1.0", usage=Usage(50.0, 10**9, 99.0)).encode()
    assert crowded == plain and NodeMeta.decode(crowded).tags == tags


def test_usage_is_news_only_when_it_moved() -> None:
    base = Usage(20.0, 100_000, 1.0)
    assert base.differs(None)
    assert not base.differs(Usage(22.0, 102_000, 1.05))
    assert Usage(26.0, 100_000, 1.0).differs(base)
    assert Usage(20.0, 106_000, 1.0).differs(base)
    assert Usage(20.0, 100_000, 1.2).differs(base)


def test_proc_readings(tmp_path: Path) -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc on this system")
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    meter = CpuMeter(stat)
    stat.write_text("cpu  150 0 150 900 0 0 0 0 0 0\n")  # 100 busy of 200 jiffies
    assert meter.percent() == pytest.approx(50.0)
    assert meter.percent() == 0.0  # nothing elapsed
    assert resident_kib([os.getpid()]) > 1000
    assert resident_kib([2**22 + 12345]) == 0  # a process that is gone is skipped
    assert load_average() >= 0


# --- the views --------------------------------------------------------------------------------


def member(name: str, status: MemberStatus = MemberStatus.ALIVE, meta: bytes = b"") -> Member:
    return Member(name.encode().ljust(16, b"."), name, "10.0.0.1", 7946, 1, status, meta, 0.0)


def test_job_json_rate_eta_and_an_owner_gone() -> None:
    report = JobReport(JOB, "fn", "job.py: fn", 100, 40, 2, JobState.RUNNING, 1000.0, None,
                       (PeerTasks("a", 30), PeerTasks("b", 10)), (PeerTasks("b", 60),))
    row = job_json(report, member("a"), 1010.0, stale=False)
    assert (row["state"], row["rate"], row["eta"], row["elapsed"]) == ("running", 4.0, 15.0, 10)
    assert row["done_by"] == {"a": 30, "b": 10} and row["held_by"] == {"b": 60}
    gone = job_json(report, member("a", MemberStatus.DEAD), 1010.0, stale=True)
    assert gone["state"] == "owner gone" and gone["eta"] is None and gone["stale"]
    done = JobReport(JOB, "fn", "fn", 10, 10, 0, JobState.DONE, 1000.0, 1005.0, (), ())
    assert job_json(done, member("a"), 2000.0, stale=False)["rate"] == 2.0


def test_member_json_without_measurements_or_answers() -> None:
    row = member_json(member("a", meta=NodeMeta(2).encode()), 5.0, b"x", None)
    assert row["cpu"] is None and row["rss"] is None and row["answered"] is None
    assert row["self"] is False and row["workers"] == 2
    meta = NodeMeta(2, usage=Usage(10.0, 2048, 0.5)).encode()
    assert member_json(member("a", meta=meta), 5.0, b"x", None)["rss"] == 2048 * 1024


def test_bars_merge_tasks_run_back_to_back() -> None:
    first = new_bar(record(1, 10.0, 1.0), "a")
    assert merge_bar(first, record(2, 11.02, 1.0), "a") is first
    assert (first.end, first.tasks, first.busy) == (12.02, 2, 2.0)
    assert merge_bar(first, record(3, 13.0, 1.0), "a") is None  # a gap
    assert merge_bar(first, record(4, 12.03, 1.0, job=b"k" * 16), "a") is None  # another job
    assert merge_bar(None, record(5, 1.0, 1.0), "a") is None
    failed = new_bar(record(6, 1.0, 1.0, status=1), "a")
    assert failed.errors == 1 and failed.json()["errors"] == 1


def test_terminal_tables() -> None:
    report = JobReport(JOB, "fn", "job.py: fn", 100, 40, 0, JobState.RUNNING, 1000.0, None,
                       (PeerTasks("a", 40),), (PeerTasks("b", 60),))
    lines = format_jobs([job_json(report, member("a"), 1010.0, stale=False)], 1010.0)
    assert lines[0].split()[:4] == ["JOB", "OWNER", "FUNCTION", "STATE"]
    assert "40/100 40%" in lines[1] and "4.0/s" in lines[1]
    assert lines[2].split() == ["ran", "by", "a:", "40"]
    assert lines[3].split() == ["queued", "at", "b:", "60"]
    assert format_jobs([], 0.0) == []
    row = member_json(member("a", meta=NodeMeta(2, usage=Usage(10.0, 2048, 0.5)).encode()),
                      5.0, member("a").id, None)
    table = format_members([row])
    assert table[1].split()[:3] == ["a", "*", "alive"] and "2MiB" in table[1]


def test_loopback_and_the_dashboard_setting() -> None:
    assert all(map(is_loopback_host, ["127.0.0.1", "127.1.2.3", "localhost", "[::1]", "::1"]))
    assert not any(map(is_loopback_host, ["10.0.0.1", "0.0.0.0", "evil.example", "::"]))
    assert Config(dashboard="").dashboard == ""
    assert Config(dashboard="[::1]:0").dashboard == "[::1]:0"
    for bad in ("8797", "127.0.0.1", "127.0.0.1:70000", ":8797", "host:port"):
        with pytest.raises(P2PClusterError, match="dashboard"):
            Config(dashboard=bad)
