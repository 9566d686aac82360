"""ActivityQuery and ActivityReport on the wire (docs/protocol.md, section 3.9)."""

from __future__ import annotations

import math

import cbor2
import pytest

from p2pcluster._errors import ProtocolError
from p2pcluster._proto import wire
from p2pcluster._proto.activity import (
    ActivityQuery,
    ActivityReport,
    JobReport,
    PeerTasks,
    TaskRecord,
)
from p2pcluster._proto.wiretypes import PROTOCOL_VERSION as V

JOB = bytes(range(16))
RECORD = TaskRecord(7, JOB, b"o" * 16, "square", 3, 1, 1_700_000_000.5, 0.25, 0, "out\n", "")
REPORT = ActivityReport(
    1_700_000_001.0, "3.11.7", 4, 1, 12, 7,
    (JobReport(JOB, "square", "job.py: square", 100, 40, 1, 0, 1_700_000_000.0, None,
               (PeerTasks("a", 30), PeerTasks("b", 10)), (PeerTasks("b", 60),)),),
    (RECORD,))


def test_round_trips_and_layout() -> None:
    for message in (REPORT, ActivityQuery(0, 0.0, 5000, None),
                    ActivityQuery(12, math.inf, 0, JOB)):
        assert wire.decode(wire.encode(message)) == message
    assert cbor2.loads(wire.encode(ActivityQuery(3, 1.5, 10, None))) == [V, 28, 3, 1.5, 10, None]
    raw = cbor2.loads(wire.encode(REPORT))
    assert raw[:8] == [V, 29, 1_700_000_001.0, "3.11.7", 4, 1, 12, 7]
    assert raw[8][0][9] == [["a", 30], ["b", 10]]
    assert raw[9][0] == [7, JOB, b"o" * 16, "square", 3, 1, 1_700_000_000.5, 0.25, 0,
                         "out\n", ""]


def test_limits_are_enforced_on_decode() -> None:
    raw = cbor2.loads(wire.encode(REPORT))
    raw[9][0][5] = 70_000  # a worker slot beyond 65535
    with pytest.raises(ProtocolError):
        wire.decode(cbor2.dumps(raw))
    raw = cbor2.loads(wire.encode(ActivityQuery(0, 0.0, 1, None)))
    raw[2] = -1  # a negative sequence number
    with pytest.raises(ProtocolError):
        wire.decode(cbor2.dumps(raw))
