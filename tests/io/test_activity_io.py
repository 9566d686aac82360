"""Peers answer each other's questions about their work over the authenticated wire
(``_activity.py``), and an asker gives up on a silent peer after ``activity_timeout``."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import pytest
import trio

from p2pcluster import Config
from p2pcluster._lookout import Lookout
from p2pcluster._peer import open_peer
from p2pcluster._proto.activity import ActivityQuery
from p2pcluster._secret import new_secret, write_secret_file

JOBFUNCS = Path(__file__).with_name("jobfuncs.py")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    write_secret_file(path, (new_secret(),))
    return path


def config(secret: Path, cluster: str, name: str, **changes: object) -> Config:
    return Config.local(mdns=False, port=0, secret_file=str(secret), cluster=cluster,
                        node_name=name, workers=1, activity_timeout=0.5, **changes)


async def until(predicate: object, what: str, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.05)


async def test_any_peer_sees_the_jobs_and_tasks_of_the_others(secret: Path,
                                                              tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(JOBFUNCS.parent))
    import jobfuncs

    cluster = f"activity-{os.getpid()}-{time.monotonic_ns()}"
    async with open_peer(config(secret, cluster, "a"), include=[JOBFUNCS]) as a:
        seed = f"127.0.0.1:{a.address[1]}"
        async with open_peer(config(secret, cluster, "b", seeds=(seed,)),
                             include=[JOBFUNCS]) as b:
            await until(lambda: len([m for m in b.members() if m.alive]) == 2, "b sees a")
            results = await a.map(jobfuncs.shout, range(30))  # owned by a
            assert results == list(range(30))
            lookout = Lookout(b)  # b's view: the jobs of a, the tasks of both
            await lookout.refresh()
            (job,) = lookout.jobs()["jobs"]
            assert (job["owner"], job["state"], job["done"]) == ("a", "done", 30)
            assert sum(job["done_by"].values()) == 30
            rows = {m["name"]: m for m in lookout.members()["members"]}
            assert rows["a"]["answered"] and rows["b"]["answered"] and rows["b"]["self"]
            tasks = await lookout.tasks(0.0)
            assert sorted(t["task"] for t in tasks["tasks"]) == list(range(30))
            detail = await lookout.job(bytes.fromhex(job["id"]))
            assert detail is not None
            assert sum(p["tasks"] for p in detail["by_peer"].values()) == 30
            assert {t["stdout"] for t in detail["output"]} == {
                f"shout {i}\n" for i in range(30)}


async def test_a_silent_peer_is_marked_within_the_timeout(secret: Path) -> None:
    cluster = f"activity-{os.getpid()}-{time.monotonic_ns()}"
    async with open_peer(config(secret, cluster, "a")) as a:
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts, and never says a word
        me = a.me
        silent = dataclasses.replace(me, id=b"s" * 16, name="silent",
                                     port=listener.getsockname()[1])
        with trio.socket.socket() as closed:
            await closed.bind(("127.0.0.1", 0))
            refusing = dataclasses.replace(me, id=b"r" * 16, name="refusing",
                                           port=closed.getsockname()[1])
        query = ActivityQuery(0, -math.inf, 10, None)
        began = trio.current_time()
        answers = await a.activity.survey([me, silent, refusing], {
            m.id: query for m in (me, silent, refusing)})
        took = trio.current_time() - began
        listener.close()
    assert [x.member.name for x in answers] == ["a", "silent", "refusing"]
    assert answers[0].report is not None and answers[0].report.slots == 1
    assert answers[1].report is None and answers[1].error == "no answer"
    assert answers[2].report is None and answers[2].error
    assert took < 0.5 + 1.0, "one timeout for all, not one after the other"
