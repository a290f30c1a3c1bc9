"""`expegit status`'s running section: how long each running execution has run and its latest metrics.

Reads only the running executions' metrics blobs (at most SHOWN of them, at their branch tips): status
stays as fast as the record cache makes it, whatever the number of finished executions.
"""
from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

from .gitstore import GitStore
from orchestra.execution import ExecutionRecord

from runaway.checkpoint_copy import read_stamp

from .metrics_stream import METRICS_PATH, describe_latest, parse_metrics_text

SHOWN = 10


def render_elapsed(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``, ``1d03h``: how long, at a glance (pure)."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _since(started: str | None, now: datetime.datetime) -> str:
    if not started:
        return "?"
    try:
        when = datetime.datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return render_elapsed((now - when).total_seconds())


def running_lines(store: GitStore, running: Sequence[ExecutionRecord], tips: Mapping[str, str],
                  now: datetime.datetime | None = None) -> list[str]:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    ordered = sorted(running, key=lambda r: r.started or "")
    lines = []
    for record in ordered[:SHOWN]:
        line = (f"  running {record.id} on {record.node or record.host} slot {record.slot} "
                f"for {_since(record.started, now)}")
        copied = read_stamp(store.git_dir / "orchestra", record.id)
        if copied is not None:  # its place shares no filesystem: what a lost node would fall back to
            line += f"  checkpoint copied {render_elapsed(now.timestamp() - copied.copied)} ago"
        tip = tips.get(record.id)
        raw = store.read_path(tip, METRICS_PATH) if tip else None
        if raw:
            latest = describe_latest(parse_metrics_text(raw))
            if latest:
                line += f"  {latest}"
        lines.append(line)
    if len(ordered) > SHOWN:
        lines.append(f"  ... and {len(ordered) - SHOWN} more running")
    return lines


__all__ = ["render_elapsed", "running_lines"]
