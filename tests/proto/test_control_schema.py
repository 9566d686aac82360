"""The control protocol's schema: round trips, append-only codes, strict refusals, fuzzing."""

from __future__ import annotations

import contextlib
import random

import cbor2
import pytest
from hypothesis import given, settings

from p2pcluster import DecodeError, MessageTooLarge, ProtocolError, UnsupportedVersion
from p2pcluster._proto import control as c
from tests.strategies import FUZZ_EXAMPLES, message_of, mutate, seeded

ALL_TYPES = sorted(c.CODEC.classes.values(), key=lambda cls: cls.TYPE)
V = c.CONTROL_VERSION


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda cls: cls.__name__)
def test_round_trip_every_control_message(cls: type) -> None:
    @settings(max_examples=200)
    @given(message_of(cls))
    def check(msg: c.ControlMessage) -> None:
        assert c.CODEC.decode(c.CODEC.encode(msg)) == msg

    check()


def test_control_type_codes_are_append_only() -> None:
    assert {t.name: int(t) for t in c.ControlType} == {
        "BLOB": 1, "CHUNK": 2, "SUBMIT": 3, "ARGS": 4, "CANCEL": 5, "ACCEPTED": 6,
        "RESULTS": 7, "PROGRESS": 8, "ENDED": 9, "REQUEST": 10, "REPLY": 11, "SHARE": 12,
        "PLACEMENT": 15, "SEGMENT_BLOB": 16,
    }
    assert {t.name: int(t) for t in c.ValueType} == {"INLINE": 1, "BLOB_REF": 2}
    assert {t.name: int(t) for t in c.EndReason} == {"DONE": 0, "CANCELLED": 1, "FAILED": 2}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (cbor2.dumps({"op": "hello"}), DecodeError),  # a map is the greeting, not a message
        (cbor2.dumps([1, c.ControlType.CANCEL, 5]), UnsupportedVersion),  # the old protocol
        (cbor2.dumps([V, c.ControlType.CANCEL, -1]), DecodeError),
        (cbor2.dumps([V, c.ControlType.CHUNK, 1, b"x" * (c.CHUNK + 1)]), MessageTooLarge),
        (cbor2.dumps([V, c.ControlType.ARGS, 1, 0, [[1, b"x" * (c.INLINE + 1)]]]),
         MessageTooLarge),  # an inline value over INLINE must be a blob
        (cbor2.dumps([V, c.ControlType.ARGS, 1, 0, [[3, b""]]]), ProtocolError),  # no such form
        (cbor2.dumps([V, c.ControlType.SEGMENT_BLOB, 1, 2**20, 4097]), DecodeError),  # offset
    ],
)
def test_strict_decoding_refuses(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        c.CODEC.decode(data)


@settings(max_examples=FUZZ_EXAMPLES // 4)
@given(seeded)
def test_fuzz_mutated_control_messages_raise_only_protocol_errors(rng: random.Random) -> None:
    msg = c.Results(rng.randrange(2**32), (c.ResultItem(rng.randrange(100), 0,
                                                        c.Inline(rng.randbytes(20)), "p"),))
    data = mutate(c.CODEC.encode(msg), rng)
    with contextlib.suppress(ProtocolError):
        c.CODEC.decode(data)


def test_greetings_say_who_and_how_much() -> None:
    hello = c.hello("run job.py (pid 7)", 7, 1024)
    assert hello == {"op": "hello", "version": V, "client": "run job.py (pid 7)", "pid": 7,
                     "max_value_size": 1024, "segments": False}
    assert c.hello("run job.py (pid 7)", 7, 1024, segments=True)["segments"] is True
    welcome = c.welcome(peer="lab1", node="ab", cluster="default", software="0.1.0",
                        max_value_size=2048)
    assert welcome["ok"] is True and welcome["version"] == V
    assert welcome["max_value_size"] == 2048
    assert welcome["segments"] is False  # only a daemon that says so takes memfds
    assert c.welcome(peer="lab1", node="ab", cluster="default", software="0.1.0",
                     max_value_size=2048, segments=True)["segments"] is True
