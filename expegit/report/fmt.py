"""Small formatting helpers shared by pages and plots.

Every string that comes from a campaign (names, parameters, output, paths) passes through ``esc`` before it
reaches HTML or SVG; helpers here return already-escaped markup only when their name says ``html``.
"""
from __future__ import annotations

import datetime as _dt
import functools
import html
import math
import re
from typing import Any

from orchestra.execution import STATES

esc = html.escape  # quote=True by default: safe in text and in double-quoted attributes

_KNOWN_STATES = frozenset(STATES)
_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def state_class(state: Any) -> str:
    """A CSS class for a state; an unexpected value must never become markup, so it maps to 'unknown'."""
    return state if isinstance(state, str) and state in _KNOWN_STATES else "unknown"


def is_number(value: Any) -> bool:
    """True for finite ints/floats (not bools): what a numeric axis can place."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt_num(value: Any) -> str:
    """Numbers compact (6 significant digits), everything else as text; None becomes an empty string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.6g}"
    return str(value)


def fmt_duration(seconds: float | None) -> str:
    """Durations as a reader counts them: 0.4 s, 12.3 s, 4 m 05 s, 2 h 03 m, 3 d 04 h."""
    if seconds is None or not is_number(seconds):
        return ""
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} m {sec:02d} s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m:02d} m"
    d, h = divmod(h, 24)
    return f"{d} d {h:02d} h"


def parse_time(text: Any) -> _dt.datetime | None:
    """An aware UTC datetime from an ISO 8601 string, or None: a malformed time must not break a report."""
    if not isinstance(text, str) or not text:
        return None
    return _parse_time(text)


@functools.lru_cache(maxsize=1 << 16)  # the overview, the summary and the plots all read the same times
def _parse_time(text: str) -> _dt.datetime | None:
    try:
        value = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc)


def fmt_time(text: Any) -> str:
    """'2024-05-01 12:03:04 UTC', or the raw text when it is not a time we can read."""
    value = parse_time(text)
    if value is None:
        return "" if text is None else str(text)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def short_sha(sha: Any) -> str:
    return str(sha or "")[:10]


def params_text(parameters: Any) -> str:
    """'lr=0.001 layers=4': the compact form used in tables and tooltips."""
    if not isinstance(parameters, dict):
        return ""
    return " ".join(f"{k}={fmt_num(v)}" for k, v in parameters.items())


def clean_tail(text: str) -> str:
    """Terminal output as a terminal would show it: no ANSI codes, carriage-return updates collapsed.

    Progress bars rewrite one line with '\\r' thousands of times; only the last state of each line is
    worth showing. Control characters are dropped because HTML cannot show them anyway.
    """
    if not text:
        return ""
    text = _ANSI.sub("", text.replace("\r\n", "\n"))
    lines = [line.rsplit("\r", 1)[-1] if "\r" in line else line for line in text.split("\n")]
    return _CONTROL.sub("", "\n".join(lines))


def safe_page_name(execution_id: Any) -> str:
    """A file name for an execution's page: its id when that is harmless, else a digest of it.

    Ids are 12 hex digits by construction, but the renderer must not let a hand-edited record write
    outside the site (``../../x``) or produce a name the browser would misread.
    """
    text = str(execution_id)
    if re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}", text):
        return text
    import hashlib

    return "x" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
