"""Slurm: allocations are placeholder batch jobs that hold nodes; executions are placed on them with
``srun --jobid --overlap`` (or one agent step per node).

Orchestra holds allocations itself and places many short executions in them, because one Slurm job per
execution costs ~1 s of scheduling each and floods the queue. Every text format has a pure render and a
pure parse function here (tests/unit/test_slurm_formats.py): the sbatch script, squeue output, node
lists, Slurm times, the ready file.
"""
from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterable

from orchestra.durations import render_slurm_time
from orchestra.errors import ConnectionError_, ProfileError, SchedulerError

from ..launchers.srun import srun_prefix
from ..profiles import AllocationSpec
from ..placement import NodeCapacity
from ..slurm_nodelist import parse_nodelist, render_nodelist
from ..slurm_resources import (NodeRequest, NodeSize, node_capacities, parse_sinfo_nodes, render_node_request,
                               render_probe, render_sinfo)
from ..transports import Transport
from . import JobState


# ------------------------------------------------------------------------------------- pure: times
def parse_slurm_time(text: str) -> float | None:
    """Seconds of a Slurm time (``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``, ``D-HH``, ``MM``); None for
    UNLIMITED / NOT_SET / INVALID / empty."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "NOT_SET", "INVALID", "N/A", "INFINITE"):
        return None
    if "-" in text and ":" not in text:  # D-HH
        day_text, hour_text = text.split("-", 1)
        if day_text.isdigit() and hour_text.isdigit():
            return float(int(day_text) * 86400 + int(hour_text) * 3600)
        raise SchedulerError(f"cannot parse Slurm time {text!r}")
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        if not head.isdigit():
            raise SchedulerError(f"cannot parse Slurm time {head}-{text!r}")
        days = int(head)
    parts = text.split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        raise SchedulerError(f"cannot parse Slurm time {text!r}")
    nums = [int(p) for p in parts]
    if len(nums) == 1:
        seconds = nums[0] * 60  # bare number: minutes
    elif len(nums) == 2:
        seconds = nums[0] * 60 + nums[1] if days == 0 else nums[0] * 3600 + nums[1] * 60
    else:
        seconds = nums[0] * 3600 + nums[1] * 60 + nums[2]
    return float(days * 86400 + seconds)


# ------------------------------------------------------------------------------ pure: sbatch/squeue
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:=+@%/-]+$")


def _check_value(what: str, value: str) -> str:
    # An #SBATCH line is not parsed by a shell, but a newline would inject another directive.
    if not _SAFE_VALUE.match(value):
        raise ProfileError(f"allocation.{what} {value!r} has characters Slurm options never need",
                           hint="letters, digits and _ . , : = + @ % / - only")
    return value


def render_sbatch_script(spec: AllocationSpec, *, job_name: str = "orchestra", ready_dir: str | None = None,
                         per_node: NodeRequest | None = None) -> str:
    """The placeholder batch script that holds ``spec.nodes`` nodes until the walltime.

    The script only sleeps: executions are placed on its nodes with ``srun --jobid --overlap``. Without
    ``per_node`` it asks for whole nodes (``--exclusive``) so the slots Orchestra counts are really free;
    with it (the manifest declares `resources:`), for what the executions need on each node (cores,
    GPUs, memory: runaway/slurm_resources.py), and Orchestra packs them into what each node was given.
    With ``ready_dir`` (on the shared filesystem) it first writes ``<ready_dir>/<job id>``: its start
    time and node list, so the controller learns that the allocation started without asking the
    scheduler again.
    """
    exclusive = spec.exclusive if spec.exclusive is not None else per_node is None
    lines = ["#!/bin/sh",
             f"#SBATCH --job-name={_check_value('job_name', job_name)}",
             f"#SBATCH --nodes={int(spec.nodes)}",
             "#SBATCH --ntasks-per-node=1",
             *(render_node_request(per_node) if per_node is not None else []),
             *(["#SBATCH --exclusive"] if exclusive else []),
             f"#SBATCH --time={render_slurm_time(spec.walltime)}",
             "#SBATCH --output=/dev/null",
             "#SBATCH --error=/dev/null"]
    for key in ("partition", "account", "qos"):
        value = getattr(spec, key)
        if value:
            lines.append(f"#SBATCH --{key}={_check_value(key, value)}")
    for option in spec.extra:
        if "\n" in option or not option.startswith("-"):
            raise ProfileError(f"allocation.extra {option!r} must be one scheduler option like --constraint=x")
        lines.append(f"#SBATCH {option}")
    lines += ["# Orchestra holds these nodes and places executions on them with srun --overlap;",
              "# cancelling this job (scancel) ends every execution still running in it."]
    if ready_dir is not None:
        ready = shlex.quote(ready_dir) + '/"$SLURM_JOB_ID"'
        lines.append(f'echo "$(date +%s) $SLURM_JOB_NODELIST" > {ready}.tmp && mv -f {ready}.tmp {ready}')
    lines += [f"exec sleep {int(spec.walltime) + 60}", ""]
    return "\n".join(lines)


def parse_sbatch_output(text: str) -> str:
    """The job id from ``sbatch --parsable`` (``123`` or ``123;cluster``) or plain sbatch output."""
    for line in text.strip().splitlines()[::-1]:
        match = re.match(r"^\s*(\d+)(?:;\S+)?\s*$", line) or re.search(r"Submitted batch job (\d+)", line)
        if match:
            return match.group(1)
    raise SchedulerError(f"sbatch printed no job id: {text.strip()[:200]!r}")



# %S: the start time, which a requeue renews (see JobState.started); older callers' 5 fields still parse.
SQUEUE_FORMAT = "%i|%T|%L|%N|%r|%S"


def render_scancel(job_ids: Iterable[str]) -> str:
    """The command that gives allocations back (also what a user is told to run when that failed)."""
    return "scancel " + " ".join(map(shlex.quote, job_ids))


def parse_squeue_output(text: str) -> dict[str, JobState]:
    """Parse ``squeue -h -o '%i|%T|%L|%N|%r|%S'`` (or without ``|%S``); a job missing from the result is
    gone (ended). States a preemption leaves (PREEMPTED, REQUEUED, REQUEUE_HOLD, ...) are kept as Slurm
    writes them: ENDED_STATES and JobState.pending say what each means."""
    jobs: dict[str, JobState] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        parts = line.split("|")
        if len(parts) not in (5, 6) or not re.match(r"^\d+(_\d+)?(\+\d+)?$", parts[0]):
            raise SchedulerError(f"unexpected squeue line {line!r} (format {SQUEUE_FORMAT})")
        job_id, state, left, nodes, reason = parts[:5]
        started = parts[5].strip() if len(parts) == 6 and parts[5].strip() not in ("N/A", "Unknown") else ""
        jobs[job_id] = JobState(job_id, state.strip().upper(), parse_slurm_time(left),
                                tuple(parse_nodelist(nodes)), reason.strip(), started)
    return jobs



def parse_ready_file(text: str) -> tuple[float, list[str]] | None:
    """(start epoch, nodes) from the placeholder job's ready file, or None if not (completely) written."""
    words = text.split()
    if len(words) != 2:
        return None
    try:
        return float(words[0]), parse_nodelist(words[1])
    except (ValueError, SchedulerError):
        return None


class SlurmProvider:
    step_marker = "srun"
    supports_agent = True
    writes_ready_files = True
    places_by_resources = True  # submit(per_node=...), and node_capacities() once an allocation runs

    def __init__(self) -> None:
        self.ready_dir: str | None = None  # where placeholder jobs say they started (set by prepare)

    def prepare(self, host: Transport, workdir: str) -> None:
        self.ready_dir = f"{workdir}/ready"
        host.run(f"mkdir -p {shlex.quote(self.ready_dir)}", timeout=60)

    def submit(self, host: Transport, spec: AllocationSpec, job_name: str, per_node: NodeRequest | None = None) -> str:
        script = render_sbatch_script(spec, job_name=job_name, ready_dir=self.ready_dir, per_node=per_node)
        result = host.run("sbatch --parsable", stdin=script.encode(), timeout=120, warn=True)
        if not result.ok:
            raise SchedulerError(f"{host.name}: sbatch refused the allocation: {result.tail(3)}")
        return parse_sbatch_output(result.stdout)

    def poll(self, host: Transport, job_ids: list[str]) -> dict[str, JobState]:
        # All of the user's jobs, filtered here: `squeue -j` fails outright once one id is unknown.
        command = f"squeue -h -u \"$(id -un)\" -o {shlex.quote(SQUEUE_FORMAT)}"
        result = host.run(command, timeout=120, warn=True)
        if result.exit_code is None and not result.ok:  # the link dropped mid-command: the next tick asks again
            raise ConnectionError_(f"{host.name}: connection lost during `{command}`")
        if not result.ok:
            raise SchedulerError(f"{host.name}: squeue failed: {result.tail(3)}")
        wanted = set(job_ids)
        return {k: v for k, v in parse_squeue_output(result.stdout).items() if k in wanted}

    def cancel(self, host: Transport, job_ids: list[str]) -> None:
        if not job_ids:
            return
        command = render_scancel(job_ids)
        # scancel of an ended job fails harmlessly (what a retry after a drop meets); a missing exit
        # status is the link dropping mid-command, which the caller retries (scancel is idempotent).
        result = host.run(command, timeout=120, warn=True)
        if result.exit_code is None and not result.ok:
            raise ConnectionError_(f"{host.name}: connection lost during `{command}`")

    def cancel_command(self, job_ids: list[str]) -> str:
        return render_scancel(job_ids)

    def launcher(self, job_id: str, node: str) -> str:
        return srun_prefix(job_id, node)

    def node_sizes(self, host: Transport, partition: str | None) -> list[NodeSize]:
        """The partition's node sizes (one ``sinfo``): what a request must fit before anything starts."""
        command = render_sinfo(partition)
        result = host.run(command, timeout=120, warn=True)
        if not result.ok:
            raise SchedulerError(f"{host.name}: `{command}` failed: {result.tail(3)}")
        return parse_sinfo_nodes(result.stdout)

    def node_capacities(self, host: Transport, job_id: str, nodes: int,
                        asked: NodeRequest | None) -> list[NodeCapacity]:
        """What each node of a running allocation was given (one ``scontrol show job -d`` and one probe
        step per node, in one command)."""
        result = host.run(render_probe(job_id, nodes), timeout=120, warn=True)
        if result.exit_code is None and not result.ok:
            raise ConnectionError_(f"{host.name}: connection lost while reading allocation {job_id}'s nodes")
        return node_capacities(result.stdout, job_id, asked)

    def wait_ready(self, host: Transport, job_id: str, timeout: float) -> tuple[float, list[str]] | None:
        """Block (one remote command, no scheduler query) until the job's ready file appears."""
        if self.ready_dir is None:
            return None
        path = shlex.quote(f"{self.ready_dir}/{job_id}")
        loops = max(1, int(timeout / 0.05))
        cmd = (f"i=0; while [ ! -s {path} ] && [ $i -lt {loops} ]; do sleep 0.05; i=$((i+1)); done; "
               f"cat {path} 2>/dev/null || true")
        return parse_ready_file(host.run(cmd, timeout=timeout + 30, warn=True).stdout)



__all__ = ["SQUEUE_FORMAT", "SlurmProvider", "parse_nodelist", "parse_ready_file", "parse_sbatch_output",
           "parse_slurm_time", "parse_squeue_output", "render_nodelist", "render_sbatch_script", "render_scancel"]
