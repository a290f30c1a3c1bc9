"""Slurm's hostlist syntax (``node[1-3,5]``): a pure parse and render, shared by the provider (squeue,
ready files) and by the resource parsers (``scontrol show job -d``), which the provider itself uses.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from orchestra.errors import SchedulerError


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets: ``a[1-2,4],b`` -> [``a[1-2,4]``, ``b``]."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SchedulerError(f"unbalanced ']' in node list {text!r}")
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SchedulerError(f"unbalanced '[' in node list {text!r}")
    out.append("".join(cur))
    return [p for p in (s.strip() for s in out) if p]


def _expand_range(body: str, whole: str) -> list[str]:
    values: list[str] = []
    for item in body.split(","):
        item = item.strip()
        if re.fullmatch(r"\d+", item):
            values.append(item)
            continue
        match = re.fullmatch(r"(\d+)-(\d+)(?::(\d+))?", item)
        if not match:
            raise SchedulerError(f"cannot parse range {item!r} in node list {whole!r}")
        lo, hi, step = match.group(1), match.group(2), int(match.group(3) or 1)
        if int(hi) < int(lo) or step < 1:
            raise SchedulerError(f"empty range {item!r} in node list {whole!r}")
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        values.extend(str(n).zfill(width) for n in range(int(lo), int(hi) + 1, step))
    return values


def parse_nodelist(text: str) -> list[str]:
    """Expand Slurm's hostlist syntax (``node[1-3,5]``, ``gpu[01-02]``, ``r[1-2]n[1-2]``, ``a,b``), in
    order, keeping zero padding; what ``scontrol show hostnames`` prints, without a round trip."""
    text = text.strip()
    if not text or text in ("(null)", "None assigned", "n/a"):
        return []
    nodes: list[str] = []
    for part in _split_top(text):
        pieces = re.split(r"(\[[^\]]*\])", part)
        choices = [_expand_range(p[1:-1], text) if p.startswith("[") else [p] for p in pieces if p != ""]
        if any(not c for c in choices):
            raise SchedulerError(f"cannot parse node list {text!r}")
        nodes.extend("".join(combo) for combo in itertools.product(*choices))
    return nodes


def render_nodelist(nodes: Iterable[str]) -> str:
    """A plain comma list (Slurm accepts it everywhere a hostlist is expected)."""
    return ",".join(nodes)


__all__ = ["parse_nodelist", "render_nodelist"]
