"""A port another program holds: the embedded Cluster and `p2pcluster join` say the same,
plain thing, not a raw ``OSError``."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pcluster import AddressInUse, Cluster, Config, P2PClusterError

ROOT = Path(__file__).resolve().parents[2]
SECRET = "GuR6eQZe3E1ItJBMaDy2lDNPYRd-8vW9mzOQgV1L2kM"


@pytest.fixture
def busy() -> Iterator[tuple[int, socket.socket]]:
    """A free port number whose UDP side a plain socket holds."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    yield holder.getsockname()[1], holder
    holder.close()


def embedded_error(port: int, monkeypatch: pytest.MonkeyPatch) -> P2PClusterError:
    monkeypatch.setenv("P2PCLUSTER_SECRET", SECRET)
    config = Config.local(port=port, mdns=False, interface="lo", workers=1)
    with pytest.raises(P2PClusterError) as info:
        Cluster(config, daemon=False)
    return info.value


def test_the_embedded_cluster_says_the_udp_port_is_taken(
        busy: tuple[int, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    port, _ = busy
    error = embedded_error(port, monkeypatch)
    assert isinstance(error, AddressInUse) and isinstance(error, OSError)
    assert error.errno == errno.EADDRINUSE
    assert str(error) == (
        f"UDP port {port} on 127.0.0.1 is already in use, by another p2pcluster peer or "
        "another program; choose another port (--port, P2PCLUSTER_PORT or Config.port)")


def test_a_taken_tcp_port_is_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        error = embedded_error(port, monkeypatch)
    assert isinstance(error, AddressInUse)
    assert str(error).startswith(f"TCP port {port} on 127.0.0.1 is already in use")


def test_join_prints_the_same_text(busy: tuple[int, socket.socket], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    port, _ = busy
    expected = str(embedded_error(port, monkeypatch))
    env = {**os.environ, "P2PCLUSTER_SECRET": SECRET, "XDG_RUNTIME_DIR": str(tmp_path),
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "p2pcluster", "join", "--preset", "local", "--no-mdns",
         "--interface", "lo", "--port", str(port)],
        env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == f"p2pcluster join: error: {expected}"
    assert "Traceback" not in done.stderr
