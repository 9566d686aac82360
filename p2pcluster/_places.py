"""Where p2pcluster keeps things on this machine that its processes must agree on.

Light on purpose: ``p2pcluster run`` asks it whether a daemon's control socket exists
before it imports anything of the control protocol or of an embedded peer.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["control_path"]


def control_path(cluster: str, environ: Mapping[str, str] | None = None) -> Path:
    """Where the control socket of ``cluster`` lives: ``$XDG_RUNTIME_DIR/p2pcluster/`` (or a
    directory of this user's under the temporary directory), named after the cluster."""
    env = os.environ if environ is None else environ
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cluster)
    runtime = env.get("XDG_RUNTIME_DIR")
    base = (Path(runtime) / "p2pcluster" if runtime
            else Path(tempfile.gettempdir()) / f"p2pcluster-{os.getuid()}")
    return base / f"{safe}.sock"
