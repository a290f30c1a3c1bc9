"""When an execution may start on an allocation, and when it is warned before the allocation ends.

Pure decisions (tests/unit/test_walltime.py), so the controller and every allocation backend apply the
same rules: an execution whose ``timeout`` cannot fit in what is left of an allocation does not start
there, unless it checkpoints; a checkpointing one is sent its signal ``grace`` before the end, early
enough that the SIGKILL after the grace comes before the scheduler's own kill at the walltime.
"""
from __future__ import annotations

import signal as _signal

from orchestra.checkpoint import CheckpointPolicy

# Seconds the warning comes before ``end - grace``: the provider's time left is known to the second
# (squeue's %L, a ready file's start), read once per poll interval, and the kill must land first.
SLACK = 5.0


def need(timeout: float | None, checkpoint: CheckpointPolicy | None, walltime: float | None,
         margin: float = 0.0) -> float | None:
    """Seconds of allocation an execution must find left to start; None: any slot will do.

    A checkpointing execution needs room to make progress before its warning (as long as its grace),
    the grace itself, and the slack; one that does not checkpoint needs its whole timeout. A need no
    fresh allocation can meet (``walltime - margin``) is no constraint: such an execution runs on any
    slot, as before this rule, rather than wait for allocations that never suffice (a timeout set as a
    safety bound longer than the walltime is common)."""
    if checkpoint is not None:
        wanted = 2 * checkpoint.grace + SLACK
    elif timeout is not None:
        wanted = timeout
    else:
        return None
    if walltime is not None and wanted > walltime - margin:
        return None
    return wanted


def fits(wanted: float | None, expires: float | None, now: float) -> bool:
    """Whether a slot whose allocation ends at ``expires`` (None: never) has ``wanted`` seconds left."""
    return wanted is None or expires is None or expires - now >= wanted


def warning_at(expires: float, grace: float) -> float:
    """When the checkpoint signal goes out for an allocation that ends at ``expires``."""
    return expires - grace - SLACK


def signal_name(number: int) -> str:
    """``USR1`` for SIGUSR1: what `kill -NAME` takes in any POSIX shell (numbers differ between systems)."""
    return _signal.Signals(number).name[3:]


__all__ = ["SLACK", "fits", "need", "signal_name", "warning_at"]
