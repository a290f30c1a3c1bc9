"""Is a controller (an `expegit`/`parasearch` process of this machine) still alive, from its pid alone?

Shared by the registry of live controllers (expegit.runner) and the record of the allocations each
controller holds (runaway.allocation_ledger): both are files named by pid that a controller killed with
-9 leaves behind, and both must tell "its owner is gone" the same way.
"""
from __future__ import annotations

import os
from pathlib import Path

_CONTROLLER_WORDS = (b"expegit", b"parasearch", b"python")


def controller_alive(pid: int) -> bool:
    """True while ``pid`` runs and, where /proc tells, runs a controller (pids are reused)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours to judge
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        # Gone since the kill, or a system without /proc (macOS) where the pid is all there is to go by.
        return not Path("/proc/self").exists()
    return any(word in cmdline for word in _CONTROLLER_WORDS)


__all__ = ["controller_alive"]
