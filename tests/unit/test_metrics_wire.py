"""The wire's families of /metrics, from a peer's WireStatistics."""

from __future__ import annotations

from p2pcluster._metrics import _wire_families
from p2pcluster._secure import WireStatistics


def test_streams_are_counted_by_cipher() -> None:
    wire = WireStatistics(streams_opened=3, streams_accepted=2, streams_aes_gcm=4)
    families = {name: samples for name, _, _, samples in _wire_families(wire)}
    assert families["p2pcluster_streams_total"] == [
        ({"cipher": "aes-256-gcm"}, 4), ({"cipher": "chacha20-poly1305"}, 1)]
