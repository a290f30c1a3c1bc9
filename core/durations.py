"""Durations as users write them, and as Slurm reads and writes them: the project's one duration parser.

Two notations are accepted wherever a duration is (``timeout:``, ``allocation.walltime``, ``--timeout``):

* units: ``90s``, ``30m``, ``2h``, ``1h30m``, ``1d``, and a plain number, which is seconds;
* Slurm's clock notation, with Slurm's meanings (``sbatch --time``): ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
  ``D-HH:MM``, ``D-HH:MM:SS``. So ``30:00`` is 30 minutes, and ``1-12`` a day and a half.

The one Slurm form read differently is a bare number: Slurm reads ``30`` as minutes, Orchestra as seconds
(what the README always documented, and what ``timeout: 30`` has meant in every manifest). That is why
:func:`render_slurm_time` never writes a bare number, and why :func:`parse_slurm_time` (Slurm's own
output, e.g. ``squeue``'s time left) is a separate entry point that does read it as minutes.
"""
from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Like Slurm, fields after the first may overflow (``90:75`` is 91 minutes 15 seconds): sbatch accepts them.
_DAYS = re.compile(r"(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?")  # D-HH, D-HH:MM, D-HH:MM:SS
_CLOCK = re.compile(r"(\d+):(\d+)(?::(\d+))?")  # MM:SS, HH:MM:SS
_UNLIMITED = ("UNLIMITED", "INFINITE", "NOT_SET", "INVALID", "N/A")
ACCEPTED = ("seconds (90), 90s, 30m, 2h, 1h30m, 1d, or Slurm's MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS "
            "(30:00 is 30 minutes)")


def _clock_seconds(text: str) -> int | None:
    """Seconds of Slurm's clock notation (every form but the bare number), or None if it is not one."""
    days = _DAYS.fullmatch(text)
    if days:
        d, h, m, s = days.groups()
        return int(d) * 86400 + int(h) * 3600 + int(m or 0) * 60 + int(s or 0)
    clock = _CLOCK.fullmatch(text)
    if clock:
        first, second, third = clock.groups()
        if third is None:  # MM:SS
            return int(first) * 60 + int(second)
        return int(first) * 3600 + int(second) * 60 + int(third)  # HH:MM:SS
    return None


def _unit_seconds(text: str) -> float | None:
    """Seconds of ``1h30m``-style text, or None if it is not that."""
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if text[pos:match.start()].strip():
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        return None
    return total


def parse_duration(value: str | int | float) -> float:
    """Seconds, or ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean: write e.g. 30m")
    if isinstance(value, (int, float)):
        total = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        clock = _clock_seconds(text)
        if clock is not None:
            total = float(clock)
        elif _NUMBER.fullmatch(text):
            total = float(text)
        else:
            units = _unit_seconds(text)
            if units is None:
                raise ValueError(f"{value!r} is not a duration: write {ACCEPTED}")
            total = units
    else:
        raise ValueError(f"{value!r} is not a duration: write {ACCEPTED}")
    if not math.isfinite(total) or total <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return total


def parse_slurm_time(text: str) -> float | None:
    """Seconds of a time Slurm printed (``TimeLimit``, ``squeue``'s ``%L``), reading a bare number as
    minutes as Slurm does; None for UNLIMITED and the like. ValueError for anything else."""
    text = text.strip()
    if not text or text.upper() in _UNLIMITED:
        return None
    if text.isdigit():
        return float(int(text) * 60)
    clock = _clock_seconds(text)
    if clock is None:
        raise ValueError(f"{text!r} is not a Slurm time (D-HH:MM:SS, HH:MM:SS, MM:SS, D-HH or MM)")
    return float(clock)


def render_slurm_time(seconds: float) -> str:
    """``--time`` for sbatch: ``HH:MM:SS`` or ``D-HH:MM:SS``, whole seconds rounded up.

    Slurm itself rounds a limit up to whole minutes; never a bare number, which Slurm reads as minutes.
    """
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a Slurm time limit must be positive, got {seconds!r}")
    total = math.ceil(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


__all__ = ["ACCEPTED", "parse_duration", "parse_slurm_time", "render_slurm_time"]
