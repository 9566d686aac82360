"""What must hold of a :class:`~._config.Config`'s fields, checked when one is made: a
list of (holds, what must hold) per group of fields."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["network_checks", "peer_checks"]


def network_checks(config: Config) -> list[tuple[bool, str]]:
    """(holds, what must hold) for the wire and membership fields."""
    return [
        (bool(config.cluster) and len(config.cluster.encode()) <= 63,
         "cluster must be 1 to 63 bytes"),
        (0 <= config.port <= 65535, "port must be 0..65535"),
        (512 <= config.max_datagram_size <= 1400, "max_datagram_size must be 512..1400"),
        (64 * 1024 <= config.max_frame_size <= 2**31, "max_frame_size must be 64 KiB..2 GiB"),
        (config.stream_cipher in ("auto", "aes-256-gcm", "chacha20-poly1305"),
         'stream_cipher must be "auto", "aes-256-gcm" or "chacha20-poly1305"'),
        (config.replay_window > 0, "replay_window must be positive"),
        (config.replay_cache_size >= 1000, "replay_cache_size must be at least 1000"),
        (config.handshake_timeout > 0, "handshake_timeout must be positive"),
        (0 < config.hello_timeout <= config.handshake_timeout,
         "hello_timeout must be positive and at most handshake_timeout"),
        (1 <= config.max_handshakes_per_host <= config.max_handshakes,
         "max_handshakes_per_host must be 1..max_handshakes"),
        (0 < config.probe_timeout < config.probe_interval,
         "probe_timeout must be positive and below probe_interval"),
        (config.indirect_checks >= 0, "indirect_checks must not be negative"),
        (config.suspicion_mult >= 1, "suspicion_mult must be at least 1"),
        (config.suspicion_max_timeout_mult >= 1, "suspicion_max_timeout_mult must be >= 1"),
        (config.retransmit_mult >= 1, "retransmit_mult must be at least 1"),
        (config.gossip_interval >= 0 and config.gossip_nodes >= 0,
         "gossip_interval and gossip_nodes must not be negative"),
        (config.push_pull_interval > 0, "push_pull_interval must be positive"),
        (config.reconnect_interval > 0, "reconnect_interval must be positive"),
        (0 <= config.awareness_max_multiplier <= 64, "awareness_max_multiplier: 0..64"),
        (config.dead_retention > 0, "dead_retention must be positive"),
    ]


def peer_checks(config: Config) -> list[tuple[bool, str]]:
    """(holds, what must hold) for the peer's name, workers and work fields."""
    return [
        (config.node_name is None or 0 < len(config.node_name.encode()) <= 255,
         "node_name must be 1 to 255 bytes"),
        (config.node_name is None or config.node_name.isprintable(),
         f"node_name {config.node_name!r} must be printable: no control characters such as "
         "a newline or a tab"),
        (config.workers is None or config.workers >= 0, "workers must not be negative"),
        (1024 <= config.max_value_size <= 2**62, "max_value_size must be 1 KiB..2^62 bytes"),
        (1024 <= config.inline_value_size <= config.max_frame_size // 4,
         "inline_value_size must be 1 KiB..max_frame_size / 4"),
        (config.steal_timeout > 0, "steal_timeout must be positive"),
        (0 < config.report_interval < config.lease_timeout,
         "report_interval must be positive and below lease_timeout"),
        (config.batch_target > 0 and config.max_batch >= 1,
         "batch_target must be positive and max_batch at least 1"),
        (config.max_batch_time >= config.batch_target,
         "max_batch_time must be at least batch_target"),
        (config.batches_per_worker in (1, 2), "batches_per_worker must be 1 or 2"),
        (config.meta_interval >= 0, "meta_interval must not be negative"),
        (min(config.usage_interval, config.task_history) >= 0 < config.activity_timeout,
         "usage_interval, task_history must not be negative, activity_timeout positive"),
        (config.dashboard == "" or _host_port(config.dashboard),
         f"dashboard {config.dashboard!r} must be HOST:PORT (port 0..65535), or empty"),
        (config.auto_include_limit >= 0, "auto_include_limit must not be negative"),
        (config.versions_ttl > 0, "versions_ttl must be positive"),
    ]


def _host_port(text: str) -> bool:
    """``HOST:PORT`` (an IPv6 host in brackets), with a port number of 0..65535."""
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and int(port) <= 65535
