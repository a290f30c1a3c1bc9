"""The report's resource views: GPU lanes and busy/allocated hours, computed and rendered (pure)."""
from __future__ import annotations

import re
from typing import Any

from orchestra.execution import ExecutionRecord

from expegit.report import resources as R
from expegit.report.demo import HOSTILE, gpu_report, synthetic_report
from expegit.report.pages import overview_page, plots_page

SHA = "a" * 40


def rec(i: int, start: str, end: str, *, node: str = "n1", gpus: str | None = None, share: float | None = None,
        cores: str | None = "0", state: str = "finished") -> ExecutionRecord:
    return ExecutionRecord(id=f"{i:012x}", campaign="c", commit=SHA, command="x", parameters={}, profile="p",
                           state=state, host=node, slot=0, started=f"2024-05-01T{start}Z",
                           ended=f"2024-05-01T{end}Z" if end else None, cores=cores, gpus=gpus, gpu_share=share)


def test_busy_counts_shares_over_the_devices_each_node_held() -> None:
    records = [rec(1, "08:00:00", "09:00:00", gpus="0", cores="0-1"),
               rec(2, "08:00:00", "09:00:00", gpus="1", share=0.25, cores="2")]
    b = R.busy(records, "2024-05-01T10:00:00Z")
    assert b.gpu_busy == 3600 + 900
    assert b.gpu_allocated == 2 * 3600  # devices 0 and 1, the node's span of one hour
    assert b.core_busy == 3 * 3600 and b.core_allocated == 3 * 3600
    assert (b.nodes, b.devices, b.cores) == (1, 2, 3)


def test_busy_spans_are_per_node_and_unbound_executions_do_not_count() -> None:
    records = [rec(1, "08:00:00", "08:30:00", node="a", gpus="0"),
               rec(2, "09:00:00", "10:00:00", node="b", gpus="0,1"),
               rec(3, "08:00:00", "12:00:00", node="a", cores=None)]  # declared no resources
    b = R.busy(records, "2024-05-01T12:00:00Z")
    assert b.gpu_busy == 1800 + 2 * 3600
    assert b.gpu_allocated == 1800 + 2 * 3600  # node a: 30 min of 1 device; node b: 1 h of 2
    assert R.Busy.ratio(b.gpu_busy, b.gpu_allocated) == 1.0


def test_a_running_execution_is_busy_until_the_report_was_generated() -> None:
    b = R.busy([rec(1, "08:00:00", "", gpus="0", state="running")], "2024-05-01T08:10:00Z")
    assert b.gpu_busy == 600 == b.gpu_allocated


def test_no_bound_execution_says_nothing() -> None:
    b = R.busy([rec(1, "08:00:00", "09:00:00", cores=None)], "2024-05-01T10:00:00Z")
    assert b.nodes == 0 and R.busy_card_html(b) == ""
    assert R.gpu_lanes_plot([rec(1, "08:00:00", "09:00:00")], "2024-05-01T10:00:00Z") is None


def test_parse_cores_reads_kernel_cpu_lists() -> None:
    assert R.parse_cores("0-3,8,10-11") == (0, 1, 2, 3, 8, 10, 11)
    assert R.parse_cores("") == () and R.parse_cores(None) == () and R.parse_cores("x-y") == ()


def use(start: float, end: float, share: float, index: int) -> R.DeviceUse:
    return R.DeviceUse("n", "0", start, end, share, index)


def test_stack_puts_overlapping_quarters_in_four_strips_and_later_ones_back_at_the_bottom() -> None:
    quarters = [use(0, 10, 0.25, k) for k in range(4)]
    assert sorted(R.stack(quarters)) == [0.0, 0.25, 0.5, 0.75]
    assert R.stack([use(0, 10, 0.5, 0), use(10, 20, 0.5, 1)]) == [0.0, 0.0]
    # wider first at one start; a half arriving once the quarter ended takes the room the quarter left
    assert R.stack([use(0, 5, 0.25, 0), use(0, 20, 0.5, 1), use(6, 20, 0.5, 2)]) == [0.5, 0.0, 0.5]


def test_stack_never_overlaps_shares_of_a_packed_campaign() -> None:
    data = gpu_report(40)
    uses = R.gpu_uses([v.record for v in data.executions], data.generated)
    lanes: dict[tuple[str, str], list[R.DeviceUse]] = {}
    for u in uses:
        lanes.setdefault((u.node, u.device), []).append(u)
    for lane_uses in lanes.values():
        offsets = R.stack(lane_uses)
        for a in range(len(lane_uses)):
            for b in range(a + 1, len(lane_uses)):
                ua, ub = lane_uses[a], lane_uses[b]
                if ua.start < ub.end and ub.start < ua.end:  # at the same time on one device
                    assert ua.share + ub.share <= 1 + 1e-9
                    assert offsets[a] + ua.share <= offsets[b] + 1e-9 or offsets[b] + ub.share <= offsets[a] + 1e-9


def test_gpu_lanes_plot_has_a_lane_per_device_per_node_and_a_bar_per_device_held() -> None:
    records = [rec(1, "08:00:00", "09:00:00", gpus="0,1"), rec(2, "08:00:00", "08:30:00", gpus="2", share=0.5),
               rec(3, "08:10:00", "08:40:00", node="n2", gpus="0", share=0.5)]
    plot = R.gpu_lanes_plot(records, "2024-05-01T10:00:00Z")
    assert plot is not None and plot.kind == "gpu-lanes" and plot.points == 3
    lanes = re.findall(r'<text x="\d+" y="[\d.]+" text-anchor="end">([^<]*)</text>', plot.svg)
    assert lanes == ["n1 · GPU 0", "n1 · GPU 1", "n1 · GPU 2", "n2 · GPU 0"]
    bars = re.findall(r'<rect class="bar ([^"]*)"[^>]*data-i="(\d+)"', plot.svg)
    assert sorted(i for _c, i in bars) == ["0", "0", "1", "2"]
    assert [c for c, i in bars if i != "0"] == ["s-finished frac", "s-finished frac"]
    assert plot.svg.count('data-share="0.5"') == 2


def test_gpu_lane_names_are_escaped() -> None:
    plot = R.gpu_lanes_plot([rec(1, "08:00:00", "09:00:00", node=HOSTILE, gpus="0")], "2024-05-01T10:00:00Z")
    assert plot is not None and "<script>" not in plot.svg and "&lt;script&gt;" in plot.svg


def test_busy_card_says_gpu_and_core_hours() -> None:
    records = [rec(1, "08:00:00", "09:00:00", gpus="0", cores="0-1"), rec(2, "08:00:00", "08:30:00", gpus="1")]
    html = R.busy_card_html(R.busy(records, "2024-05-01T10:00:00Z"))
    assert "<b>1.5</b> busy GPU-hours of 2 allocated (75%, 2 devices)" in html
    assert "busy core-hours" in html and '<p class="big">75%</p>' in html


def pages(data: Any) -> tuple[str, str]:
    return overview_page(data, [f"e/{k}.html" for k in range(len(data.executions))]), plots_page(data)


def test_the_overview_and_plots_pages_show_them_only_for_campaigns_placed_by_resources() -> None:
    overview, plots = pages(gpu_report())
    assert "Resources busy" in overview and "busy GPU-hours" in overview
    assert 'data-plot="gpu-lanes"' in plots and "GPU lanes" in plots
    overview, plots = pages(synthetic_report(30))
    assert "Resources busy" not in overview and 'data-plot="gpu-lanes"' not in plots


def test_export_rows_carry_what_an_execution_got() -> None:
    import csv
    import io

    from expegit.listing import write_export

    records = [rec(1, "08:00:00", "09:00:00", gpus="2", share=0.25, cores="4-5"),
               rec(2, "08:00:00", "09:00:00", cores=None)]
    out = io.StringIO()
    write_export(records, out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert (rows[0]["cores"], rows[0]["gpus"], rows[0]["gpu_share"]) == ("4-5", "2", "0.25")
    assert (rows[1]["cores"], rows[1]["gpus"], rows[1]["memory_limit"]) == ("", "", "")
