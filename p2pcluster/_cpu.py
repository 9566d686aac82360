"""What this machine's CPU can do, as far as the choice of stream cipher cares."""

from __future__ import annotations

import functools
import platform

__all__ = ["cpu_has_aes"]


@functools.cache
def cpu_has_aes() -> bool:
    """Whether this CPU has AES instructions (x86 AES-NI, the ARMv8 AES extension), which
    make AES-256-GCM cheaper than ChaCha20-Poly1305. On Linux, from the ``aes`` flag in
    ``/proc/cpuinfo``; elsewhere, assumed for x86-64 and 64-bit ARM (every Mac and almost
    every PC they run on has them). A wrong answer costs speed, never safety."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                name, _, value = line.partition(":")
                if name.strip().lower() in ("flags", "features"):
                    return "aes" in value.split()
    except OSError:
        pass
    return platform.machine().lower() in ("x86_64", "amd64", "arm64", "aarch64")
