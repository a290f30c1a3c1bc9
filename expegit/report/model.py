"""What the report renders: plain, frozen data handed over by the git layer.

The renderer never touches git. The caller (``expegit report``) reads the execution branches and builds a
``ReportData``; everything here is pure so the whole site can be rendered and checked in unit tests, and
so a server hook can render the same data without a working tree.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypedDict

from orchestra.execution import ExecutionRecord


class Objective(TypedDict):
    """The manifest's objective as the report needs it: which metric, and which way is better."""

    metric: str
    goal: Literal["minimize", "maximize"]


@dataclasses.dataclass(frozen=True)
class CommitInfo:
    """A code commit that executions ran; the subject tells a reader what changed without git."""

    sha: str
    subject: str
    author: str
    time: str


@dataclasses.dataclass(frozen=True)
class ExecutionView:
    """One execution as the report shows it.

    ``output_files`` maps a relative output path to its content. It may be any Mapping, including a lazy
    one, and it may be left empty when the caller passes ``load_outputs`` to ``write_report`` instead:
    for 10,000 executions the caller should not have to hold every output in memory at once.
    ``diffstat`` is what the execution's branch added: (path, size in bytes or lines added).
    ``metrics`` holds every number of the execution's metrics file (the objective's ``from``), not only the
    objective: the table and the plots offer each of them.
    """

    record: ExecutionRecord
    stdout_tail: str = ""
    stderr_tail: str = ""
    output_files: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    diffstat: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # Intermediate metrics (``.orchestra/metrics.jsonl``), read when the manifest declares ``metrics:``.
    curve: Sequence[Mapping[str, Any]] = ()


@dataclasses.dataclass(frozen=True)
class ReportData:
    """Everything one report shows. ``generated`` is an ISO 8601 UTC time (running executions end there).

    ``parameter_types`` are the manifest's declared kinds (``float``, ``int``, ``str``) by parameter name:
    a float parameter whose value happens to be whole (1.0) is still a float, which the value alone cannot
    tell once it is JSON in a browser.

    ``packages`` maps a package-list blob id (an environment's ``packages_blob`` or ``conda_blob``) to its
    parsed list ``{name: version}``, for the compare view: identical environments share one blob, so a
    campaign has a handful however many executions it holds. ``packages_left_out`` counts blobs beyond the
    cap that were not read (the page says so).
    """

    campaign: str
    objective: Objective | None
    generated: str
    commits: dict[str, CommitInfo]
    executions: list[ExecutionView]
    parameter_types: Mapping[str, str] = dataclasses.field(default_factory=dict)
    packages: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    packages_left_out: int = 0
    # Several objectives (`objective:` as a list; the first is ``objective``): the plots draw their front.
    objectives: Sequence[Objective] = ()


def objective_label(data: ReportData) -> tuple[str, str]:
    """(metric, goal) with defaults, so a campaign without a declared objective still labels its axes."""
    if data.objective:
        return str(data.objective.get("metric") or "objective"), str(data.objective.get("goal") or "minimize")
    return "objective", "minimize"


def value_kind(value: object) -> str:
    """The kind a reader expects for a value: bool before int (a Python bool is an int), None as null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str" if isinstance(value, str) else type(value).__name__


def _browser_kind(value: object) -> str:
    """What report.js infers from a JSON value: a whole float arrives as a whole number, so "int"."""
    if isinstance(value, float) and value.is_integer():
        return "int"
    return value_kind(value)


def browser_kinds(parameters: Mapping[str, object], declared: Mapping[str, str]) -> dict[str, str]:
    """The parameter kinds report.js would infer wrongly from the JSON value (others it infers right): the
    manifest's declared type where it has one, else the value's own type."""
    out: dict[str, str] = {}
    for name, value in parameters.items():
        kind = declared.get(name) or value_kind(value)
        if kind != _browser_kind(value):
            out[str(name)] = kind
    return out


def report_metrics(data: ReportData) -> list[str]:
    """The metrics the report offers: the objective's first (when any execution has one), then every other
    metric of the metrics files in first-seen order."""
    metric, _goal = objective_label(data)
    names: dict[str, None] = {}
    if any(v.record.objective is not None for v in data.executions) or not any(v.metrics for v in data.executions):
        names[metric] = None
    for view in data.executions:
        for name in view.metrics:
            names.setdefault(str(name), None)
    return list(names)


def metric_value(view: ExecutionView, name: str, objective_metric: str) -> float | None:
    """The objective comes from the record (it is what the search optimised); other metrics from the file."""
    if name == objective_metric:
        return view.record.objective
    return view.metrics.get(name)


# Called once per execution id while writing the site, so outputs are streamed rather than all in memory.
OutputLoader = Callable[[str], Mapping[str, bytes]]

__all__ = ["Objective", "CommitInfo", "ExecutionView", "ReportData", "OutputLoader", "objective_label", "value_kind",
           "browser_kinds", "report_metrics", "metric_value"]
