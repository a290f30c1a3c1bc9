"""Intermediate metrics: the line format (pure render/parse) and the controller's stream reader.

An execution reports values while it runs by appending JSON objects, one a line, to the file named by
``ORCHESTRA_METRICS`` (``<run dir>/.orchestra/metrics.jsonl``), or by printing lines that the manifest's
``metrics: {pattern: ...}`` (named groups) matches on stdout. Both end up on the branch as
``.orchestra/metrics.jsonl``: at the end (the whole file comes with the results), and while it runs at
most every ``metrics.every`` seconds (default 30), so that a crash of the controller loses little.

Exactly once, in order, across reconnections: the reader keeps, per execution, the byte offset of the
last COMPLETE line it consumed, and asks the place for what lies past it. A read that fails (a dropped
SSH connection, an sshd restart) advances nothing and is asked again at the next tick; a half-written
last line is left for the next read. The offset is the acknowledgement: nothing is consumed twice.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

METRICS_FILE = "metrics.jsonl"  # under the run directory's .orchestra/
METRICS_PATH = ".orchestra/" + METRICS_FILE  # on the branch, and relative to the run directory
DEFAULT_EVERY = 30.0  # seconds between commits of a running execution's metrics
MAX_LINE = 64 * 1024  # a longer "line" is not a metric (a binary dump): skipped, never kept in memory


# ------------------------------------------------------------------------------------------ pure format
def split_complete(buffer: bytes) -> tuple[list[bytes], int]:
    """The complete lines of ``buffer`` (newline-terminated) and how many bytes they span.

    Why only complete lines: the writer may be in the middle of one; consuming it would split a record
    in two and lose it. The rest is read again, from the returned offset, next time.
    """
    end = buffer.rfind(b"\n")
    if end < 0:
        return [], 0
    return buffer[:end].split(b"\n"), end + 1


def parse_metric_line(line: bytes | str) -> dict[str, Any] | None:
    """One metrics line as a dict, or None for a blank line, a non-object, non-JSON, or an oversized line.
    Non-finite numbers (NaN, Infinity, which Python's json writes by default) are dropped from the point:
    they are no value to plot, and strict JSON readers refuse them."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE:
            return None
        line = line.decode("utf-8", "replace")
    line = line.strip()
    if not line or len(line) > MAX_LINE:
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    return {str(k): v for k, v in value.items() if not (isinstance(v, float) and not math.isfinite(v))}


def parse_metrics_text(text: bytes | str) -> list[dict[str, Any]]:
    """Every point of a metrics stream, in order (bad lines skipped: a curve with a gap beats none)."""
    lines = text.split(b"\n") if isinstance(text, bytes) else text.splitlines()
    return [p for p in (parse_metric_line(line) for line in lines) if p is not None]


def render_metric_line(point: dict[str, Any]) -> str:
    """One point as its line (with the newline); the inverse of parse_metric_line. Strict JSON."""
    clean = {k: v for k, v in point.items() if not (isinstance(v, float) and not math.isfinite(v))}
    return json.dumps(clean, ensure_ascii=False, allow_nan=False, separators=(", ", ": ")) + "\n"


def render_metrics_text(points: Iterable[dict[str, Any]]) -> str:
    return "".join(render_metric_line(p) for p in points)


def _number(text: str) -> Any:
    """A captured value as an int or float where it reads as one (``10`` -> 10, ``3e-4`` -> 0.0003)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def parse_pattern_line(line: bytes | str, pattern: re.Pattern[str]) -> dict[str, Any] | None:
    """The named groups of ``pattern`` in one stdout line (numbers converted), or None if it does not match."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    found = pattern.search(line)
    if found is None:
        return None
    point = {name: _number(value) for name, value in found.groupdict().items() if value is not None}
    return point or None


def points_from_stdout(text: bytes | str, pattern: re.Pattern[str]) -> list[dict[str, Any]]:
    lines = text.split(b"\n") if isinstance(text, bytes) else text.splitlines()
    return [p for p in (parse_pattern_line(line, pattern) for line in lines) if p is not None]


def latest_values(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The last value of each key over a stream (what `expegit status` shows for a running execution)."""
    out: dict[str, Any] = {}
    for point in points:
        out.update(point)
    return out


def describe_latest(points: Sequence[dict[str, Any]], limit: int = 4) -> str:
    """``step=120 loss=0.31``: the latest values, numbers first, short."""
    latest = latest_values(points)
    shown = []
    for key, value in latest.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        shown.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
        if len(shown) >= limit:
            break
    return " ".join(shown)


# ----------------------------------------------------------------------------------- the stream state
class MetricsCursor:
    """What one execution's stream has delivered so far: points in order, and the offsets acknowledged
    (of the metrics file, and of stdout when a pattern reads it). Pure: the reading is done by the caller.
    """

    def __init__(self, pattern: re.Pattern[str] | None = None) -> None:
        self.pattern = pattern
        self.file_offset = 0
        self.stdout_offset = 0
        self.points: list[dict[str, Any]] = []
        self.delivered = 0  # points already committed

    def feed_file(self, chunk: bytes) -> list[dict[str, Any]]:
        """Bytes read from the metrics file at ``file_offset``: consumes its complete lines."""
        lines, used = split_complete(chunk)
        self.file_offset += used
        new = [p for p in (parse_metric_line(line) for line in lines) if p is not None]
        self.points.extend(new)
        return new

    def feed_stdout(self, chunk: bytes) -> list[dict[str, Any]]:
        """Bytes read from stdout at ``stdout_offset``: the pattern's points in its complete lines."""
        if self.pattern is None:
            return []
        lines, used = split_complete(chunk)
        self.stdout_offset += used
        new = [p for p in (parse_pattern_line(line, self.pattern) for line in lines) if p is not None]
        self.points.extend(new)
        return new

    def pending(self) -> bool:
        return len(self.points) > self.delivered


def final_points(metrics_file: bytes | None, stdout: bytes | None,
                 pattern: re.Pattern[str] | None) -> list[dict[str, Any]]:
    """An ended execution's whole stream: the file's points, then the pattern's points in stdout.

    Read from the collected results, not from what was streamed: the results are the exact bytes the
    execution left, so the final commit is right even when a stream read was missed."""
    points = parse_metrics_text(metrics_file) if metrics_file else []
    if pattern is not None and stdout:
        points += points_from_stdout(stdout, pattern)
    return points


__all__ = ["DEFAULT_EVERY", "METRICS_FILE", "METRICS_PATH", "MetricsCursor", "describe_latest", "final_points",
           "latest_values", "parse_metric_line", "parse_metrics_text", "parse_pattern_line", "points_from_stdout",
           "render_metric_line", "render_metrics_text", "split_complete"]
