"""The codec: round trips of every message type, strict refusals, and fuzzing."""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import fields

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcluster import (
    DecodeError,
    MessageTooLarge,
    ProtocolError,
    UnknownMessageType,
    UnsupportedVersion,
)
from p2pcluster._proto import codec, wire
from p2pcluster._proto import messages as m
from tests.strategies import (
    FUZZ_EXAMPLES,
    cbor_values,
    message_of,
    messages,
    mutate,
    mutated,
    random_cbor,
    random_message,
    seeded,
)

V = m.PROTOCOL_VERSION
ALL_TYPES = sorted(m.MESSAGE_CLASSES.values(), key=lambda c: c.TYPE)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_round_trip_every_message_type(cls: type) -> None:
    @settings(max_examples=300)
    @given(message_of(cls))
    def check(msg: m.Message) -> None:
        assert wire.decode(wire.encode(msg)) == msg

    check()


def test_every_message_is_a_frozen_slotted_dataclass_with_a_unique_code() -> None:
    codes = [cls.TYPE for cls in ALL_TYPES]
    assert len(codes) == len(set(codes))
    for cls in ALL_TYPES:
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert hasattr(cls, "__slots__")
        assert isinstance(cls.TYPE, int) and cls.TYPE > 0


def test_type_codes_are_append_only() -> None:
    """Renumbering breaks every deployed peer: these values are frozen forever."""
    assert {t.name: int(t) for t in m.MessageType} == {
        "PING": 1, "ACK": 2, "PING_REQ": 3, "NACK": 4, "PUSH_PULL": 5, "GOSSIP": 6,
        "STEAL_REQUEST": 7, "STEAL_GRANT": 8, "TASKS_MOVED": 9, "RESULTS": 10,
        "CANCEL_JOB": 11, "WORK_AVAILABLE": 12, "FETCH_CODE": 13, "CODE": 14,
        "HOLDING": 15, "FETCH_ARGS": 16, "VALUE_HEADER": 17, "PUSH_RESULT": 18,
        "RESULT_ACK": 19, "FETCH_SHARED": 20, "FETCH_VERSIONS": 25, "VERSIONS": 26,
        "ACTIVITY_QUERY": 28, "ACTIVITY_REPORT": 29,
    }
    assert {t.name: int(t) for t in m.TaskStatus} == {
        "OK": 0, "ERROR": 1, "POISON": 2, "TIMEOUT": 3,
    }
    assert {t.name: int(t) for t in m.UpdateType} == {
        "ALIVE": 1, "SUSPECT": 2, "DEAD": 3, "LEFT": 4,
    }


def test_every_message_carries_the_protocol_version() -> None:
    raw = cbor2.loads(wire.encode(m.Nack(seq=7)))
    assert raw == [m.PROTOCOL_VERSION, m.MessageType.NACK, 7]


def _raw(*items: object) -> bytes:
    return cbor2.dumps(list(items))


PING_FIELDS = [5, b"t" * 16, []]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", DecodeError),
        (b"\xff", DecodeError),
        (cbor2.dumps({"v": 1}), DecodeError),
        (_raw(V), DecodeError),
        (_raw(99, 1, *PING_FIELDS), UnsupportedVersion),
        (_raw(True, 1, *PING_FIELDS), UnsupportedVersion),
        (_raw(V, 250, *PING_FIELDS), UnknownMessageType),
        (_raw(V, 1, 5, b"t" * 16), DecodeError),  # missing field
        (_raw(V, 1, *PING_FIELDS, 0), DecodeError),  # extra field
        (_raw(V, 1, "5", b"t", []), DecodeError),  # mistyped field
        (_raw(V, 1, True, b"t", []), DecodeError),  # a bool is not an int
        (_raw(V, 1, -1, b"t", []), DecodeError),  # below the range
        (_raw(V, 1, 2**64, b"t", []), DecodeError),  # needs a bignum tag: refused
        (_raw(V, 1, 5, b"t" * 33, []), MessageTooLarge),  # node id too long
        (_raw(V, 1, 5, b"t", [[1, b"n", 0, "x" * 256, "h", 1, b""]]), MessageTooLarge),
        (_raw(V, 1, 5, b"t", [[9, b"n", 0]]), UnknownMessageType),  # unknown update type
        (_raw(V, 1, 5, b"t", [[2, b"n", 0, b"b"]] * 257), MessageTooLarge),  # container size
        (_raw(V, 4, 5) + b"\x00", DecodeError),  # trailing bytes
        (b"\x9f" + bytes([V]) + b"\x04\x05\xff", DecodeError),  # indefinite length
        (cbor2.dumps(cbor2.CBORTag(258, [V, 4, 5])), DecodeError),  # a semantic tag
        (cbor2.dumps([V, 4, cbor2.CBORTag(2, b"\x05")]), DecodeError),  # bignum tag
        (cbor2.dumps([V, 4, cbor2.CBORTag(9999, 5)]), DecodeError),  # unknown tag
        (b"\x83" + bytes([V]) + b"\x04\xa2\x01\x01\x01\x02", DecodeError),  # duplicate map keys
        (b"\x83" + bytes([V]) + b"\x04" + b"\x81" * 20 + b"\x05", DecodeError),  # too deep
    ],
)
def test_strict_decoding_refuses(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        wire.decode(data)


def test_size_cap() -> None:
    data = wire.encode(m.Nack(seq=1))
    with pytest.raises(MessageTooLarge):
        wire.decode(data, max_size=len(data) - 1)
    assert wire.decode(data, max_size=len(data)) == m.Nack(seq=1)


def test_limits_are_inclusive() -> None:
    alive = m.Alive(node=b"n" * 32, incarnation=2**64 - 1, name="é" * 127, host="h" * 255,
                    port=65535, meta=b"m" * 512)
    msg = m.Ack(seq=0, updates=(alive,) * m.MAX_UPDATES)
    assert wire.decode(wire.encode(msg)) == msg


@pytest.mark.parametrize("name", ["lab\n1", "lab\r1", "\x1b[31mred", "lab\u20281"])
def test_a_name_or_host_with_a_control_character_is_refused(name: str) -> None:
    # A peer's name and host end up in other peers' logs: a newline there forges a line.
    good = m.Alive(node=b"n", incarnation=1, name="lab1", host="10.0.0.1", port=1, meta=b"")
    for bad in (dataclasses.replace(good, name=name), dataclasses.replace(good, host=name)):
        with pytest.raises(DecodeError, match="has a control character"):
            wire.decode(wire.encode(m.Ack(seq=1, updates=(bad,))))


def _only_protocol_errors(data: bytes) -> None:
    try:
        msg = wire.decode(data)
    except ProtocolError:
        return
    # Whatever decodes must be a well-formed message that re-encodes to the same bytes.
    assert type(msg) in m.MESSAGE_CLASSES.values()
    assert wire.decode(wire.encode(msg)) == msg


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _only_protocol_errors(data)


@settings(max_examples=500)
@given(messages.map(wire.encode).flatmap(mutated))
def test_fuzz_mutated_valid_messages_shrinking(data: bytes) -> None:
    """Hypothesis-native generation: slower, but shrinks a failure to a minimal input."""
    _only_protocol_errors(data)


@settings(max_examples=FUZZ_EXAMPLES)
@given(seeded)
def test_fuzz_mutated_valid_messages(rng: random.Random) -> None:
    _only_protocol_errors(mutate(wire.encode(random_message(rng)), rng))


@settings(max_examples=300)
@given(st.integers(0, 3), st.integers(0, 8), st.lists(cbor_values, max_size=8))
def test_fuzz_structures_shrinking(version: int, code: int, body: list[object]) -> None:
    _only_protocol_errors(cbor2.dumps([version, code, *body]))


@settings(max_examples=FUZZ_EXAMPLES)
@given(seeded)
def test_fuzz_structures(rng: random.Random) -> None:
    """Well-formed CBOR of the wrong shape, around a plausible header."""
    body = [random_cbor(rng) for _ in range(rng.randint(0, 8))]
    head = [rng.choice([V, V, V, 0, 1, V + 1, True, str(V)]),
            rng.choice([*range(0, 9), -1, "p", None])]
    _only_protocol_errors(cbor2.dumps(head + body))


def test_floats_are_exact() -> None:
    # JobSpec.timeout is a float (or null).
    spec = codec.FieldSpec("x", "float")
    decode = codec._compile_decoder(spec, "x")
    assert decode(1.5) == 1.5
    assert math.isinf(decode(float("inf")))
    with pytest.raises(DecodeError):
        decode(1)
    with pytest.raises(DecodeError, match="NaN"):  # NaN != NaN: a message could not equal itself
        decode(float("nan"))


def test_field_specs_cover_every_field() -> None:
    for cls in ALL_TYPES:
        assert [s.name for s in codec.record_specs(cls)] == [f.name for f in fields(cls)]
