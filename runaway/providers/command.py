"""Allocations from any scheduler driven by a profile's command templates (PBS/Torque, ...).

The profile says how to start an allocation (``start``), list its nodes (``list_nodes``), cancel it
(``cancel``) and reach one node of it (``launch``); values are shell-quoted into the templates.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from orchestra.durations import render_slurm_time
from orchestra.errors import SchedulerError

from ..profiles import AllocationSpec, CommandProfile
from ..transports import Transport
from . import JobState
from .slurm import parse_nodelist

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_template(template: str, values: Mapping[str, object]) -> str:
    """Fill ``{name}`` placeholders with shell-quoted values (a template is shell text; values are data).

    Only known names are replaced, so awk/shell braces such as ``{print $1}`` pass through untouched.
    """
    return _PLACEHOLDER.sub(lambda m: shlex.quote(str(values[m.group(1)])) if m.group(1) in values
                            else m.group(0), template)


def template_placeholders(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template))


_NODES_MARK = "@@orchestra-job"


def parse_list_nodes_output(text: str) -> dict[str, tuple[int, list[str]]]:
    """Parse the batched ``list_nodes`` output: per job, (exit status, node names)."""
    out: dict[str, tuple[int, list[str]]] = {}
    current: str | None = None
    nodes: list[str] = []
    for line in text.splitlines():
        if line.startswith(_NODES_MARK + " "):
            current, nodes = line.split()[1], []
        elif line.startswith(_NODES_MARK + "-rc ") and current is not None:
            out[current] = (int(line.split()[1]), nodes)
            current = None
        elif current is not None:
            for word in line.replace(",", " ").split():
                for node in parse_nodelist(word) if "[" in word else [word]:
                    if node not in nodes:
                        nodes.append(node)
    return out


class CommandProvider:
    """A scheduler driven by the profile's templates (PBS/Torque, ...)."""

    step_marker = ""  # a template's launcher cannot be recognised in a process list
    supports_agent = False
    writes_ready_files = False

    def __init__(self, profile: CommandProfile) -> None:
        self.profile = profile

    def prepare(self, host: Transport, workdir: str) -> None:
        return None

    def wait_ready(self, host: Transport, job_id: str, timeout: float) -> tuple[float, list[str]] | None:
        return None  # the next poll sees it start

    def _values(self, spec: AllocationSpec, job_name: str) -> dict[str, object]:
        return {"nodes": spec.nodes, "walltime": render_slurm_time(spec.walltime),
                "walltime_seconds": int(spec.walltime), "walltime_minutes": int((spec.walltime + 59) // 60),
                "partition": spec.partition or "", "account": spec.account or "", "qos": spec.qos or "",
                "extra": " ".join(spec.extra), "job_name": job_name}

    def submit(self, host: Transport, spec: AllocationSpec, job_name: str) -> str:
        cmd = render_template(self.profile.start, self._values(spec, job_name))
        # The placeholder script on stdin, for schedulers that read one (qsub, sbatch); others ignore it.
        script = f"#!/bin/sh\nexec sleep {int(spec.walltime) + 60}\n"
        result = host.run(cmd, stdin=script.encode(), timeout=120, warn=True)
        if not result.ok:
            raise SchedulerError(f"{host.name}: `{cmd}` failed: {result.tail(3)}")
        regex = self.profile.job_id_regex or r"(\d+(?:\.[\w.-]+)?)"
        match = re.search(regex, result.stdout)
        if not match:
            raise SchedulerError(f"{host.name}: no job id matching {regex!r} in {result.stdout.strip()[:200]!r}")
        return match.group(1)

    def poll(self, host: Transport, job_ids: list[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        parts = []
        for job_id in job_ids:
            inner = render_template(self.profile.list_nodes, {"job_id": job_id})
            parts.append(f"echo {_NODES_MARK} {shlex.quote(job_id)}; ( {inner} ) 2>/dev/null; "
                         f"echo {_NODES_MARK}-rc $?")
        result = host.run("; ".join(parts), timeout=120, warn=True)
        states: dict[str, JobState] = {}
        for job_id, (code, nodes) in parse_list_nodes_output(result.stdout).items():
            if code != 0:
                continue  # gone
            states[job_id] = JobState(job_id, "RUNNING" if nodes else "PENDING", None, tuple(nodes))
        return states

    def cancel(self, host: Transport, job_ids: list[str]) -> None:
        for job_id in job_ids:
            host.run(render_template(self.profile.cancel, {"job_id": job_id}), timeout=120, warn=True)

    def launcher(self, job_id: str, node: str) -> str:
        return render_template(self.profile.launch, {"job_id": job_id, "node": node}).rstrip() + " "



__all__ = ["CommandProvider", "parse_list_nodes_output", "render_template", "template_placeholders"]
