"""One request to the peer running on this machine, for the commands that only ask it
something (`members`, `leave`, `secret --reload`), with the errors they print."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._errors import P2PClusterError

__all__ = ["ask_daemon", "local_control"]


def local_control(cluster: str | None, control: str | None) -> tuple[str, Path]:
    """The cluster name (option, else ``P2PCLUSTER_CLUSTER``, else default) and the path of
    its control socket (``--control``, else the usual place)."""
    from ._places import control_path

    name = cluster or os.environ.get("P2PCLUSTER_CLUSTER") or "default"
    return name, Path(control) if control else control_path(name)


def ask_daemon(cluster: str | None, control: str | None, op: str, **body: Any
               ) -> dict[str, Any]:
    """Run ``op`` on the local daemon and return its answer; :class:`NoDaemon` (a
    :class:`P2PClusterError` that says how to start one) if none runs."""
    import trio

    from ._control import NoDaemon
    from ._control_client import request_daemon

    name, path = local_control(cluster, control)
    try:
        return trio.run(lambda: request_daemon(path, op, **body))
    except NoDaemon:
        raise NoDaemon(
            f"no p2pcluster peer is running for cluster {name!r} on this machine (no "
            f"control socket at {path}); start one with `p2pcluster join`") from None
    except trio.TooSlowError:
        raise P2PClusterError(f"the peer at {path} did not answer within 10 s") from None
