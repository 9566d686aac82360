"""A stream's receive buffer (:class:`Inbox`) and the session reading into it, sans-IO."""

from __future__ import annotations

import random

import pytest

from p2pcluster import MessageTooLarge
from p2pcluster._proto.handshake import REUSED_FRAME, Session
from p2pcluster._proto.inbox import INITIAL, KEEP, Inbox
from tests.proto.test_handshake import connect as connect_small


def connect() -> tuple[Session, Session]:
    """Two sessions whose frames may be larger than the data plane's reused ones."""
    c, s = connect_small()
    c.max_frame = s.max_frame = 4 * REUSED_FRAME
    return c, s


def _read(inbox: Inbox, data: bytes, most: int, whole: int = 0) -> int:
    """Read up to ``most`` of ``data`` into the inbox, as a socket's recv_into would."""
    with inbox.space(most, whole) as room:
        count = min(len(room), len(data))
        room[:count] = data[:count]
    inbox.commit(count)
    return count


def test_bytes_read_in_are_viewed_and_consumed_in_order() -> None:
    inbox = Inbox()
    assert _read(inbox, b"hello world", 5) == 5
    assert _read(inbox, b" world", 100) == 6
    assert len(inbox) == 11
    with inbox.view(5) as head:
        assert bytes(head) == b"hello" and head.readonly
    inbox.consume(6)
    with inbox.view(5) as rest:
        assert bytes(rest) == b"world"
    inbox.consume(5)
    assert len(inbox) == 0
    with pytest.raises(ValueError):
        inbox.consume(1)
    with pytest.raises(ValueError):
        inbox.commit(INITIAL + 1)


def test_room_for_a_whole_frame_keeps_it_contiguous_and_the_buffer_is_reused() -> None:
    inbox = Inbox()
    frame = random.Random(1).randbytes(3 * INITIAL)
    got = 0
    while got < len(frame):  # reads of at most 1000 bytes, room for the whole frame
        got += _read(inbox, frame[got:], 1000, whole=len(frame))
    assert inbox.capacity == len(frame)  # grown once, to the frame
    with inbox.view(len(frame)) as view:
        assert bytes(view) == frame
    inbox.consume(len(frame))
    assert inbox.capacity == len(frame)  # kept: the next frame reuses it


def test_held_bytes_move_to_the_front_when_the_end_is_reached() -> None:
    inbox = Inbox()
    _read(inbox, b"a" * (INITIAL - 10), INITIAL)
    inbox.consume(INITIAL - 20)  # 10 bytes held, near the end
    assert _read(inbox, b"b" * 100, 100) == 100  # room made by moving them, not growing
    assert inbox.capacity == INITIAL
    with inbox.view(110) as view:
        assert bytes(view) == b"a" * 10 + b"b" * 100


def test_a_buffer_grown_past_keep_shrinks_once_empty() -> None:
    inbox = Inbox()
    _read(inbox, bytes(KEEP + 1), KEEP + 1, whole=KEEP + 1)
    assert inbox.capacity > KEEP
    inbox.consume(KEEP + 1)
    assert inbox.capacity == INITIAL


def test_a_session_reads_frames_straight_into_its_buffer_in_any_pieces() -> None:
    c, s = connect()
    payloads = [b"ping", b"", random.Random(2).randbytes(300_000), b"x" * 70_000]
    stream = b"".join(bytes(c.seal_reusing(p)) for p in payloads)
    rng, got, sent = random.Random(3), [], 0
    while sent < len(stream):
        with s.receive_space(rng.randint(1, 200_000)) as room:
            count = min(len(room), len(stream) - sent)
            room[:count] = stream[sent:sent + count]
        s.received(count)
        sent += count
        while (payload := s.next_payload()) is not None:
            got.append(payload)
    assert got == payloads and s.buffered == 0


def test_seal_reusing_reuses_one_buffer_up_to_its_limit() -> None:
    c, s = connect()
    first = c.seal_reusing(b"a" * 1000)
    frame = bytes(first)
    second = c.seal_reusing(b"b" * 1000)
    assert second.obj is first.obj  # the same buffer: the first view is stale now
    big = c.seal_reusing(b"c" * REUSED_FRAME)  # over the limit: a buffer of its own
    assert big.obj is not first.obj
    s.feed(frame + bytes(second) + bytes(big))
    assert [s.next_payload() for _ in range(3)] == [b"a" * 1000, b"b" * 1000,
                                                    b"c" * REUSED_FRAME]


def test_a_length_out_of_bounds_is_refused_before_room_is_made_for_it() -> None:
    _, s = connect()
    s.feed((2**32 - 1).to_bytes(4, "big"))
    with pytest.raises(MessageTooLarge):
        s.receive_space(65536)
