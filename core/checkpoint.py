"""The manifest's ``checkpoint:`` key: how an execution that outlives an allocation is warned and resumed.

An execution that declares it gets ``ORCHESTRA_CHECKPOINT_DIR`` (a directory that survives its attempts),
is sent ``signal`` ``grace`` seconds before its allocation ends (then SIGKILL once the grace has passed),
and may start on an allocation with less time left than its ``timeout``: it resumes from the directory on
the next one. ``every`` is how often a checkpoint directory on a place that does not share its filesystem
with the controller is copied back, so a lost node loses at most that much.
"""
from __future__ import annotations

import dataclasses
import signal as _signal
from collections.abc import Mapping
from typing import Any

from .durations import parse_duration

# What a checkpointing program may be warned with: USR1/USR2 (submitit's and Slurm's habit), TERM, INT.
SIGNALS = ("USR1", "USR2", "TERM", "INT")
DEFAULT_GRACE = 300.0


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
    signal: str = "USR1"
    grace: float = DEFAULT_GRACE  # seconds between the signal and SIGKILL
    every: float | None = None  # seconds between copies back; None: only between attempts

    @property
    def signal_number(self) -> int:
        return int(getattr(_signal, "SIG" + self.signal))


def parse_checkpoint(data: Mapping[str, Any]) -> tuple[CheckpointPolicy | None, list[tuple[list[str], str, str | None]]]:
    """The policy of a schema-valid ``checkpoint:`` mapping, or the problems: (path below it, message, hint)."""
    problems: list[tuple[list[str], str, str | None]] = []
    name = str(data.get("signal", "USR1")).upper()
    name = name[3:] if name.startswith("SIG") else name
    if name not in SIGNALS:
        problems.append((["signal"], f"checkpoint.signal: {data.get('signal')!r} is not a signal a checkpoint "
                                     f"warning can use", f"one of {', '.join(SIGNALS)}"))
    durations: dict[str, float | None] = {"grace": DEFAULT_GRACE, "every": None}
    for key in durations:
        if key not in data:
            continue
        try:
            durations[key] = parse_duration(data[key])
        except ValueError as exc:
            problems.append(([key], f"checkpoint.{key}: {exc}", None))
            continue
        if (durations[key] or 0.0) <= 0:
            problems.append(([key], f"checkpoint.{key}: must be longer than 0 seconds", "for example 5m"))
    if problems:
        return None, problems
    grace = durations["grace"]
    assert grace is not None
    return CheckpointPolicy(signal=name, grace=grace, every=durations["every"]), []


__all__ = ["CheckpointPolicy", "DEFAULT_GRACE", "SIGNALS", "parse_checkpoint"]
