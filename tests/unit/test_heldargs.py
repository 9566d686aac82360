"""The owner holds large array arguments as the caller gave them (views of its buffers, not
joined, not copied) with each buffer's sum from submit, and hands the stealing machine
only their size."""

from __future__ import annotations

import itertools
import threading

import pytest

from p2pcluster import _heldargs
from p2pcluster._heldargs import (
    ArgumentChanged,
    HeldArgs,
    _summer_class,
    checked,
    new_sum,
    taken_now,
    verify,
)
from p2pcluster._jobs import encode_args, encode_map_args
from p2pcluster._packed import ALIGN, Packed, aligned_buffer
from p2pcluster._proto.messages import TaskItem
from p2pcluster._values import decode_call

np = pytest.importorskip("numpy")


def _data(payload: Packed) -> object:
    return np.frombuffer(payload.buffers[0], np.uint8)


def test_an_argument_array_is_held_as_given_with_its_sum_from_submit() -> None:
    arr = np.arange(1 << 17, dtype=np.float64)  # 1 MiB
    payload = encode_args((arr,), {})
    assert isinstance(payload, Packed)
    held = HeldArgs()
    (item,) = held.admit(b"j" * 16, [payload], inline_limit=1024)
    assert isinstance(item, TaskItem)
    kept = held.get(b"j" * 16, 0)
    assert kept is not None and np.shares_memory(_data(kept), arr)  # no copy
    assert len(kept.sums) == 1
    verify(kept)
    arr[::-1].sort()  # the same values in another order: a change all the same
    with pytest.raises(ArgumentChanged) as raised:
        verify(kept)
    assert raised.value.index == 0
    verify(kept, [memoryview(np.arange(1 << 17, dtype=np.float64)).cast("B")])  # a copy


def test_the_sum_is_xxh3_where_xxhash_is_installed_and_crc32_where_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import zlib

    data = memoryview(bytes(range(256)) * 1000)
    xxhash = pytest.importorskip("xxhash")
    summer = new_sum()
    summer.update(data[:1000])
    summer.update(data[1000:])
    assert summer.intdigest() == xxhash.xxh3_64_intdigest(data)  # chunks or whole: one sum
    monkeypatch.setitem(sys.modules, "xxhash", None)  # not installed
    _summer_class.cache_clear()  # looked up once per process: look again
    try:
        summer = new_sum()
        summer.update(data[:1000])
        summer.update(data[1000:])
        assert summer.intdigest() == zlib.crc32(data)
    finally:
        monkeypatch.undo()
        _summer_class.cache_clear()


@pytest.mark.parametrize("parallel", [False, True], ids=["one-thread", "threads"])
def test_a_submit_takes_every_large_argument_s_sums_in_order_on_one_thread_or_several(
    parallel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From PARALLEL_SUMS bytes of them on, a submit's sums are taken on several threads:
    the same sums, each on its own argument, small ones joined as before."""
    monkeypatch.setattr(_heldargs, "PARALLEL_SUMS", 1 if parallel else 1 << 62)
    monkeypatch.setattr(_heldargs, "_cores", lambda: 2)
    threads: set[str] = set()
    real = checked

    def spying(value: Packed) -> Packed:
        threads.add(threading.current_thread().name)
        return real(value)

    monkeypatch.setattr(_heldargs, "checked", spying)
    arrays = [np.full(1 << 15, i, dtype=np.float64) for i in range(9)]
    payloads = encode_map_args([[*arrays[:4], np.zeros(4), *arrays[4:]]])
    taken = taken_now(payloads, inline_limit=1024)
    assert isinstance(taken[4], bytes)  # small: joined
    large = [t for t in taken if isinstance(t, Packed)]
    assert [t.sums for t in large] == [real(p).sums for p in payloads if  # type: ignore[arg-type]
                                       isinstance(p, Packed) and len(p) > 1024]
    assert [np.frombuffer(t.buffers[0], np.float64)[0] for t in large] == list(range(9))
    assert len(set(t.sums[0] for t in large)) == 9
    assert all(name.startswith("p2pcluster-sums") for name in threads) == parallel
    arrays[3][7] = -1.0  # changed after submit: the check still sees it
    with pytest.raises(ArgumentChanged):
        verify(large[3])


def test_a_daemon_s_private_copy_is_held_without_sums() -> None:
    payload = encode_args((np.ones(1 << 16),), {})
    held = HeldArgs()
    held.admit(b"j", [payload], inline_limit=1024, check=False)
    kept = held.get(b"j", 0)
    assert kept is payload and kept.sums == ()
    verify(kept)  # nothing to check


@pytest.mark.parametrize("view", [lambda a: a[::2], lambda a: a.reshape(512, 256).T[1:]])
def test_a_non_contiguous_view_is_copied_once_at_submit(view: object) -> None:
    arr = np.arange(1 << 17, dtype=np.float64)
    sliced = view(arr)  # type: ignore[operator]
    expected = sliced.copy()
    payload = encode_args((sliced,), {})
    assert isinstance(payload, Packed)
    assert not np.shares_memory(_data(payload), arr)
    arr[:] = 0.0  # the copy was taken at submit: the task sees the values as they were
    (got,), _ = decode_call(payload)
    assert np.array_equal(got, expected)


def test_held_arguments_go_to_the_machine_as_their_size_and_leave_with_their_task() -> None:
    big = np.ones(1 << 16)  # 512 KiB
    small = np.ones(1 << 14)  # 128 KiB: packed, but it fits a grant
    payloads = encode_map_args([[big, small, 3]])
    assert [type(p) for p in payloads] == [Packed, Packed, bytes]
    held = HeldArgs()
    tasks = held.admit(b"j", payloads, 256 * 1024)
    assert tasks[0] == TaskItem(0, 0, b"", len(payloads[0]))
    assert tasks[1] == (1, payloads[1].flat()) and tasks[2] == (2, payloads[2])
    kept = held.get(b"j", 0)
    assert kept is not None and kept.flat() == payloads[0].flat()
    assert held.get(b"j", 1) is None and len(held) == 1
    held.release(b"j", [0])
    assert held.get(b"j", 0) is None and len(held) == 0
    held.admit(b"k", payloads, 256 * 1024)
    held.drop(b"k")
    assert len(held) == 0


def test_a_result_that_landed_in_memory_of_its_own_is_decoded_in_place() -> None:
    from p2pcluster._jobs import unpack
    from p2pcluster._values import encode_value

    arrays = {"a": np.arange(1 << 15, dtype=np.float64), "b": np.ones((300, 300), np.int32)}
    flat = encode_value(arrays)
    assert isinstance(flat, Packed)
    landed = aligned_buffer(len(flat), flat.flat())  # as land_result places it
    got = unpack(0, landed, "p")
    whole = np.frombuffer(landed, np.uint8)
    # Where each array starts: the pieces are head, array, head, array, head.
    starts = list(itertools.accumulate(flat.layout))[0:-1:2]
    for (key, arr), start in zip(arrays.items(), starts, strict=True):
        assert np.array_equal(got[key], arr) and got[key].dtype == arr.dtype
        assert got[key].flags.writeable and got[key].flags.aligned  # the caller's own
        # No copy, unless a later array fell where NumPy counts it unaligned.
        aligned = (whole.ctypes.data + start) % arr.dtype.alignment == 0
        assert np.shares_memory(got[key], whole) == aligned
    assert got["a"].ctypes.data % ALIGN == 0  # the first array is placed aligned
    got["a"][0] = 5.0
    assert got["a"][0] == 5.0


def test_an_error_that_landed_in_memory_of_its_own_is_raised() -> None:
    from p2pcluster._errors import TaskError
    from p2pcluster._jobs import unpack
    from p2pcluster._values import encode_error

    payload = memoryview(bytearray(encode_error("ValueError", "x" * 300_000)))
    with pytest.raises(TaskError, match="ValueError: xxx"):
        unpack(1, payload, "p")


def test_held_results_reach_the_job_once_and_duplicates_are_let_go() -> None:
    from p2pcluster._heldargs import HeldResults
    from p2pcluster._proto.messages import Results, TaskResult

    held = HeldResults()
    value = memoryview(bytearray(b"v" * 10))
    result = TaskResult(3, 0, b"")
    with held.landing(Results(b"j", b"p" * 16, 0, (result,)), value):
        assert held.payload(b"j", result) is value
        assert held.payload(b"j", result) == b""  # taken once
    with held.landing(Results(b"j", b"p" * 16, 0, (result,)), value):
        pass  # a duplicate: the machine emitted nothing
    assert held.payload(b"j", result) == b""


class _Recording:
    """A stream that keeps what it would send; ``after(n)`` runs once frame ``n`` went."""

    def __init__(self, after: dict[int, object]) -> None:
        self.frames: list[bytes] = []
        self.after = after

    async def send_payload(self, payload: memoryview) -> None:
        self.frames.append(bytes(payload))
        action = self.after.get(len(self.frames))
        if callable(action):
            action()


def _held_three_chunks() -> tuple[object, Packed]:
    from p2pcluster._dataplane import CHUNK

    arr = np.zeros(3 * CHUNK // 8)  # an array of three chunks
    payload = encode_args((arr,), {})
    assert isinstance(payload, Packed)
    held = HeldArgs()
    held.admit(b"j" * 16, [payload], inline_limit=1024)
    kept = held.get(b"j" * 16, 0)
    assert kept is not None
    return arr, kept


async def test_a_checked_send_stops_short_of_an_array_changed_while_it_goes() -> None:
    """The owner copies each chunk aside, sums the copy and seals it: a write to a chunk
    not yet sent shows in the sum, and the array's last frame never goes, so the receiver
    never has it whole."""
    from p2pcluster._dataplane import CHUNK, send_value

    arr, kept = _held_three_chunks()
    stream = _Recording({2: lambda: arr.__setitem__(-1, 1.0)})  # after the first chunk
    with pytest.raises(ArgumentChanged):
        await send_value(stream, kept)  # type: ignore[arg-type]
    assert [len(f) for f in stream.frames[1:]] == [CHUNK, CHUNK]  # head, 2 of 3 chunks


async def test_a_write_to_a_chunk_already_sent_does_not_change_what_was_sent() -> None:
    """A write to a chunk that already went (summed and sealed as submitted) changes
    nothing the receiver has: the send completes with the bytes of submit."""
    from p2pcluster._dataplane import send_value

    arr, kept = _held_three_chunks()
    stream = _Recording({2: lambda: arr.__setitem__(0, 1.0)})
    await send_value(stream, kept)  # type: ignore[arg-type]
    assert arr[0] == 1.0
    assert not np.frombuffer(b"".join(stream.frames[1:4]), np.float64).any()  # as submitted


def test_the_owner_leaves_the_check_to_a_fetching_peer_that_offers_its_kind_of_sum() -> None:
    """Held arguments go with their sums in the ValueHeader, sent as they are, when the
    fetching peer offers to check that kind; else without sums, checked as they go."""
    from p2pcluster._heldargs import left_to_check, own_kind
    from p2pcluster._proto.messages import SumKind

    _, kept = _held_three_chunks()
    kind, sums = left_to_check(kept, 1 << own_kind())
    assert kind == own_kind() and [s.sum for s in sums] == list(kept.sums)
    assert sums[0].offset == len(kept.heads[0]) and sums[0].size == kept.buffers[0].nbytes
    other = SumKind.CRC32 if own_kind() == SumKind.XXH3_64 else SumKind.XXH3_64
    assert left_to_check(kept, 1 << other) == (SumKind.NONE, ())
    assert left_to_check(kept, 0) == (SumKind.NONE, ())
    unsummed = Packed(kept.heads, kept.buffers)  # a daemon's own copy
    assert left_to_check(unsummed, 0xFF) == (SumKind.NONE, ())
    assert left_to_check(b"small", 0xFF) == (SumKind.NONE, ())
