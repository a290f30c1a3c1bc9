"""What the report says about resources: GPU lanes (one per device per node, each execution drawn on the
devices it held, fractions stacked) and how busy the cores and GPUs were.

Pure functions of the records (computation apart from rendering, so each is tested directly). Records
carry what an execution was given (``cores: "0-3"``, ``gpus: "0,1"``, ``gpu_share``), not what its node
offered, so the *allocated* side is what the campaign was seen to hold: on each node, the devices (cores)
its executions were bound to, from the first start to the last end of an execution bound there. A device
that no execution ever used is not counted; the caption says so.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections import defaultdict
from collections.abc import Sequence

from orchestra.execution import ExecutionRecord

from . import svg
from .fmt import esc, parse_time, state_class
from .plots import Plot
from .svg import LinearScale, f1

_TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
               86400, 172800, 604800, 2592000]


@dataclasses.dataclass(frozen=True)
class DeviceUse:
    """One execution on one device: ``share`` of it (1 for a whole device), from ``start`` to ``end``
    (epoch seconds); ``index`` is the execution's index in the report (``data-i``)."""

    node: str
    device: str
    start: float
    end: float
    share: float
    index: int


@dataclasses.dataclass(frozen=True)
class Busy:
    """Busy resource-seconds (share-weighted) out of allocated resource-seconds, for GPUs and for cores."""

    gpu_busy: float
    gpu_allocated: float
    core_busy: float
    core_allocated: float
    nodes: int
    devices: int
    cores: int

    @staticmethod
    def ratio(busy: float, allocated: float) -> float | None:
        return busy / allocated if allocated > 0 else None


def interval(r: ExecutionRecord, now: _dt.datetime | None) -> tuple[float, float] | None:
    """When it held its binding: start to end (or now, while running); None if it never started."""
    start = parse_time(r.started)
    if start is None:
        return None
    end = parse_time(r.ended)
    if end is None and isinstance(r.duration, (int, float)) and not isinstance(r.duration, bool) \
            and math.isfinite(r.duration):
        end = start + _dt.timedelta(seconds=float(r.duration))
    if end is None and r.state == "running" and now is not None:
        end = now
    if end is None or end < start:
        end = start
    return start.timestamp(), end.timestamp()


def node_of(r: ExecutionRecord) -> str:
    return str(r.node) if r.node else str(r.host) if r.host else "unknown host"


def parse_cores(text: str | None) -> tuple[int, ...]:
    """A record's ``cores`` (a kernel CPU list, ``0-3,8``) -> core numbers; () for none or a bad one."""
    if not text:
        return ()
    cores: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            cores.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        return ()
    return tuple(cores)


def device_ids(r: ExecutionRecord) -> tuple[str, ...]:
    return tuple(g.strip() for g in str(r.gpus).split(",") if g.strip()) if r.gpus else ()


def share_of(r: ExecutionRecord) -> float:
    """Of each of its devices: a fraction when it asked for one, else the whole device."""
    share = r.gpu_share
    if isinstance(share, (int, float)) and not isinstance(share, bool) and 0 < share <= 1:
        return float(share)
    return 1.0


def gpu_uses(records: Sequence[ExecutionRecord], generated: str) -> list[DeviceUse]:
    now = parse_time(generated)
    uses: list[DeviceUse] = []
    for i, r in enumerate(records):
        devices = device_ids(r)
        span = interval(r, now) if devices else None
        if span is None:
            continue
        share = share_of(r)
        uses.extend(DeviceUse(node_of(r), d, span[0], span[1], share, i) for d in devices)
    return uses


def busy(records: Sequence[ExecutionRecord], generated: str) -> Busy:
    """Busy GPU-seconds (each execution's devices × its share × its time) out of allocated GPU-seconds
    (each node's devices seen × that node's span); the same for cores. Only bound executions count."""
    now = parse_time(generated)
    spans: dict[str, list[float]] = {}
    devices: dict[str, set[str]] = defaultdict(set)
    cores: dict[str, set[int]] = defaultdict(set)
    gpu_busy = core_busy = 0.0
    for r in records:
        if r.cores is None and not r.gpus:
            continue  # not placed by resources: nothing says what it held
        span = interval(r, now)
        if span is None:
            continue
        node = node_of(r)
        seconds = span[1] - span[0]
        lo_hi = spans.setdefault(node, [span[0], span[1]])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], span[0]), max(lo_hi[1], span[1])
        ids = device_ids(r)
        devices[node].update(ids)
        gpu_busy += len(ids) * share_of(r) * seconds
        held = parse_cores(r.cores)
        cores[node].update(held)
        core_busy += len(held) * seconds
    gpu_allocated = sum(len(devices[n]) * (b - a) for n, (a, b) in spans.items())
    core_allocated = sum(len(cores[n]) * (b - a) for n, (a, b) in spans.items())
    return Busy(gpu_busy, gpu_allocated, core_busy, core_allocated, len(spans),
                sum(len(d) for d in devices.values()), sum(len(c) for c in cores.values()))


def stack(uses: Sequence[DeviceUse]) -> list[float]:
    """The vertical offset (0..1 of the lane) of each use on ONE device: first fit among the offsets left
    free by the uses that overlap it in time, so four quarter-GPU executions sit as four strips."""
    order = sorted(range(len(uses)), key=lambda k: (uses[k].start, -uses[k].share, uses[k].index))
    offsets = [0.0] * len(uses)
    placed: list[int] = []
    for k in order:
        u = uses[k]
        taken = sorted((offsets[j], offsets[j] + uses[j].share) for j in placed
                       if uses[j].start < u.end and u.start < uses[j].end)
        offset = 0.0
        for lo, hi in taken:
            if offset + u.share <= lo + 1e-9:
                break
            offset = max(offset, hi)
        offsets[k] = min(offset, max(0.0, 1.0 - u.share))  # never drawn outside its lane
        placed.append(k)
    return offsets


def _lane_key(lane: tuple[str, str]) -> tuple[str, int, str]:
    node, device = lane
    return (node, int(device), device) if device.isdigit() else (node, 1 << 30, device)


def gpu_lanes_plot(records: Sequence[ExecutionRecord], generated: str, width: int = svg.WIDE) -> Plot | None:
    """One lane per GPU per node; each execution a bar on each device it held, a fraction a strip of its
    height (class ``frac``) stacked with the others sharing the device. None when no execution had a GPU."""
    uses = gpu_uses(records, generated)
    if not uses:
        return None
    lanes = sorted({(u.node, u.device) for u in uses}, key=_lane_key)
    lane_index = {lane: k for k, lane in enumerate(lanes)}
    lane_h = max(6.0, min(28.0, 520.0 / len(lanes)))
    left, top = 150, 10
    h = int(top + lane_h * len(lanes) + 44)
    t0 = min(u.start for u in uses)
    span = max(max(u.end for u in uses) - t0, 1.0)
    xs = LinearScale(t0, t0 + span * 1.02, left, width - svg.MARGIN_RIGHT)
    step = next((s for s in _TIME_STEPS if span / s <= 8), _TIME_STEPS[-1])
    fmt = "%H:%M:%S" if step < 60 else ("%H:%M" if step < 86400 else "%m-%d")
    y_bottom = top + lane_h * len(lanes)
    shown = len({u.index for u in uses})
    parts = [svg.open_svg("GPU lanes: executions on the devices they held", "gpu-lanes", shown, height=h,
                          width=width, marks=len(uses)), '<g class="axis">']
    tick = math.ceil(t0 / step) * step
    while tick <= t0 + span * 1.02:
        x = xs(tick)
        label = _dt.datetime.fromtimestamp(tick, _dt.timezone.utc).strftime(fmt)
        parts.append(f'<line class="grid" x1="{f1(x)}" y1="{top}" x2="{f1(x)}" y2="{f1(y_bottom)}"/>'
                     f'<text x="{f1(x)}" y="{f1(y_bottom + 16)}" text-anchor="middle">{label}</text>')
        tick += step
    parts.append(f'<text class="label" x="{f1((left + width) / 2)}" y="{f1(y_bottom + 36)}" '
                 'text-anchor="middle">time (UTC)</text></g><g class="axis lanes">')
    for (node, device), k in lane_index.items():
        y = top + k * lane_h
        parts.append(f'<line class="grid" x1="{left}" y1="{f1(y + lane_h)}" x2="{width - svg.MARGIN_RIGHT}" '
                     f'y2="{f1(y + lane_h)}"/>')
        if lane_h >= 9:
            parts.append(f'<text x="{left - 8}" y="{f1(y + lane_h / 2 + 4)}" text-anchor="end">'
                         f'{esc(svg.clip(f"{node} · GPU {device}", 24))}</text>')
    parts.append('</g><g class="bars">')
    by_lane: dict[tuple[str, str], list[DeviceUse]] = defaultdict(list)
    for u in uses:
        by_lane[(u.node, u.device)].append(u)
    state_of = {i: state_class(r.state) for i, r in enumerate(records)}
    inner = lane_h - 2
    for lane, lane_uses in by_lane.items():
        y0 = top + lane_index[lane] * lane_h + 1
        for u, offset in zip(lane_uses, stack(lane_uses)):
            x = xs(u.start)
            frac = u.share < 1
            parts.append(f'<rect class="bar s-{state_of[u.index]}{" frac" if frac else ""}" x="{f1(x)}" '
                         f'y="{f1(y0 + offset * inner)}" width="{f1(max(xs(u.end) - x, 1.5))}" '
                         f'height="{f1(max(u.share * inner - (0.6 if frac else 0), 0.8))}" data-i="{u.index}"'
                         + (f' data-share="{u.share:g}"' if frac else "") + "/>")
    parts.append("</g></svg>")
    return Plot("gpu-lanes", "GPU lanes", "".join(parts), shown)


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.3g}" if hours < 100 else f"{hours:,.0f}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def busy_card_html(b: Busy) -> str:
    """The overview's card; "" when no execution was placed by resources (nothing to say)."""
    if b.nodes == 0:
        return ""
    rows = []
    if b.gpu_allocated > 0:
        rows.append(f"<dt>GPUs</dt><dd><b>{_hours(b.gpu_busy)}</b> busy GPU-hours of {_hours(b.gpu_allocated)} "
                    f"allocated ({_percent(Busy.ratio(b.gpu_busy, b.gpu_allocated))}, {b.devices} devices)</dd>")
    if b.core_allocated > 0:
        rows.append(f"<dt>cores</dt><dd><b>{_hours(b.core_busy)}</b> busy core-hours of "
                    f"{_hours(b.core_allocated)} allocated ({_percent(Busy.ratio(b.core_busy, b.core_allocated))}, "
                    f"{b.cores} cores)</dd>")
    headline = Busy.ratio(b.gpu_busy, b.gpu_allocated) if b.gpu_allocated > 0 else \
        Busy.ratio(b.core_busy, b.core_allocated)
    return (f'<div class="card busy"><h2>Resources busy</h2><p class="big">{_percent(headline)}</p>'
            f'<dl class="kv">{"".join(rows)}</dl><p class="muted small">allocated: the devices and cores '
            f"executions were bound to on each of {b.nodes} node{'s' if b.nodes != 1 else ''}, from its first "
            "start to its last end; a fraction of a GPU counts its share</p></div>")


__all__ = ["Busy", "DeviceUse", "busy", "busy_card_html", "gpu_lanes_plot", "gpu_uses", "interval",
           "parse_cores", "stack"]
