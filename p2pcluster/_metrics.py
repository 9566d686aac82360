"""A peer's counters in Prometheus' text exposition format (version 0.0.4), for ``/metrics``.

Each peer exposes its own figures, as Prometheus expects of a target: scrape every peer's
dashboard address. Pure: it formats statistics it is given. The metric names and labels are
listed in ``docs/operations.md``.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Iterable

from ._peer import PeerStatistics
from ._proto.membership import Member
from ._proto.meta import NodeMeta, Usage
from ._proto.wiretypes import MemberStatus
from ._secure import WireStatistics
from ._version import __version__

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[dict[str, str], float]
#: A metric: its name, type, help text and samples.
Family = tuple[str, str, str, list[Sample]]


def _family(name: str, kind: str, doc: str, samples: Iterable[Sample]) -> list[str]:
    lines = [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}")
    return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _one(value: float) -> list[Sample]:
    return [({}, value)]


def render_metrics(stats: PeerStatistics, wire: WireStatistics, members: list[Member],
                   me: Member, cluster: str) -> str:
    """The text of ``/metrics`` for one peer."""
    states = Counter(m.status for m in members)
    usage = NodeMeta.decode(me.meta).usage
    pool = stats.workers
    families: list[Family] = [
        ("p2pcluster_info", "gauge", "This peer: its name, cluster and versions (always 1).",
         [({"name": me.name, "cluster": cluster, "version": __version__,
            "python": platform.python_version()}, 1)]),
        ("p2pcluster_peers", "gauge", "Members this peer knows, itself included, by state.",
         [({"state": s.name.lower()}, states.get(s, 0)) for s in MemberStatus]),
        ("p2pcluster_workers", "gauge", "Worker processes this peer offers.",
         _one(pool.slots)),
        ("p2pcluster_workers_busy", "gauge", "Worker processes running a batch now.",
         _one(max(0, pool.slots - pool.idle_workers))),
        ("p2pcluster_queued_tasks", "gauge", "Unstarted tasks queued here.", _one(stats.queued)),
        ("p2pcluster_jobs_owned", "gauge", "Jobs this peer owns that still run.",
         _one(stats.jobs_owned)),
        *_work_families(stats),
        *_wire_families(wire),
        ("p2pcluster_worker_crashes_total", "counter", "Worker processes that died.",
         _one(pool.crashes)),
        ("p2pcluster_task_timeouts_total", "counter", "Tasks stopped by their timeout.",
         _one(pool.timeouts)),
        ("p2pcluster_poisoned_tasks_total", "counter", "Tasks that crashed 3 workers.",
         _one(pool.poisoned)),
        ("p2pcluster_health_score", "gauge", "Lifeguard's local health (0 is healthy).",
         _one(stats.membership.health_score)),
        *_usage_families(usage),
    ]
    lines = [line for family in families for line in _family(*family)]
    return "\n".join(lines) + "\n"


def _work_families(stats: PeerStatistics) -> list[Family]:
    steal = stats.stealing
    return [
        ("p2pcluster_tasks_run_total", "counter", "Tasks this peer ran (results it produced).",
         _one(steal.executed)),
        ("p2pcluster_tasks_submitted_total", "counter", "Tasks of jobs submitted here.",
         _one(steal.submitted)),
        ("p2pcluster_tasks_completed_total", "counter",
         "First results received for jobs owned here.", _one(steal.completed)),
        ("p2pcluster_steal_requests_total", "counter", "Steal requests this peer sent.",
         _one(steal.steal_requests)),
        ("p2pcluster_steals_total", "counter", "Answers to this peer's steal requests.",
         [({"result": "granted"}, steal.steals_granted),
          ({"result": "empty"}, steal.steals_empty)]),
        ("p2pcluster_tasks_stolen_total", "counter", "Tasks received in grants.",
         _one(steal.tasks_stolen)),
        ("p2pcluster_tasks_given_total", "counter", "Tasks granted away to thieves.",
         _one(steal.tasks_given)),
        ("p2pcluster_tasks_requeued_total", "counter",
         "Tasks queued again by their owner (holder dead, silent, or lost them).",
         _one(steal.requeued)),
    ]


def _wire_families(wire: WireStatistics) -> list[Family]:
    return [
        ("p2pcluster_bytes_sent_total", "counter", "Bytes sent, sealed, by transport.",
         [({"transport": "udp"}, wire.datagram_bytes_sent),
          ({"transport": "tcp"}, wire.stream_bytes_sent)]),
        ("p2pcluster_bytes_received_total", "counter", "Bytes received, by transport.",
         [({"transport": "udp"}, wire.datagram_bytes_received),
          ({"transport": "tcp"}, wire.stream_bytes_received)]),
        ("p2pcluster_rejected_packets_total", "counter",
         "Datagrams dropped before any handler, by reason (auth: wrong key or tampered).",
         [({"reason": "auth"}, wire.dropped_auth), ({"reason": "replay"}, wire.dropped_replay),
          ({"reason": "malformed"}, wire.dropped_malformed),
          ({"reason": "oversize"}, wire.dropped_oversize)]),
        ("p2pcluster_handshakes_failed_total", "counter",
         "Incoming or outgoing streams whose handshake failed.", _one(wire.handshakes_failed)),
        ("p2pcluster_streams_total", "counter",
         "Streams opened or accepted, by the AEAD their frames use.",
         [({"cipher": "aes-256-gcm"}, wire.streams_aes_gcm),
          ({"cipher": "chacha20-poly1305"},
           wire.streams_opened + wire.streams_accepted - wire.streams_aes_gcm)]),
    ]


def _usage_families(usage: Usage | None) -> list[Family]:
    if usage is None:
        return []
    return [
        ("p2pcluster_cpu_percent", "gauge", "CPU busy on this machine, percent of all cores.",
         _one(usage.cpu)),
        ("p2pcluster_resident_bytes", "gauge", "Memory resident in this peer and its workers.",
         _one(usage.rss * 1024)),
        ("p2pcluster_load1", "gauge", "The machine's 1-minute load average.", _one(usage.load)),
    ]
