"""Durations as users write them (90, "90s", "30m", "2h", "1h30m", "1d") and as Slurm wants them."""
from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?$")


def parse_duration(value: str | int | float) -> float:
    """Seconds, or ValueError with what is accepted."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return float(value)
    text = value.strip().lower()
    clock = _CLOCK.match(text)
    if clock:  # Slurm's [D-]HH:MM[:SS]
        days, hours, minutes, seconds = clock.groups()
        total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)
    elif re.fullmatch(r"\d+(?:\.\d+)?", text):
        total = float(text)
    else:
        pos, total = 0, 0.0
        for match in _PART.finditer(text):
            if text[pos:match.start()].strip():
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos == 0 or text[pos:].strip():
            raise ValueError(f"{value!r} is not a duration: write seconds or e.g. 90s, 30m, 2h, 1h30m, 1d, 04:00:00")
    if total <= 0:
        raise ValueError("a duration must be positive")
    return float(total)


def render_slurm_time(seconds: float) -> str:
    """Slurm's D-HH:MM:SS, rounded up to whole minutes' precision Slurm honours."""
    total = int(seconds + 0.999)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock
