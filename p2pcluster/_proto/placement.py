"""Placement: which peer may take which job, learned by asking, and for the jobs owned here,
the news of who cannot.

Theory of operation
-------------------
A part of the stealing machine (:mod:`.stealing`). It keeps, for this peer and every live
peer, a :class:`~.eligibility.PeerEnv`: the Python version and tags each gossips in its
metadata (:meth:`Placement.peer_env`), and the distribution versions it said when asked
(:meth:`Placement.learned`). The rule is :func:`~.eligibility.judge`; its verdicts are kept
per job and peer until that peer's environment changes.

**Questions.** A verdict that needs a version nobody has said yet is *unsettled*: the
machine queues an :class:`~.workevents.AskVersions` output for that peer (this peer's own
versions too: the driver looks them up locally), one question per peer and name at a time,
and gives the peer nothing of the job until the answer. A job owned here asks every live
peer at submit, and each peer that joins later; a version learned more than
``versions_ttl`` ago is asked again for a new job (the old answer serves meanwhile), so a
fix (``pip install``) counts for the next job. A question that fails counts as a refusal
("did not answer") until ``versions_ttl`` has passed.

**Gates.** Three places consult the verdicts:

- a victim grants a job's tasks only to a thief whose verdict is OK (:meth:`may_take`), so a
  peer that cannot run a job never receives its tasks, from the owner or by a second move;
- a peer runs a job's tasks only if its own verdict is OK (:meth:`runnable_here`): an owner
  without a required tag keeps the tasks queued for others to steal;
- tasks of another owner's job that this peer turns out unable to run (its environment
  changed since it answered) are refused (:meth:`accept`, and when it learns its own
  versions): dropped
  from its queue, so its holding reports leave them out and their owner runs them again.

**News.** For each job owned here that needs anything, once each, as
:class:`~.workevents.PlacementNews` events: ``EXCLUDED`` a peer whose environment does not
fit, with the reasons; ``WAITING`` when every verdict is settled, some peer fits, but none
that fits has the tags (the tasks wait), ``RESUMED`` when one appears; ``ALONE`` when only
this peer can take them and another was excluded; ``UNRUNNABLE`` when no live peer fits,
this one included: the machine then cancels the job, which fails with the list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from .eligibility import ANY, NO_NEEDS, Fit, JobNeeds, PeerEnv, Verdict, judge
from .messages import JobSpec, WorkAvailable
from .wiretypes import PlacementKind
from .workcontext import WorkContext
from .workevents import AskVersions, PlacementNews

__all__ = ["Placement"]

_ENV = ""  #: the name under which a question for Python and tags alone is tracked


@dataclass(slots=True)
class _News:
    """What was said about a job owned here."""

    spec: JobSpec
    excluded: set[bytes] = field(default_factory=set)
    waiting: bool = False
    alone: bool = False


class Placement:
    """See the module docstring. ``fail(now, job)`` ends a job owned here that no live peer
    can run."""

    def __init__(self, ctx: WorkContext, local: PeerEnv, ttl: float,
                 fail: Callable[[float, bytes], None]) -> None:
        self._ctx = ctx
        self._me = ctx.node_id
        self._ttl = ttl
        self._fail = fail
        self.envs: dict[bytes, PeerEnv] = {self._me: local}  #: this peer and the live ones
        self._learned: dict[tuple[bytes, str], float] = {}  #: (peer, name) -> when
        self._asking: set[tuple[bytes, str]] = set()
        self._failed: dict[bytes, tuple[float, str]] = {}  #: peer -> (until, why)
        self._verdicts: dict[bytes, dict[bytes, Verdict]] = {}  #: job -> peer -> settled
        self._owned: dict[bytes, _News] = {}

    # --- verdicts -------------------------------------------------------------------------

    def verdict(self, spec: JobSpec, peer: bytes) -> Verdict:
        """``peer``'s verdict for ``spec``'s job (settled ones are kept)."""
        if spec.needs == NO_NEEDS:
            return ANY
        kept = self._verdicts.get(spec.job)
        found = kept.get(peer) if kept is not None else None
        if found is not None:
            return found
        verdict = judge(spec.needs, self.envs.get(peer) or PeerEnv())
        if not verdict.settled and peer in self._failed:
            why = self._failed[peer][1]
            verdict = Verdict(Fit.NO, verdict.tags, (f"did not answer ({why})",
                                                     *verdict.reasons))
        if verdict.settled or verdict.fit is Fit.NO:
            self._verdicts.setdefault(spec.job, {})[peer] = verdict
        return verdict

    def may_take(self, now: float, spec: JobSpec, peer: bytes) -> bool:
        """May ``peer`` receive tasks of ``spec``'s job? Asks it if it has not said enough."""
        verdict = self.verdict(spec, peer)
        if not verdict.settled and verdict.fit is not Fit.NO:
            self._ask(now, peer, verdict.unknown)
        return verdict.ok

    def runnable_here(self, spec: JobSpec) -> bool:
        """May this peer run tasks of ``spec``'s job? Asks the driver if it does not know."""
        return self.may_take(-1.0, spec, self._me)

    def accept(self, now: float, spec: JobSpec) -> bool:
        """Tasks of ``spec``'s job arrived in a grant: False refuses them (this peer knows it
        cannot run them); unsettled, they are kept and this peer's versions asked."""
        verdict = self.verdict(spec, self._me)
        if not verdict.settled and verdict.fit is not Fit.NO:
            self._ask(now, self._me, verdict.unknown)
        return verdict.fit is not Fit.NO


    # --- what the machine learns ------------------------------------------------------------

    def peer_up(self, now: float, peer: bytes) -> None:
        """``peer`` is alive: if it is new here, jobs owned here ask it what they need."""
        if peer in self.envs:
            return
        self.envs[peer] = PeerEnv()
        for news in self._owned.values():
            self._ask_stale(now, peer, news.spec.needs)
        self._evaluate(now)

    def peer_env(self, now: float, peer: bytes, python: str | None,
                 tags: Iterable[str]) -> None:
        """``peer``'s metadata: its Python version (None: it did not say) and its tags."""
        env = self.envs.get(peer) or PeerEnv()
        new = replace(env, python=python or env.python, tags=frozenset(tags))
        if new != env:
            self.envs[peer] = new
            self._changed(peer)
            self._evaluate(now)

    def learned(self, now: float, peer: bytes, python: str, tags: Iterable[str],
                versions: Mapping[str, str]) -> None:
        """``peer`` answered a question: its Python version, its tags, and the versions of
        the distributions asked (``""``: not installed)."""
        env = self.envs.get(peer)
        if env is None:
            return  # it died meanwhile
        self.envs[peer] = replace(env, python=python or env.python, tags=frozenset(tags),
                                  versions={**env.versions, **versions})
        for name in (_ENV, *versions):
            self._asking.discard((peer, name))
            self._learned[(peer, name)] = now
        self._failed.pop(peer, None)
        self._changed(peer)
        self._evaluate(now)
        if peer == self._me:
            self._refuse()
        else:
            self._hint(now, peer)

    def failed(self, now: float, peer: bytes, why: str) -> None:
        """A question to ``peer`` failed: it counts as a refusal for ``versions_ttl``."""
        self._asking = {key for key in self._asking if key[0] != peer}
        if peer in self.envs:
            self._failed[peer] = (now + self._ttl, why)
            self._changed(peer)
            self._evaluate(now)

    def peer_down(self, now: float, peer: bytes) -> None:
        self.envs.pop(peer, None)
        self._failed.pop(peer, None)
        self._asking = {key for key in self._asking if key[0] != peer}
        self._changed(peer)
        self._evaluate(now)

    # --- jobs owned here ----------------------------------------------------------------------

    def own(self, now: float, spec: JobSpec) -> None:
        """A job owned here: ask every live peer (and this one) what it needs."""
        if spec.needs == NO_NEEDS:
            return
        self._owned[spec.job] = _News(spec)
        for peer in list(self.envs):
            self._ask_stale(now, peer, spec.needs)
        self._evaluate(now)

    def forget(self, job: bytes) -> None:
        """The job is over here."""
        self._owned.pop(job, None)
        self._verdicts.pop(job, None)

    # --- internals ------------------------------------------------------------------------

    def _ask(self, now: float, peer: bytes, names: Iterable[str]) -> None:
        """Ask ``peer`` for ``names`` (and its Python and tags), unless it is asked already
        or a question to it failed less than ``versions_ttl`` ago (``now`` < 0: unknown)."""
        failed = self._failed.get(peer)
        if failed is not None:
            if now < 0 or now < failed[0]:
                return
            del self._failed[peer]
        wanted = tuple(sorted(n for n in set(names) if (peer, n) not in self._asking))
        if not wanted and (peer, _ENV) in self._asking:
            return  # every name is asked already
        self._asking.update((peer, n) for n in (*wanted, _ENV))
        self._ctx.count("questions")
        self._ctx.outputs.append(AskVersions(peer, wanted))

    def _ask_stale(self, now: float, peer: bytes, needs: JobNeeds) -> None:
        """Ask ``peer`` for what ``needs`` names that it never said, or said too long ago."""
        stale = [n for n in needs.names()
                 if now - self._learned.get((peer, n), -float("inf")) > self._ttl]
        env = self.envs.get(peer)
        if stale or env is None or env.python is None:
            self._ask(now, peer, stale)

    def _refuse(self) -> None:
        """Drop the tasks of other owners' jobs this peer now knows it cannot run."""
        me, queue = self._me, self._ctx.queue
        refused = {q.spec.job for q in queue
                   if q.spec.owner != me and self.verdict(q.spec, me).fit is Fit.NO}
        if refused:
            self._ctx.count("refused", queue.drop(lambda q: q.spec.job in refused))

    def announce(self, spec: JobSpec, peers: Iterable[bytes]) -> None:
        """Tell each of ``peers`` that may run ``spec``'s tasks that this peer has work to
        give (a job's tasks just came in, and it had none)."""
        hint = WorkAvailable(self._me, self._ctx.surplus())
        for peer in peers:
            if self.verdict(spec, peer).fit is not Fit.NO:
                self._ctx.send(peer, hint)

    def _hint(self, now: float, peer: bytes) -> None:
        """``peer`` may now take queued work: tell it (its last grant may have said none)."""
        surplus = self._ctx.surplus()
        if surplus and self._ctx.queue.count(lambda spec: self.may_take(now, spec, peer),
                                             movable=True):
            self._ctx.send(peer, WorkAvailable(self._me, surplus))

    def _changed(self, peer: bytes) -> None:
        for kept in self._verdicts.values():
            kept.pop(peer, None)

    def _evaluate(self, now: float) -> None:
        for job in list(self._owned):
            news = self._owned.get(job)
            if news is not None and self._news(now, news):
                self.forget(job)
                self._fail(now, job)

    def _news(self, now: float, news: _News) -> bool:
        """Say what is new about one owned job; True if no live peer can run it."""
        spec = news.spec
        verdicts = {peer: self.verdict(spec, peer) for peer in self.envs}
        for peer, verdict in verdicts.items():
            if verdict.fit is Fit.NO and peer not in news.excluded:
                news.excluded.add(peer)
                self._say(spec, PlacementKind.EXCLUDED, peer, verdict.reasons)
        if any(v.fit is Fit.UNKNOWN for v in verdicts.values()):
            return False  # answers are on their way
        fits = [peer for peer, v in verdicts.items() if v.fit is Fit.OK]
        if not fits:
            self._say(spec, PlacementKind.UNRUNNABLE, self._me, ())
            return True
        if not any(verdicts[peer].tags for peer in fits):
            if not news.waiting:
                news.waiting = True
                self._say(spec, PlacementKind.WAITING, self._me, (_waiting(spec, verdicts),))
            return False
        if news.waiting:
            news.waiting = False
            self._say(spec, PlacementKind.RESUMED, self._me, ())
        takers = {peer for peer in fits if verdicts[peer].tags}
        if takers == {self._me} and news.excluded - {self._me} and not news.alone:
            news.alone = True
            self._say(spec, PlacementKind.ALONE, self._me, ())
        return False

    def _say(self, spec: JobSpec, kind: PlacementKind, peer: bytes,
             reasons: tuple[str, ...]) -> None:
        self._ctx.emit(PlacementNews(spec.job, kind, peer, reasons))


def _waiting(spec: JobSpec, verdicts: Mapping[bytes, Verdict]) -> str:
    tags = spec.needs.tags
    words = ("tag " if len(tags) == 1 else "tags ") + ", ".join(tags)
    if any(v.tags for v in verdicts.values()):
        return f"no live peer with {words} can run it"
    return f"no live peer has {words}"
