"""The owner holds large array arguments as views of the caller's arrays (no copy at submit),
and hands the stealing machine only their size."""

from __future__ import annotations

import pytest

from p2pcluster._heldargs import HeldArgs
from p2pcluster._jobs import encode_args, encode_map_args
from p2pcluster._packed import Packed
from p2pcluster._proto.messages import TaskItem
from p2pcluster._values import decode_call

np = pytest.importorskip("numpy")


def _data(payload: Packed) -> object:
    return np.frombuffer(payload.buffers[0], np.uint8)


def test_a_contiguous_array_argument_is_not_copied_at_submit() -> None:
    arr = np.arange(1 << 17, dtype=np.float64)  # 1 MiB
    payload = encode_args((arr,), {})
    assert isinstance(payload, Packed)
    assert np.shares_memory(_data(payload), arr)
    # So it is read when its task is fetched or run (docs/jobs.md): a change made before
    # then is what the task sees.
    arr[7] = -1.0
    (got,), _ = decode_call(payload)
    assert got[7] == -1.0


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
    assert held.get(b"j", 0) is payloads[0] and held.get(b"j", 1) is None and len(held) == 1
    held.release(b"j", [0])
    assert held.get(b"j", 0) is None and len(held) == 0
    held.admit(b"k", payloads, 256 * 1024)
    held.drop(b"k")
    assert len(held) == 0
