"""A job's listeners: one that raises is logged and dropped; the others still get results."""

from __future__ import annotations

import pytest

from p2pcluster._jobs import JobResult
from p2pcluster._proto.messages import JobSpec
from p2pcluster._work import Job


def test_a_failing_listener_is_dropped_and_the_others_still_get_results(
        caplog: pytest.LogCaptureFixture) -> None:
    job = Job(lambda job: None, JobSpec(b"j" * 16, b"o", "m", "f", None, (), None), 3)
    got: list[int] = []

    def broken(batch: list[JobResult]) -> None:
        raise RuntimeError("consumer bug")

    job.listeners += [broken, lambda batch: got.extend(r.task for r in batch)]
    job.deliver([JobResult(0, 0, b"\x01", "a")])
    job.deliver([JobResult(1, 0, b"\x02", "b")])
    assert got == [0, 1]
    assert job.listeners[0] is not broken and len(job.listeners) == 1
    assert "a listener of job" in caplog.text
    assert job.done == 2 and job.per_peer == {"a": 1, "b": 1}
