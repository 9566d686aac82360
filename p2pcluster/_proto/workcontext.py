"""What the parts of the stealing machine share: one queue, one set of counters, one list of
outputs and events, and the peers known dead. The machine builds a :class:`WorkContext` and
hands it to its parts (:mod:`.owner`, :mod:`.execution`); none of them reaches into another.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .messages import JobSpec, Message
from .policy import WorkPolicy
from .taskqueue import TaskQueue
from .workevents import SendWork, WorkEvent, WorkOutput

__all__ = ["WorkContext"]


@dataclass(slots=True)
class WorkContext:
    """The state the parts of one peer's stealing machine share."""

    node_id: bytes
    policy: WorkPolicy
    queue: TaskQueue
    #: How many queued tasks this peer would give away now (the machine's surplus).
    surplus: Callable[[], int]
    #: Whether this peer may run tasks of a job (set by the machine: its placement's).
    runnable: Callable[[JobSpec], bool] = field(default=lambda spec: True)
    dead: set[bytes] = field(default_factory=set)
    stats: Counter[str] = field(default_factory=Counter)
    outputs: list[WorkOutput] = field(default_factory=list)
    events: list[WorkEvent] = field(default_factory=list)

    def send(self, dst: bytes, msg: Message) -> None:
        self.outputs.append(SendWork(dst, msg))

    def emit(self, event: WorkEvent) -> None:
        self.events.append(event)

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] += n
