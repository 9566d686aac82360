"""A whole peer on the pure simulator: its membership and stealing machines, wired as a real
peer wires them.

:class:`PeerMachine` is one :class:`~p2pcluster.testing.Simulation` machine that holds both
sans-IO machines of a peer, and does with them what the trio layer does (``_work.py``,
``_slots.py``, ``_peer.py``):

- membership's events drive the stealing machine: JOIN, RECOVER and UPDATE become
  ``peer_up`` with the member's advertised surplus and worker count (its metadata), FAIL and
  LEAVE become ``peer_down`` and close the work link to that peer;
- the surplus goes out in this peer's metadata no more often than :class:`MetaSchedule`
  allows;
- worker slots take batches from the machine, run them (each task costs virtual seconds, and
  a batch stops at its ``time_limit`` and gives back what it did not start), and hand back
  the results and the seconds spent; a finished or dropped job's running batches are stopped;
- work messages leave through a :class:`WorkSender` (in-order links, ``worklinks.py``), and
  arrive through :meth:`PeerMachine.deliver`; what a link could not deliver comes back
  through :meth:`PeerMachine.undeliverable` (a grant's tasks return to the queue).

Freezing the peer (``Simulation.pause``) freezes all of it: timers, datagrams, the worker
results it has not read yet, since batch completions are ticks of this machine. What the
peer does is reported to a :class:`PeerObserver`, with where each step came from (a tick, a
datagram and the updates it carried, a stream exchange), so that a checker can tell which
peer *declared* a death and which only heard of it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from p2pcluster import Config
from p2pcluster._proto.membership import EventKind, MemberEvent
from p2pcluster._proto.messages import JobSpec, Message, StealGrant, TaskItem, TaskResult
from p2pcluster._proto.meta import NodeMeta
from p2pcluster._proto.outputs import Address, Output
from p2pcluster._proto.policy import MetaSchedule, WorkPolicy
from p2pcluster._proto.stealing import StealingMachine
from p2pcluster._proto.swim import MembershipMachine
from p2pcluster._proto.workevents import (
    AskVersions,
    Batch,
    JobDropped,
    JobFinished,
    PushValue,
    WorkEvent,
)

__all__ = ["PeerMachine", "PeerObserver", "Step", "TaskRunner", "WorkSender"]

#: Unix seconds that virtual time 0 stands for, in the start times peers publish.
VIRTUAL_EPOCH = 1_800_000_000

#: What runs one task: (spec, item) -> (its result, the seconds it takes on a peer of speed 1).
TaskRunner = Callable[[JobSpec, TaskItem], tuple[TaskResult, float]]


@dataclass(frozen=True, slots=True)
class Step:
    """What the peer was handling when something happened: ``kind`` is "tick", "datagram",
    "request", "reply", "work" or "call" (an action from outside); ``msg`` the message."""

    kind: str
    msg: Message | None = None


class WorkSender(Protocol):
    """The work links (``worklinks.py``)."""

    def send(self, src: PeerMachine, dst: bytes, address: Address, msg: Message) -> None:
        """Queue ``msg`` from ``src`` to node ``dst`` at ``address`` on their link."""

    def close(self, src: PeerMachine, dst: bytes) -> None:
        """``src``'s membership says ``dst`` is gone: no new messages on that link."""


class PeerObserver(Protocol):
    """Told everything a checker needs, as it happens."""

    def member_event(self, peer: PeerMachine, event: MemberEvent, step: Step) -> None: ...

    def work_event(self, peer: PeerMachine, event: WorkEvent) -> None: ...


@dataclass(slots=True)
class _Running:
    batch: Batch
    done_at: float
    results: list[TaskResult]
    seconds: float
    unstarted: list[TaskItem]
    worker: int


class PeerMachine:
    """One peer; see the module docstring. ``slots`` worker processes of relative ``speed``."""

    def __init__(self, config: Config, *, node_id: bytes, name: str, address: Address,
                 rng: random.Random, now: float, slots: int, speed: float,
                 run_task: TaskRunner, links: WorkSender, observer: PeerObserver) -> None:
        self.config = config
        self.address = address
        self.slots = slots
        self.speed = speed
        self.crashed = False
        self._run_task = run_task
        self._links = links
        self._observer = observer
        # A daemon publishes when it started (Unix seconds), which orders two processes at
        # one address; the virtual clock plays the machine's, from an arbitrary epoch.
        self._started = VIRTUAL_EPOCH + round(now)
        meta = NodeMeta(workers=slots, started=self._started).encode()
        self.members = MembershipMachine(config, node_id=node_id, name=name, host=address[0],
                                         port=address[1], rng=rng, now=now, meta=meta)
        self.work = StealingMachine(node_id, slots, random.Random(rng.getrandbits(64)),
                                    WorkPolicy.from_config(config))
        self._meta = MetaSchedule(config.meta_interval)
        self._publish_at: float | None = None
        self._addresses: dict[bytes, Address] = {}
        self._gone: set[bytes] = set()
        self._running: dict[int, _Running] = {}
        self._free_at = [now] * slots  # when each worker process is next free
        self._tokens = 0
        self._step = Step("call")

    def __repr__(self) -> str:
        return f"PeerMachine({self.name}, {self.node_id.hex()[:8]})"

    @property
    def node_id(self) -> bytes:
        return self.members.node_id

    @property
    def name(self) -> str:
        return self.members.me.name

    def address_of(self, peer: bytes) -> Address | None:
        """A live member's address, as the work service knows it (None: unknown or gone)."""
        return None if peer in self._gone else self._addresses.get(peer)

    def running_batches(self) -> int:
        return len(self._running)

    def backlog(self) -> list[tuple[bytes, int]]:
        """(job, task id) of every task queued or running here."""
        queued = [(q.spec.job, q.item.id) for q in self.work.queue]
        running = [(r.batch.spec.job, item.id) for r in self._running.values()
                   for item in r.batch.items]
        return queued + running

    # --- the Machine protocol, for the Simulation -------------------------------------------

    def receive(self, now: float, src: Address, msg: Message, sender: bytes) -> None:
        self._step = Step("datagram", msg)
        self.members.receive(now, src, msg, sender)
        self._pump(now)

    def handle_request(self, now: float, src: Address, msg: Message) -> Message | None:
        self._step = Step("request", msg)
        reply = self.members.handle_request(now, src, msg)
        self._pump(now)
        return reply

    def handle_reply(self, now: float, token: int, reply: Message | None) -> None:
        self._step = Step("reply", reply)
        self.members.handle_reply(now, token, reply)
        self._pump(now)

    def tick(self, now: float) -> None:
        self._step = Step("tick")
        for _ in range(8):  # what one part does may make another due at once (new gossip)
            due = self.next_deadline()
            if due is None or due > now:
                break
            if _due(self.members.next_deadline(), now):
                self.members.tick(now)
            if _due(self.work.next_deadline(), now):
                self.work.tick(now)
            self._complete_batches(now)
            if _due(self._publish_at, now):
                self._publish(now)
            self._pump(now)

    def next_deadline(self) -> float | None:
        times = [t for t in (self.members.next_deadline(), self.work.next_deadline(),
                             self._publish_at) if t is not None]
        times.extend(r.done_at for r in self._running.values())
        return min(times) if times else None

    def take_outputs(self) -> list[Output]:
        return self.members.take_outputs()

    # --- from the work links and from the scenario -----------------------------------------

    def deliver(self, now: float, msg: Message) -> None:
        """A work message arrived on a link."""
        self._step = Step("work", msg)
        self.work.receive(now, msg)
        self._pump(now)

    def undeliverable(self, now: float, dst: bytes, msg: Message) -> None:
        """The links could not deliver ``msg``: a grant's tasks come back; lost results are
        the owner's to repair (our holding reports stop naming them)."""
        self._step = Step("work", msg)
        if isinstance(msg, StealGrant):
            self.work.grant_failed(now, msg)
        self._pump(now)

    def submit(self, now: float, spec: JobSpec, tasks: list[tuple[int, bytes]]) -> None:
        self._step = Step("call")
        self.work.submit(now, spec, tasks)
        self._pump(now)

    def cancel(self, now: float, job: bytes) -> None:
        self._step = Step("call")
        self.work.cancel(now, job)
        self._pump(now)

    def join(self, now: float, seeds: list[Address]) -> None:
        self._step = Step("call")
        self.members.join(now, seeds)
        self._pump(now)

    # --- the driver's loop ----------------------------------------------------------------

    def _pump(self, now: float) -> None:
        """What ``WorkService.flush`` and the slot runners do after every input."""
        for _ in range(1000):
            for event in self.members.take_events():
                self._member_event(now, event)
            self._fill(now)
            outputs, events = self.work.take_outputs(), self.work.take_events()
            if not outputs and not events:
                break
            for out in outputs:
                if isinstance(out, PushValue | AskVersions):
                    what = "the soak's results are small and its jobs need nothing"
                    raise AssertionError(f"{what}: no data streams, no questions ({out})")  # noqa: TRY004
                self._send(now, out.dst, out.msg)
            for event in events:
                self._work_event(now, event)
        else:
            raise AssertionError(f"{self}: the machines keep producing work: a loop")
        if self._publish_at is None and self._meta.changed(self.work.surplus()):
            self._publish_at = self._meta.due(now)

    def _member_event(self, now: float, event: MemberEvent) -> None:
        self._observer.member_event(self, event, self._step)
        member = event.member
        if event.kind in (EventKind.JOIN, EventKind.RECOVER, EventKind.UPDATE):
            self._gone.discard(member.id)
            self._addresses[member.id] = member.address
            meta = NodeMeta.decode(member.meta)
            self.work.peer_up(now, member.id, meta.queue, max(1, meta.workers))
            self.work.peer_env(now, member.id, meta.python_version, meta.tags)
        elif event.kind in (EventKind.FAIL, EventKind.LEAVE):
            self._gone.add(member.id)
            self.work.peer_down(now, member.id)
            self._links.close(self, member.id)

    def _send(self, now: float, dst: bytes, msg: Message) -> None:
        address = self.address_of(dst)
        if address is None:  # as WorkLinks.send: "its address is unknown"
            if isinstance(msg, StealGrant):
                self.work.grant_failed(now, msg)
            return
        self._links.send(self, dst, address, msg)

    def _work_event(self, now: float, event: WorkEvent) -> None:
        self._observer.work_event(self, event)
        if isinstance(event, JobFinished | JobDropped):  # Slots.stop: the batch is cancelled
            for token, running in list(self._running.items()):
                if running.batch.spec.job == event.job:
                    del self._running[token]
                    self._free_at[running.worker] = now
                    self.work.finished(now, running.batch, [])

    def _publish(self, now: float) -> None:
        self._publish_at = None
        surplus = self.work.surplus()
        if self._meta.publish(now, surplus):
            self.members.set_meta(now, NodeMeta(workers=self.slots, queue=surplus,
                                                started=self._started).encode())

    # --- the worker slots -----------------------------------------------------------------

    def _fill(self, now: float) -> None:
        while (batch := self.work.take(now)) is not None:
            self._start(now, batch)

    def _start(self, now: float, batch: Batch) -> None:
        """Run ``batch`` on the worker free soonest (it waits in that worker's pipe)."""
        worker = min(range(self.slots), key=self._free_at.__getitem__)
        results: list[TaskResult] = []
        seconds = 0.0
        for item in batch.items:
            result, cost = self._run_task(batch.spec, item)
            results.append(result)
            seconds += cost / self.speed
            if batch.time_limit is not None and seconds >= batch.time_limit:
                break
        done_at = max(now, self._free_at[worker]) + seconds
        self._free_at[worker] = done_at
        self._tokens += 1
        self._running[self._tokens] = _Running(batch, done_at, results, seconds,
                                               batch.items[len(results):], worker)

    def _complete_batches(self, now: float) -> None:
        for token, running in sorted(self._running.items(), key=lambda kv: kv[1].done_at):
            if running.done_at > now:
                break
            del self._running[token]
            self.work.finished(now, running.batch, running.results, running.seconds,
                               running.unstarted)


def _due(deadline: float | None, now: float) -> bool:
    return deadline is not None and deadline <= now

