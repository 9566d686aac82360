"""Traffic that fails authentication is counted in bounded maps and summed up in one line per
interval, however many sources send it."""

from __future__ import annotations

import logging
import os

import pytest

from p2pcluster import Config
from p2pcluster._proto.envelope import Keyring
from p2pcluster._rejections import (
    MAX_SOURCES,
    RejectionReport,
    Rejections,
    RejectionTally,
)
from p2pcluster._secure import SecureWire
from p2pcluster.testing import VirtualNetwork

SOURCES = 5000


def spoofed(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def test_a_tally_keeps_at_most_max_sources_and_counts_the_rest() -> None:
    tally = RejectionTally()
    firsts = sum(tally.note(spoofed(i)) for i in range(SOURCES))
    tally[spoofed(0)] += 4  # Counter-style, as the wire counts failed handshakes
    tally["10.9.9.9"] += 1  # no room: counted with the others
    taken = tally.take()
    assert firsts == MAX_SOURCES
    assert len(taken.hosts) == MAX_SOURCES
    assert taken.hosts[spoofed(0)] == 5
    assert taken.overflow == SOURCES - MAX_SOURCES + 1
    assert taken.total == SOURCES + 5
    assert not tally.take()  # empty again


def test_a_report_gives_one_line_per_interval_whatever_the_sources() -> None:
    report = RejectionReport(quiet=60.0)
    lines: list[str] = []
    for second in range(0, 300, 5):  # the daemon's loop: a tally every 5 s
        tally = RejectionTally()
        for i in range(SOURCES // 60):
            tally.note(spoofed(second * 1000 + i))
        report.add(tally.take())
        line = report.due(float(second))
        if line is not None:
            lines.append(line)
    assert len(lines) == 5  # at 0, 60, 120, 180 and 240 s
    assert all("\n" not in line for line in lines)
    assert lines[0].startswith("rejected 83 packet(s)") and "from 64+ source(s)" in lines[0]
    assert "in the last 60 s" in lines[1] and "rejected 996 packet(s)" in lines[1]


def test_a_report_names_the_busiest_sources() -> None:
    report = RejectionReport(quiet=60.0)
    report.add(Rejections({"10.0.0.2": 7, "10.0.0.3": 1, "10.0.0.4": 2, "10.0.0.5": 1}))
    line = report.due(0.0)
    assert line == ("rejected 11 packet(s) or connection(s) that failed authentication, from "
                    "4 source(s) (10.0.0.2 x7, 10.0.0.4 x2, 10.0.0.3 x1, 1 from others): a "
                    "peer with another cluster secret or cluster name, or someone probing the "
                    "port?")
    assert report.due(1.0) is None  # nothing new
    report.add(Rejections({"10.0.0.2": 1}))
    assert report.due(30.0) is None  # too soon: kept for the next line
    assert "rejected 1 packet(s)" in (report.due(61.0) or "")


def test_the_wire_tally_and_its_debug_lines_are_bounded(
        caplog: pytest.LogCaptureFixture) -> None:
    """One junk datagram from each of 5,000 sources: 64 debug lines, one bounded tally."""
    caplog.set_level(logging.DEBUG, "p2pcluster.wire")
    keyring = Keyring.from_secrets([os.urandom(32)], "default")
    wire = SecureWire(VirtualNetwork().host("10.0.0.1"), keyring, Config.local(),
                      node_id=os.urandom(16))
    for i in range(SOURCES):
        assert wire.open(os.urandom(60), (spoofed(i), 7946)) is None
    assert wire.statistics().dropped_auth == SOURCES
    assert len([r for r in caplog.records if "dropped datagram" in r.message]) == MAX_SOURCES
    taken = wire.take_rejected()
    assert len(taken.hosts) == MAX_SOURCES and taken.total == SOURCES
