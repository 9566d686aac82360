"""The whole cluster as one peer sees it: what the dashboard, `p2pcluster jobs` and `top`
show, from the answers of every live peer (:mod:`._activity`).

A :class:`Lookout` asks only while someone looks: each view first calls
:meth:`Lookout.refresh`, which asks every live peer for its news unless that was done less
than :data:`FRESH` seconds ago (viewers share one round of questions, so two browsers cost
what one does, and nobody looking costs nothing). It keeps, per peer, what the peer said
last (shown marked stale when it does not answer, so the jobs of a peer that has gone
remain visible) and the bars of the task stream for the last :data:`WINDOW` seconds.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import trio

from ._peer import Peer
from ._proto.activity import ActivityQuery, TaskRecord
from ._proto.membership import Member
from ._views import Bar, Seen, job_json, member_json, merge_bar, new_bar, task_json

__all__ = ["FRESH", "WINDOW", "Lookout"]

#: Seconds an answer stays fresh: views asked for more often share it.
FRESH = 0.5
#: Seconds of task stream kept and shown.
WINDOW = 60.0
#: Task records asked of each peer per round, at most (the newest; the stream's bars merge
#: them, so a peer running thousands of tasks a second still costs a bounded answer).
ROUND_LIMIT = 5000
#: A job's slowest tasks and its tasks' outputs, at most, in its detail.
SLOWEST, OUTPUTS = 10, 200


class Lookout:
    """See the module docstring. Views return JSON-ready dicts (``docs/operations.md``)."""

    def __init__(self, peer: Peer) -> None:
        self._peer = peer
        self._seen: dict[bytes, Seen] = {}
        self._cursor: dict[bytes, int] = {}
        self._bars: dict[tuple[str, int], deque[Bar]] = {}
        self._refreshed = -math.inf
        self._round: trio.Event | None = None

    # --- asking -------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Ask every live peer for its news, unless that was done less than :data:`FRESH`
        seconds ago; concurrent callers wait for the same round."""
        if trio.current_time() - self._refreshed < FRESH:
            return
        if self._round is not None:
            await self._round.wait()
            return
        self._round = done = trio.Event()
        try:
            await self._ask_all()
        finally:
            self._refreshed = trio.current_time()
            self._round = None
            done.set()

    async def _ask_all(self) -> None:
        members = self._live()
        since = time.time() - WINDOW
        queries = {m.id: ActivityQuery(self._cursor.get(m.id, 0), since, ROUND_LIMIT, None)
                   for m in members}
        for answer in await self._peer.activity.survey(members, queries):
            member, report = answer.member, answer.report
            if report is None:
                last = self._seen.get(member.id)
                self._seen[member.id] = Seen(last.report if last else None, False,
                                             answer.error, last.at if last else 0.0)
                continue
            self._seen[member.id] = Seen(report, True, "", time.time())
            self._cursor[member.id] = report.last
            for record in report.tasks:
                self._add_bar(record, member.name)
        self._trim(time.time() - WINDOW)

    def _live(self) -> list[Member]:
        return [m for m in self._peer.members() if m.alive]

    def _add_bar(self, record: TaskRecord, peer: str) -> None:
        bars = self._bars.setdefault((peer, record.slot), deque())
        if merge_bar(bars[-1] if bars else None, record, peer) is None:
            bars.append(new_bar(record, peer))

    def _trim(self, oldest: float) -> None:
        for key, bars in list(self._bars.items()):
            while bars and bars[0].end < oldest:
                bars.popleft()
            if not bars:
                del self._bars[key]

    # --- views --------------------------------------------------------------------------------

    def members(self) -> dict[str, Any]:
        """``/api/members``: every member this peer knows, departed ones included."""
        now, me = trio.current_time(), self._peer.node_id
        rows = [member_json(m, now, me, self._seen.get(m.id))
                for m in sorted(self._peer.members(), key=lambda m: (not m.alive, m.name))]
        return {"cluster": self._peer.config.cluster, "self": me.hex(), "time": time.time(),
                "members": rows}

    def jobs(self) -> dict[str, Any]:
        """``/api/jobs``: the jobs every peer owns (running, and the last 50 that ended)."""
        now = time.time()
        rows = []
        for member in self._peer.members():
            seen = self._seen.get(member.id)
            if seen is None or seen.report is None:
                continue
            stale = not (seen.answered and member.alive)
            rows += [job_json(job, member, now, stale=stale) for job in seen.report.jobs]
        rows.sort(key=lambda j: (j["state"] != "running", -j["started"]))
        return {"time": now, "jobs": rows, "peers": self._peers()}

    def _peers(self) -> dict[str, dict[str, Any]]:
        """Whether each live peer answered the last round, and if not why."""
        return {m.name: {"id": m.id.hex(), "answered": s.answered, "error": s.error}
                for m in self._live() if (s := self._seen.get(m.id)) is not None}

    def snapshot(self) -> dict[str, Any]:
        """What the dashboard's page gets every second: members, jobs, and the task stream
        (its rows: each live peer's worker slots; its bars: the last :data:`WINDOW` s)."""
        rows = [{"peer": m.name, "slots": s.report.slots}
                for m in self._live() if (s := self._seen.get(m.id)) and s.report]
        bars = [bar.json() for bars in self._bars.values() for bar in bars]
        return {**self.members(), "jobs": self.jobs()["jobs"], "window": WINDOW,
                "rows": sorted(rows, key=lambda r: r["peer"]), "bars": bars}

    async def tasks(self, since: float) -> dict[str, Any]:
        """``/api/tasks?since=``: the tasks every live peer ran that ended at ``since`` or
        later (at most ``Config.task_history`` per peer, the newest), oldest first."""
        members = self._live()
        limit = self._peer.config.task_history
        queries = {m.id: ActivityQuery(0, since, limit, None) for m in members}
        answers = await self._peer.activity.survey(members, queries)
        rows = [task_json(r, a.member.name) for a in answers if a.report
                for r in a.report.tasks]
        rows.sort(key=lambda r: r["ended"])
        return {"time": time.time(), "since": since, "tasks": rows,
                "peers": {a.member.name: {"id": a.member.id.hex(),
                                          "answered": a.report is not None,
                                          "error": a.error} for a in answers}}

    async def job(self, job: bytes) -> dict[str, Any] | None:
        """``/api/jobs/<id>``: one job, its tasks per peer, its slowest tasks, and what its
        tasks printed; None if no peer knows it."""
        members = self._live()
        queries = {m.id: ActivityQuery(0, math.inf, 0, job) for m in members}
        answers = await self._peer.activity.survey(members, queries)
        records = [(a.member.name, r) for a in answers if a.report for r in a.report.tasks]
        owned = [job_json(j, a.member, time.time(), stale=False) for a in answers
                 if a.report for j in a.report.jobs if j.job == job]
        if not owned:
            owned = [j for j in self.jobs()["jobs"] if j["id"] == job.hex()]
        if not owned and not records:
            return None
        return {"job": owned[0] if owned else None, "by_peer": _by_peer(records),
                "slowest": [task_json(r, name) for name, r in
                            sorted(records, key=lambda x: -x[1].seconds)[:SLOWEST]],
                "output": [task_json(r, name, output=True) for name, r in
                           sorted(records, key=lambda x: -x[1].started)
                           if r.stdout or r.stderr][:OUTPUTS],
                "peers": {a.member.name: {"answered": a.report is not None, "error": a.error}
                          for a in answers}}


def _by_peer(records: list[tuple[str, TaskRecord]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, record in records:
        row = found.setdefault(name, {"tasks": 0, "errors": 0, "seconds": 0.0})
        row["tasks"] += 1
        row["errors"] += record.status != 0
        row["seconds"] = round(row["seconds"] + record.seconds, 6)
    return found
