"""What the report renders: plain, frozen data handed over by the git layer.

The renderer never touches git. The caller (``expegit report``) reads the execution branches and builds a
``ReportData``; everything here is pure so the whole site can be rendered and checked in unit tests, and
so a server hook can render the same data without a working tree.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Literal, TypedDict

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
    """

    record: ExecutionRecord
    stdout_tail: str = ""
    stderr_tail: str = ""
    output_files: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    diffstat: list[tuple[str, int]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ReportData:
    """Everything one report shows. ``generated`` is an ISO 8601 UTC time (running executions end there)."""

    campaign: str
    objective: Objective | None
    generated: str
    commits: dict[str, CommitInfo]
    executions: list[ExecutionView]


def objective_label(data: ReportData) -> tuple[str, str]:
    """(metric, goal) with defaults, so a campaign without a declared objective still labels its axes."""
    if data.objective:
        return str(data.objective.get("metric") or "objective"), str(data.objective.get("goal") or "minimize")
    return "objective", "minimize"


# Called once per execution id while writing the site, so outputs are streamed rather than all in memory.
OutputLoader = Callable[[str], Mapping[str, bytes]]

__all__ = ["Objective", "CommitInfo", "ExecutionView", "ReportData", "OutputLoader", "objective_label"]
