"""`Config`: every tunable of a peer, documented, with LAN and local presets.

Pure: no I/O except :meth:`Config.from_toml`, which reads the file it is given. Times are float
seconds everywhere. Each field's ``metadata["doc"]`` states its trade-off and its default;
``docs/config.md`` is generated from it (``python scripts/gen_config_docs.py``) and a test keeps
the two in step.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from ._configchecks import network_checks, peer_checks
from ._configtext import ENV_PREFIX, check_value, parse_text, type_name
from ._errors import ConfigError

__all__ = ["Config"]


def _doc(default: Any, doc: str, unit: str = "") -> Any:
    return field(default=default, metadata={"doc": " ".join(doc.split()), "unit": unit})


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a peer can tune. Start from :meth:`lan` (the default) or :meth:`local`.

    Build variants with :func:`dataclasses.replace` or :meth:`load`; a Config is immutable and
    validated on creation (:class:`~p2pcluster.ConfigError`).
    """

    cluster: str = _doc("default", """
        Cluster name. Peers only talk to peers of the same name: the keys are derived from the
        secret *and* the name, so one secret can serve several separate clusters.""")
    secret_file: str | None = _doc(None, """
        Path of the secret file. None means the per-user default
        ($XDG_CONFIG_HOME/p2pcluster/secret). The file must not be readable by group or others.
        P2PCLUSTER_SECRET (the secret itself) takes precedence over any file.""")
    bind_address: str = _doc("0.0.0.0", """
        Address the UDP and TCP sockets bind to. 0.0.0.0 listens on every interface; a specific
        address limits the peer to one network.""")
    port: int = _doc(7946, """
        UDP and TCP port (the same number for both). 0 picks a free port, which then must be
        learned through discovery or a seed.""")
    max_datagram_size: int = _doc(1400, """
        Largest UDP datagram sent, envelope included, in bytes. 1400 fits an Ethernet MTU with
        room for IP and UDP headers and tunnels; larger risks IP fragmentation and loss,
        smaller carries fewer piggybacked updates per packet. Allowed: 512 to 1400.""", "bytes")
    max_frame_size: int = _doc(64 * 1024 * 1024, """
        Largest stream frame accepted, in bytes (64 MiB). Bounds the memory a peer may make us
        allocate; task arguments and results larger than this must be split.""", "bytes")
    replay_window: float = _doc(60.0, """
        A datagram whose timestamp is further than this from our wall clock is dropped, and
        nonces are remembered this long. Smaller is stricter but needs better-synchronised
        clocks: peers whose clocks differ by more than this cannot talk (run NTP).""", "s")
    replay_cache_size: int = _doc(200_000, """
        Most nonces remembered for replay detection. When full, the oldest are forgotten and
        anything older is refused, so it must cover replay_window at the peak packet rate
        (memory: about 100 bytes each).""")
    handshake_timeout: float = _doc(5.0, """
        Time allowed to connect a stream and finish its handshake. Longer tolerates loaded
        peers; shorter fails faster on unreachable ones.""", "s")
    hello_timeout: float = _doc(1.0, """
        A connection whose handshake hello has not fully arrived this long after it was
        accepted is closed. Bounds how long an outsider's idle connection holds a
        handshake slot; a peer sends its hello at once, so it needs only a round trip.
        At most handshake_timeout.""", "s")
    max_handshakes: int = _doc(256, """
        Incoming connections still in their handshake (not yet authenticated) at once. At
        the cap the peer stops accepting until one finishes, and new connections wait in the
        kernel's backlog. Bounds what a flood of connections costs (a few KiB and one file
        descriptor each); larger admits bigger bursts of honest connections.""")
    max_handshakes_per_host: int = _doc(32, """
        Of max_handshakes, those from one source address at once; a further connection
        from that address is closed at once, unread. Keeps one host from filling every
        slot. A peer never opens more than this many handshakes to one address at once
        itself (it waits instead), so honest peers are not refused.""")
    stream_cipher: str = _doc("auto", """
        The AEAD this peer offers for streams (datagrams always use ChaCha20-Poly1305). A
        stream uses AES-256-GCM when both ends offer it, ChaCha20-Poly1305 otherwise; both
        are 256-bit AEADs. "auto" offers AES-256-GCM when this CPU has AES instructions,
        where it costs about a third of ChaCha20-Poly1305's CPU per byte (large values move
        faster); without them it is slower. "aes-256-gcm" always offers it,
        "chacha20-poly1305" never does.""")
    clock_offset: float = _doc(0.0, """
        Seconds added to this machine's wall clock when it stamps datagrams and checks
        their timestamps against replay_window. Leave at 0 and run NTP; it corrects a clock
        known to be off that cannot be fixed, and tests use it to fake a skewed clock.""",
        "s")

    # --- discovery and the peer daemon -------------------------------------------------------
    interface: str | None = _doc(None, """
        Interface (a name such as eth0, or one of its addresses) for mDNS and the advertised
        address. None picks the interface that holds the default route, never docker0 or
        loopback unless nothing else exists; `p2pcluster join` says which it chose.""")
    mdns: bool = _doc(True, """
        Find peers with mDNS (DNS-SD) on the chosen interface. Turn off where multicast does
        not pass (containers, several subnets) and give seeds instead.""")
    seeds: tuple[str, ...] = _doc((), """
        Peers to join at start-up, as host:port (the port defaults to ours). Needed where
        mDNS cannot reach; harmless alongside it. Environment: comma-separated.""")
    workers: int | None = _doc(None, """
        Worker processes this peer offers to the cluster (advertised in its metadata). None
        means one per CPU. Fewer leaves room for other work on the machine.""")
    tags: tuple[str, ...] = _doc((), """
        Free-form labels advertised in this peer's metadata (for example gpu or big-memory).
        They share the 512-byte metadata limit with the rest.""")
    dashboard: str = _doc("127.0.0.1:8797", """
        Where `p2pcluster join` serves its web dashboard, /api and /metrics (HOST:PORT; empty:
        off). Loopback (the default) asks no token; any other address requires the token
        printed at start, since it shows every peer's jobs and what their tasks print. If the
        default port is taken, one of the next ten is used, else any free port (as logged); an
        explicit address must be free. Needs pip install 'p2pcluster[dashboard]'.""")
    activity_timeout: float = _doc(0.5, """
        How long the dashboard, `jobs` or `top` waits for each peer's account of its work; one
        that has not answered is shown as such, with what it said last. Longer waits out
        loaded peers; shorter keeps the view moving.""", "s")

    # --- work: values, stealing, batching -----------------------------------------------------
    max_value_size: int = _doc(2 * 1024**3, """
        Largest single task argument or result this peer accepts, in bytes (2 GiB). Checked
        before anything is buffered: a larger argument fails its task at submit, and a larger
        result fails its task on the peer that ran it, each with an error naming both sizes
        and this setting. The owner of a job keeps every argument until its task is done, so
        large values cost that much memory there.""", "bytes")
    inline_value_size: int = _doc(256 * 1024, """
        Arguments up to this size travel inside the steal messages that move tasks; larger
        ones stay at the job's owner until the task runs, and the peer that runs it fetches
        them on a data stream of their own (so stealing moves only what runs). Results above
        it likewise travel on their own stream. At most max_frame_size / 4.""", "bytes")
    shared_linger: float = _doc(0.0, """
        A shared value fetched from another peer is kept (here and in the worker processes)
        this long after the last job that used it here ends, so that the next job using it
        (the next batch of a joblib search, each its own job) finds it at hand instead of
        fetching it again. Longer saves more fetches between jobs that come with pauses,
        and holds the memory longer; 0 (the default) lets a value go with its last job.""",
        "s")
    steal_timeout: float = _doc(1.0, """
        A steal request unanswered this long counts as empty, and the idle peer asks another.
        Shorter recovers sooner from a victim that died or is overloaded; too short gives up
        on answers that are merely slow (keep it above a few round trips, 4 x probe_timeout
        by default).""", "s")
    report_interval: float = _doc(1.0, """
        While a peer holds tasks of another peer's jobs, it tells that owner which, this
        often. The owner queues again a task that two reports in a row leave out (a result
        lost with a broken connection), so a lost result costs at most about two intervals.
        Shorter finds losses sooner at a few bytes per holder and interval.""", "s")
    lease_timeout: float = _doc(10.0, """
        An owner that has not heard from a peer holding its tasks for this long (no report,
        result or request) queues those tasks again, even while membership still lists the
        peer alive: a peer whose connections fail cannot hold work hostage. Must exceed
        report_interval by a margin; shorter reacts sooner, at the risk of running tasks
        twice when a holder is merely slow.""", "s")
    batch_target: float = _doc(0.02, """
        Seconds of work a peer hands one worker process at once, by its estimate of the job's
        task time (a moving average over the batches it ran; one task until the first
        measurement). Larger amortises the
        pipe round trip over more tiny tasks; smaller keeps the tail of a job stealable and
        balanced. A job's chunksize overrides it.""", "s")
    max_batch_time: float = _doc(0.5, """
        A batch that has run this long stops after its current task and gives the tasks it
        has not started back to this peer's queue (where other peers may steal them). Bounds
        what a batch sized for fast tasks costs when the job's tasks turn slow; lower cuts
        more batches short when task times vary, each cut costing a pipe round trip. Not
        applied to a job with a chunksize.""", "s")
    max_batch: int = _doc(1024, """
        The most tasks in one batch for a worker, whatever batch_target asks for. Bounds the
        work lost when a worker crashes in the middle of a batch.""")
    batches_per_worker: int = _doc(2, """
        Batches handed to each worker process at once while this peer has plenty queued: the
        next waits in the worker's pipe, so a worker that finishes one starts the next
        without waiting for its peer to be scheduled (the difference between 0.85 and 0.97
        of ideal throughput for 50 ms tasks on a busy machine). Once the queue is short, one
        per worker, so the last tasks stay stealable. A peer whose workers are all busy and
        whose queue is empty steals ahead to fill those pipes (its next batch is at hand when
        the running one ends: what joblib's one-call batches need). 1 disables the overlap
        and stealing ahead; a worker's pipe holds at most 2.""")
    meta_interval: float = _doc(0.5, """
        The shortest time between two publications of this peer's surplus (queued tasks
        others may steal) in its gossiped metadata. Each publication is a membership update
        every peer receives; shorter lets idle peers see new work sooner, at more gossip.""",
        "s")
    usage_interval: float = _doc(5.0, """
        How often a peer measures its CPU, memory and load (from /proc) for the dashboard.
        A measurement goes out in the gossiped metadata only when it moved (5 points of CPU,
        5% of memory, 0.1 of load), since every publication reaches every peer; shorter
        shows changes sooner at more gossip. 0 turns the measurements off.""", "s")
    task_history: int = _doc(10_000, """
        Tasks a peer remembers having run (job, function, slot, times, status, output) for
        every peer's dashboard: about 250 bytes each, plus at most 4 MiB of output in all.""")

    # --- environments: what a job ships and needs ---------------------------------------------
    auto_include_limit: int = _doc(16 * 1024 * 1024, """
        The most bytes of the job's own modules shipped with it automatically: the modules
        and packages the job file (or the script using Cluster) imports, directly or in
        turn, that are neither in the standard library nor an installed distribution (16 MiB).
        A module that would pass the limit is not shipped, and a line on stderr says so
        (ship it with --include, or raise the limit); 0 ships nothing automatically.""",
        "bytes")
    strict_versions: bool = _doc(False, """
        Jobs submitted from here run only on peers with exactly the versions the submitter
        has of Python and of every installed distribution the job imports. Off, the same
        minor release is enough (numpy 2.5.1 runs a job submitted with 2.5.5, 1.26.4 does
        not). `p2pcluster run --strict-versions` sets it for one run.""")
    versions_ttl: float = _doc(10.0, """
        A peer's answer about its installed versions serves new jobs this long; a job
        submitted later asks again. Shorter notices a peer's `pip install` sooner, at one
        question per peer and job more; a job that runs keeps the answers it started with
        unless a peer's metadata changes.""", "s")

    # --- membership (SWIM with the Lifeguard refinements) -----------------------------------
    node_name: str | None = _doc(None, """
        This peer's name, shown by `p2pcluster members`. None uses the host name. A restarted
        peer may reuse its name: it gets a new random id, and the old one is declared dead.""")
    advertise_address: str | None = _doc(None, """
        Address other peers use to reach this one. None: the bind address if it is specific,
        else the address of the interface that holds the default route.""")
    probe_interval: float = _doc(0.5, """
        Protocol period: each peer probes one other peer per period, round-robin. Shorter
        detects failures sooner (expected first detection is about 1.6 periods after a crash)
        and costs proportionally more packets; the per-peer load does not grow with cluster
        size. Lifeguard multiplies it by (local health + 1) while this peer is slow.""", "s")
    probe_timeout: float = _doc(0.25, """
        Wait for a direct ack before asking indirect_checks other peers to probe (ping-req).
        Must exceed the round-trip time including scheduling delays, and stay below
        probe_interval. Too short causes needless indirect probes; a peer that answers
        later than probe_interval gets suspected. Scaled by local health like
        probe_interval.""", "s")
    indirect_checks: int = _doc(3, """
        Peers asked to probe on our behalf when a direct probe times out (SWIM's k). More
        tolerate more packet loss and asymmetric links, at the cost of more packets on each
        failed probe.""")
    tcp_fallback_probe: bool = _doc(True, """
        Also probe over an encrypted TCP stream when the direct UDP probe times out, as
        memberlist does. Distinguishes a lossy UDP path from a dead peer; costs one stream per
        failed probe.""")
    suspicion_mult: int = _doc(4, """
        Suspicion timeout multiplier. A suspect is declared dead after at least
        Min = suspicion_mult * max(1, log10(N)) * probe_interval, reached once
        suspicion_mult - 2 other peers independently confirm the suspicion (Lifeguard).
        Larger tolerates longer pauses (GC, swapping, a frozen VM) before a false death;
        smaller detects real failures sooner.""")
    suspicion_max_timeout_mult: int = _doc(6, """
        Max = suspicion_max_timeout_mult * Min: the suspicion timeout with no independent
        confirmation. It shrinks logarithmically toward Min as confirmations arrive. Larger
        protects a peer that only one (perhaps slow) prober suspects.""")
    retransmit_mult: int = _doc(4, """
        Each membership update is piggybacked at most retransmit_mult * ceil(log10(N + 1))
        times, least-sent first. Larger makes dissemination more reliable under loss, at the
        cost of more bytes per packet.""")
    gossip_interval: float = _doc(0.2, """
        While updates are queued, send them to gossip_nodes random peers this often, in
        addition to piggybacking on probes. Fresh news on an idle peer goes out at once;
        the interval only spaces the following rounds. Shorter spreads news faster under
        loss; 0 disables gossip rounds.""", "s")
    gossip_nodes: int = _doc(3, """
        Peers each gossip round goes to, at least. The fanout rises to
        ceil(0.75 * retransmit limit), so three quarters of each update's fixed retransmit
        budget go out in its first round: the same number of packets, and a first wave that
        reaches nearly every peer. More spreads faster at more packets.""")
    push_pull_interval: float = _doc(30.0, """
        Full state exchange with one random peer over TCP, for anti-entropy. Scaled up for
        clusters above 32 peers (as memberlist does) to keep the load bounded. Shorter
        repairs missed updates sooner; each exchange carries the whole table.""", "s")
    reconnect_interval: float = _doc(10.0, """
        How often to attempt a push-pull with one peer believed dead. This is how the two
        halves of a healed partition find each other again without any manual step.""", "s")
    awareness_max_multiplier: int = _doc(8, """
        Ceiling of Lifeguard's local health score: probe_interval and probe_timeout are
        multiplied by (score + 1) while this peer misses acks or nacks, so a slow peer slows
        its own judgement instead of accusing healthy peers.""")
    dead_retention: float = _doc(3600.0, """
        Dead and left members stay in the table (and in push-pull) this long before they are
        forgotten. Keeps stale gossip from resurrecting them; longer costs memory and table
        size.""", "s")

    def __post_init__(self) -> None:
        errors = [msg for ok, msg in network_checks(self) + peer_checks(self) if not ok]
        if errors:
            raise ConfigError("invalid Config: " + "; ".join(errors))

    def worker_count(self) -> int:
        """The worker processes a peer of this config runs: ``workers``, or one per CPU."""
        return self.workers if self.workers is not None else (os.cpu_count() or 1)

    # --- presets --------------------------------------------------------------------------

    @classmethod
    def lan(cls, **changes: Any) -> Self:
        """The default: peers on one LAN segment, sub-millisecond to few-millisecond links."""
        return cls(**changes)

    @classmethod
    def local(cls, **changes: Any) -> Self:
        """Every peer on this machine, over loopback: tighter timeouts, no exposure."""
        base: dict[str, Any] = {
            "bind_address": "127.0.0.1", "handshake_timeout": 1.0,
            "probe_interval": 0.2, "probe_timeout": 0.1, "suspicion_mult": 3,
            "gossip_interval": 0.1, "push_pull_interval": 15.0, "reconnect_interval": 5.0,
            "steal_timeout": 0.4, "lease_timeout": 5.0,
        }
        return cls(**(base | changes))

    # --- loading --------------------------------------------------------------------------

    @classmethod
    def load(cls, *, preset: str = "lan", toml: str | Path | None = None,
             environ: Mapping[str, str] | None = None, **changes: Any) -> Self:
        """The preset, then the TOML file, then ``P2PCLUSTER_*`` variables, then ``changes``."""
        presets = {"lan": cls.lan, "local": cls.local}
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
        config = presets[preset]()
        if toml is not None:
            config = config.with_toml(toml)
        config = config.with_env(os.environ if environ is None else environ)
        return dataclasses.replace(config, **changes) if changes else config

    def with_env(self, environ: Mapping[str, str]) -> Self:
        """A copy with every ``P2PCLUSTER_<FIELD>`` variable of ``environ`` applied."""
        changes = {}
        for f in dataclasses.fields(self):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                changes[f.name] = parse_text(f.name, _hints()[f.name], raw)
        return dataclasses.replace(self, **changes)

    def with_toml(self, path: str | Path) -> Self:
        """A copy with the keys of a TOML file applied (top level or a [p2pcluster] table)."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        data = data.get("p2pcluster", data)
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {unknown}; valid keys: {sorted(known)}")
        changes = {k: check_value(k, _hints()[k], v) for k, v in data.items()}
        return dataclasses.replace(self, **changes)

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any, str, str]]:
        """(name, type, default, unit, doc) for every field, in declaration order."""
        hints = _hints()
        return [(f.name, type_name(hints[f.name]), f.default, f.metadata["unit"],
                 f.metadata["doc"]) for f in dataclasses.fields(cls)]


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def render_markdown() -> str:
    """docs/config.md, generated from the field docs."""
    lines = ["# Configuration reference", "",
             "Generated from `p2pcluster/_config.py` by `python scripts/gen_config_docs.py`.",
             "Every field can be set in a TOML file (top level or a `[p2pcluster]` table), or",
             "by an environment variable `P2PCLUSTER_<FIELD>` (upper case).", ""]
    lan, local = Config.lan(), Config.local()
    for name, kind, default, unit, doc in Config.describe():
        lines.append(f"## `{name}`: {kind}" + (f" ({unit})" if unit else ""))
        lines.append("")
        lines.append(doc)
        lines.append("")
        lines.append(f"Default (LAN): `{getattr(lan, name)!r}`. Local preset: "
                     f"`{getattr(local, name)!r}`." if getattr(lan, name) != getattr(local, name)
                     else f"Default: `{default!r}`.")
        lines.append("")
    return "\n".join(lines)
