"""Schedulers that hand out allocations (Slurm, or any via command templates) and the backend on top.

Parsl's split: a *provider* says where an allocation comes from (``sbatch`` of a placeholder job, or a
``qsub``/``oarsub`` template); a *launcher* says how one command reaches one node of it (``srun --jobid
--overlap``). Orchestra holds allocations itself and places many short executions in them, because
one Slurm job per execution costs ~1 s of scheduling each and floods the queue.

Every external text format has a pure render and a pure parse function here (tested without a cluster:
tests/unit/test_slurm_*.py): the sbatch script, squeue output, node lists, Slurm times.

Runtime rules: one ``squeue`` (or one batched ``list_nodes``) per cluster per interval, whatever the
number of executions; no placement on an allocation within ``walltime_margin`` of its end; allocations
are cancelled when the queue has drained for ``idle_release`` seconds and at close().
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import re
import shlex
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import gevent
import gevent.event
import gevent.queue

from orchestra.durations import render_slurm_time
from orchestra.errors import ProfileError, SchedulerError

from .backend import CodeArchive, Collected, Job, NoSlot, Outcome, RunHandle, Slot
from .hosts import Host
from .profiles import AllocationSpec, CommandProfile, SlurmProfile
from .agent_link import AgentRuns, install_agent, serve_command
from .allocation_ledger import AllocationLedger
from .ssh_backend import LAUNCHER_PID_FILE, RemoteRuns, SlotPool, _handle_wait, start_agent_runs

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------- pure: nodelists
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


# ------------------------------------------------------------------------------ pure: sbatch/squeue
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:=+@%/-]+$")


def _check_value(what: str, value: str) -> str:
    # An #SBATCH line is not parsed by a shell, but a newline would inject another directive.
    if not _SAFE_VALUE.match(value):
        raise ProfileError(f"allocation.{what} {value!r} has characters Slurm options never need",
                           hint="letters, digits and _ . , : = + @ % / - only")
    return value


def render_sbatch_script(spec: AllocationSpec, *, job_name: str = "orchestra", ready_dir: str | None = None) -> str:
    """The placeholder batch script that holds ``spec.nodes`` nodes until the walltime.

    The script only sleeps: executions are placed on its nodes with ``srun --jobid --overlap``. It asks
    for whole nodes (``--exclusive``) so the slots Orchestra counts are really free. With ``ready_dir``
    (on the shared filesystem) it first writes ``<ready_dir>/<job id>``: its start time and node list,
    so the controller learns that the allocation started without asking the scheduler again.
    """
    lines = ["#!/bin/sh",
             f"#SBATCH --job-name={_check_value('job_name', job_name)}",
             f"#SBATCH --nodes={int(spec.nodes)}",
             "#SBATCH --ntasks-per-node=1",
             "#SBATCH --exclusive",
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


SQUEUE_FORMAT = "%i|%T|%L|%N|%r"


@dataclasses.dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # PENDING, RUNNING, COMPLETING, ...
    time_left: float | None  # seconds; None when unlimited or unknown
    nodes: tuple[str, ...]
    reason: str = ""

    @property
    def running(self) -> bool:
        return self.state in ("RUNNING",)

    @property
    def pending(self) -> bool:
        return self.state in ("PENDING", "CONFIGURING", "REQUEUED", "RESIZING")


def parse_squeue_output(text: str) -> dict[str, JobState]:
    """Parse ``squeue -h -o '%i|%T|%L|%N|%r'``; a job missing from the result is gone (ended)."""
    jobs: dict[str, JobState] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        parts = line.split("|")
        if len(parts) != 5 or not re.match(r"^\d+(_\d+)?(\+\d+)?$", parts[0]):
            raise SchedulerError(f"unexpected squeue line {line!r} (format {SQUEUE_FORMAT})")
        job_id, state, left, nodes, reason = parts
        jobs[job_id] = JobState(job_id, state.strip().upper(), parse_slurm_time(left),
                                tuple(parse_nodelist(nodes)), reason.strip())
    return jobs


# ------------------------------------------------------------------------------------- providers
class Provider(Protocol):
    """Where allocations come from: all commands run on the frontend host."""

    def submit(self, host: Host, spec: AllocationSpec, job_name: str) -> str: ...

    def poll(self, host: Host, job_ids: list[str]) -> dict[str, JobState]: ...

    def cancel(self, host: Host, job_ids: list[str]) -> None: ...

    def launcher(self, job_id: str, node: str) -> str:
        """A command prefix (ending with a space) that runs what follows on ``node`` of ``job_id``."""
        ...


def srun_prefix(job_id: str, node: str) -> str:
    """One task on one node of an existing allocation; --overlap lets steps share the held CPUs."""
    return (f"srun --jobid={shlex.quote(job_id)} --nodelist={shlex.quote(node)} -N1 -n1 --overlap "
            "--quiet --kill-on-bad-exit=0 ")


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
    ready_dir: str | None = None  # set by the backend: where placeholder jobs say they started

    def submit(self, host: Host, spec: AllocationSpec, job_name: str) -> str:
        script = render_sbatch_script(spec, job_name=job_name, ready_dir=self.ready_dir)
        result = host.run("sbatch --parsable", stdin=script.encode(), timeout=120, warn=True)
        if not result.ok:
            raise SchedulerError(f"{host.name}: sbatch refused the allocation: {result.tail(3)}")
        return parse_sbatch_output(result.stdout)

    def poll(self, host: Host, job_ids: list[str]) -> dict[str, JobState]:
        # All of the user's jobs, filtered here: `squeue -j` fails outright once one id is unknown.
        result = host.run(f"squeue -h -u \"$(id -un)\" -o {shlex.quote(SQUEUE_FORMAT)}", timeout=120, warn=True)
        if not result.ok:
            raise SchedulerError(f"{host.name}: squeue failed: {result.tail(3)}")
        wanted = set(job_ids)
        return {k: v for k, v in parse_squeue_output(result.stdout).items() if k in wanted}

    def cancel(self, host: Host, job_ids: list[str]) -> None:
        if job_ids:
            host.run("scancel " + " ".join(map(shlex.quote, job_ids)), timeout=120, warn=True)

    def launcher(self, job_id: str, node: str) -> str:
        return srun_prefix(job_id, node)

    def wait_ready(self, host: Host, job_id: str, timeout: float) -> tuple[float, list[str]] | None:
        """Block (one remote command, no scheduler query) until the job's ready file appears."""
        if self.ready_dir is None:
            return None
        path = shlex.quote(f"{self.ready_dir}/{job_id}")
        loops = max(1, int(timeout / 0.05))
        cmd = (f"i=0; while [ ! -s {path} ] && [ $i -lt {loops} ]; do sleep 0.05; i=$((i+1)); done; "
               f"cat {path} 2>/dev/null || true")
        return parse_ready_file(host.run(cmd, timeout=timeout + 30, warn=True).stdout)


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
    """A scheduler driven by the profile's templates (OAR, PBS/Torque, ...)."""

    def __init__(self, profile: CommandProfile) -> None:
        self.profile = profile

    def _values(self, spec: AllocationSpec, job_name: str) -> dict[str, object]:
        return {"nodes": spec.nodes, "walltime": render_slurm_time(spec.walltime),
                "walltime_seconds": int(spec.walltime), "walltime_minutes": int((spec.walltime + 59) // 60),
                "partition": spec.partition or "", "account": spec.account or "", "qos": spec.qos or "",
                "extra": " ".join(spec.extra), "job_name": job_name}

    def submit(self, host: Host, spec: AllocationSpec, job_name: str) -> str:
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

    def poll(self, host: Host, job_ids: list[str]) -> dict[str, JobState]:
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

    def cancel(self, host: Host, job_ids: list[str]) -> None:
        for job_id in job_ids:
            host.run(render_template(self.profile.cancel, {"job_id": job_id}), timeout=120, warn=True)

    def launcher(self, job_id: str, node: str) -> str:
        return render_template(self.profile.launch, {"job_id": job_id, "node": node}).rstrip() + " "


# -------------------------------------------------------------------------------------- backend
@dataclasses.dataclass
class Allocation:
    job_id: str
    submitted: float
    state: str = "PENDING"
    nodes: tuple[str, ...] = ()
    slots: list[Slot] = dataclasses.field(default_factory=list)
    expires: float | None = None  # local epoch seconds
    idle_since: float | None = None
    closing: bool = False
    ready: tuple[float, list[str]] | None = None  # (start epoch, nodes) from the ready file
    reason: str = ""  # the scheduler's reason while it is pending (Resources, Priority, JobHeldUser, ...)


class AllocationBackend:
    """Executions placed on slots of allocations held from a scheduler (``slurm`` and ``command``)."""

    def __init__(self, profile: SlurmProfile, provider: Provider, ledger: AllocationLedger | None = None) -> None:
        self.profile = profile
        self.provider = provider
        # Which allocations this controller holds, beside the campaign: what a resume gives back if it dies.
        self.ledger = ledger
        self._orphans: dict[Path, list[str]] | None = None  # a dead controller's allocations (resume)
        self.name = profile.kind
        self.host = Host(profile.host, ssh_config=profile.ssh_config, connections=profile.connections,
                         channels_per_connection=profile.channels_per_connection,
                         accept_new_host_keys=profile.accept_new_host_keys)
        self.runs = RemoteRuns(self.host, profile.workdir, python=profile.python,
                               poll_interval=profile.poll_interval, pid_file=LAUNCHER_PID_FILE,
                               marker="" if isinstance(profile, CommandProfile) else "srun")
        self.pool = SlotPool()
        self.allocations: dict[str, Allocation] = {}
        self._slot_alloc: dict[Slot, Allocation] = {}
        self._busy: set[Slot] = set()
        self._waiting = 0
        self._give_up = False  # stop_waiting(): the controller stops, acquire() must not wait any longer
        self._next_index = 0
        self._launched_at: dict[str, float] = {}
        self.node_agents: dict[tuple[str, str], AgentRuns] = {}
        self._agent_pids: dict[tuple[str, str], str] = {}  # the frontend pid of each agent's srun step
        self._files_watched: set[str] = set()  # executions re-attached: watched through their files
        self._wake = gevent.event.Event()
        self._manager: gevent.Greenlet | None = None
        self._closed = False
        self.squeue_calls = 0
        self._last_squeue = 0.0
        self._expected = 0
        self._warming = False  # an allocation asked for ahead of the first acquire() is not idle yet
        # Set once the first allocation is asked for (or none was needed): `expegit run` creates its
        # branches after that, so the allocation queues meanwhile instead of after them.
        self.submitted = gevent.event.Event()
        self.job_name = f"orchestra-{profile.name}"[:60]
        spec = profile.allocation
        self.margin = profile.walltime_margin if profile.walltime_margin is not None else \
            min(120.0, 0.1 * spec.walltime)
        self.error: Exception | None = None

    # -- lifecycle
    @property
    def uses_agent(self) -> bool:
        return getattr(self.profile, "launcher", "srun") == "agent" and isinstance(self.provider, SlurmProvider)

    def start(self, expected: int = 0) -> None:
        self._expected = expected
        self._warming = expected > 0
        if self._orphans is None and self.ledger is not None:
            left = sorted(j for jobs in self.ledger.orphans().values() for j in jobs)
            if left:
                log.warning("%s: allocation%s %s of a controller that is gone still hold%s nodes; `expegit resume` "
                            "collects what runs in them and gives them back", self.profile.name,
                            "s" if len(left) > 1 else "", ", ".join(left), "" if len(left) > 1 else "s")
        self.runs.prepare()
        if self.uses_agent:
            self.agent_path = install_agent(self.host, self.runs.workdir)
        if isinstance(self.provider, SlurmProvider):
            self.provider.ready_dir = f"{self.runs.workdir}/ready"
            self.host.run(f"mkdir -p {shlex.quote(self.provider.ready_dir)}", timeout=60)
        self._manager = gevent.spawn(self._manage)

    def _await_ready(self, alloc: Allocation) -> None:
        """Learn the moment a submitted allocation starts from its ready file (Slurm's placeholder writes
        it), instead of the next squeue: that saved up to a whole squeue interval per allocation."""
        wait_ready = getattr(self.provider, "wait_ready", None)
        if wait_ready is None:
            return
        for _ in range(3):  # the first ~90 s; after that the regular squeue interval is good enough
            if self._closed or alloc.state != "PENDING" or alloc.closing:
                return
            try:
                ready = wait_ready(self.host, alloc.job_id, 30.0)
            except Exception as exc:  # noqa: BLE001 - an optimisation: squeue still sees the start
                log.debug("%s: waiting for allocation %s to start: %s", self.profile.name, alloc.job_id, exc)
                return
            if ready is not None:
                alloc.ready = ready
                self._wake.set()
                return

    # -- the per-node agent (launcher: agent)
    def _close_agents(self, job_id: str) -> None:
        """An allocation's agents went with it: what they ran is lost now, not after reconnect retries."""
        for key in [k for k in self.node_agents if k[0] == job_id]:
            agent_runs = self.node_agents.pop(key)
            agent_runs.link.fail_all(f"allocation {job_id} ended under the execution")
            agent_runs.link.close()
            self._agent_pids.pop(key, None)

    def _forget_agents(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self._close_agents(job_id)
        if job_ids and (self.uses_agent or isinstance(self.provider, SlurmProvider)):
            globs = " ".join(f"{shlex.quote(self.runs.workdir)}/agents/{shlex.quote(j)}.* "
                             f"{shlex.quote(self.runs.workdir)}/ready/{shlex.quote(j)}" for j in job_ids)
            self.host.run(f"rm -rf -- {globs}", timeout=60, warn=True)

    def _agent_dir(self, job_id: str, node: str) -> str:
        return f"{self.runs.workdir}/agents/{job_id}.{node}"

    def _start_agents(self, alloc: Allocation) -> None:
        """One resident agent step per node (started detached on the frontend, so neither a dropped
        connection nor this controller's death ends it), then one attach session per node."""
        parts = []
        for node in alloc.nodes:
            d = shlex.quote(self._agent_dir(alloc.job_id, node))
            serve = serve_command(self.profile.python, self.agent_path, self._agent_dir(alloc.job_id, node),
                                  self.runs.workdir)
            # Idempotent: a retried tick must not start a second agent step for the node.
            parts.append(
                f"mkdir -p {d} && {{ {{ [ -s {d}/srun_pid ] && kill -0 \"$(cat {d}/srun_pid)\" 2>/dev/null; }} || {{ "
                f"setsid nohup {srun_prefix(alloc.job_id, node)}{serve} </dev/null >>{d}/agent.log 2>&1 & "
                f"echo $! > {d}/srun_pid; }}; }} && printf '%s %s\\n' {shlex.quote(node)} \"$(cat {d}/srun_pid)\"")
        result = self.host.run("; ".join(parts), timeout=120)
        for line in result.stdout.splitlines():
            words = line.split()
            if len(words) == 2 and words[1].isdigit():
                self._agent_pids[(alloc.job_id, words[0])] = words[1]
        links = {node: gevent.spawn(self._attach, alloc.job_id, node) for node in alloc.nodes}
        gevent.joinall(list(links.values()))
        failed = [f"{node}: {g.exception}" for node, g in links.items() if g.exception is not None]
        if failed:
            raise SchedulerError(f"allocation {alloc.job_id}: the node agents did not answer: {'; '.join(failed)}")

    def _attach(self, job_id: str, node: str) -> None:
        if (job_id, node) in self.node_agents:
            return
        # -u: srun line-buffers a task's output by default, and results frames are binary.
        prefix = srun_prefix(job_id, node).replace("srun ", "srun -u ", 1)
        self.node_agents[(job_id, node)] = start_agent_runs(
            self.runs, self.profile.python, spawn=False, agent_dir=self._agent_dir(job_id, node), prefix=prefix,
            name=f"{self.profile.name}:{job_id}:{node}", reconnect_for=20.0, agent_path=self.agent_path)

    def close(self) -> None:
        self._closed = True
        if self._manager is not None:
            self._manager.kill(block=True)
            self._manager = None
        self.runs.stop_watching()
        for agent_runs in self.node_agents.values():
            agent_runs.link.drain()  # the last removals
        live = [a.job_id for a in self.allocations.values()]
        if live:
            try:
                self.provider.cancel(self.host, live)
                if self.ledger is not None:
                    self.ledger.remove(live)  # given back; only a failed cancel leaves them for a resume
                self._forget_agents(live)
            except Exception as exc:  # best effort: say which jobs may be left behind
                log.warning("cancelling allocations %s failed: %s", live, exc)
        self.allocations.clear()
        if self._orphans:
            try:
                self.release_orphans()
            except Exception as exc:  # best effort, as above
                log.warning("releasing allocations %s failed: %s", sorted(self._orphans.values()), exc)
        for agent_runs in self.node_agents.values():
            agent_runs.link.close()
        self.node_agents.clear()
        self.host.close()

    # -- slots
    def acquire(self) -> Slot:
        self._warming = False
        self._waiting += 1
        self._wake.set()
        try:
            while True:
                if self.error is not None:
                    raise self.error
                if self._give_up:
                    raise NoSlot()
                try:
                    slot = self.pool.acquire(timeout=0.2)
                except gevent.queue.Empty:
                    continue
                alloc = self._slot_alloc.get(slot)
                if alloc is None or alloc.closing or not self._usable(alloc):
                    continue  # the allocation ended or is too close to its end: drop the slot
                self._busy.add(slot)
                alloc.idle_since = None
                return slot
        finally:
            self._waiting -= 1

    def stop_waiting(self) -> None:
        """Ctrl-C while the allocation is still pending: acquire() raises NoSlot instead of waiting on."""
        self._give_up = True
        self._wake.set()

    def release(self, slot: Slot) -> None:
        self._busy.discard(slot)
        alloc = self._slot_alloc.get(slot)
        if alloc is None or alloc.closing:
            return
        self.pool.release(slot)
        self._wake.set()

    def _usable(self, alloc: Allocation) -> bool:
        return alloc.state == "RUNNING" and (alloc.expires is None or alloc.expires - time.time() > self.margin)

    # -- the manager: the only place that talks to the scheduler
    def _manage(self) -> None:
        failures = 0
        while not self._closed:
            try:
                self._tick()
                failures = 0
            except SchedulerError as exc:
                failures += 1
                log.warning("%s: %s", self.profile.name, exc)
                if failures >= 5 or not self.allocations:
                    self.error = exc
            except Exception as exc:  # the connection: keep trying, the Host reconnects
                failures += 1
                log.warning("%s: scheduler poll failed: %s", self.profile.name, exc)
                if failures >= 10:
                    self.error = exc
            self._wake.clear()
            self._wake.wait(timeout=self.profile.squeue_interval)
            gevent.sleep(0 if failures == 0 else min(30.0, failures * self.profile.squeue_interval))

    def _tick(self) -> None:
        now = time.time()
        if self._orphans and not self._files_watched:
            try:
                self.release_orphans()  # what the resume re-attached has ended: their nodes can go
            except Exception as exc:  # noqa: BLE001 - never the campaign's failure; close() tries again
                log.warning("%s: releasing allocations %s failed: %s", self.profile.name,
                            sorted(self._orphans.values()), exc)
        for alloc in list(self.allocations.values()):
            if alloc.state == "PENDING" and alloc.ready is not None:
                start, nodes = alloc.ready
                left = self.profile.allocation.walltime - max(0.0, now - start)
                self._update(alloc, JobState(alloc.job_id, "RUNNING", left, tuple(nodes)), now)
        # squeue at most once per interval, however often the manager is woken.
        if self.allocations and now - self._last_squeue >= self.profile.squeue_interval:
            self._last_squeue = now
            self.squeue_calls += 1
            states = self.provider.poll(self.host, list(self.allocations))
            for job_id, alloc in list(self.allocations.items()):
                self._update(alloc, states.get(job_id), now)
        # Demand: waiters that no free slot will serve. Submit at most one pending allocation at a time.
        pending = [a for a in self.allocations.values() if a.state != "RUNNING"]
        usable_free = sum(1 for a in self.allocations.values() if self._usable(a) for s in a.slots
                          if s not in self._busy)
        demand = max(self._waiting, self._expected if not self.allocations else 0)
        self._expected = 0  # only the first allocation is asked for ahead of the first acquire()
        if demand > usable_free and not pending and len(self.allocations) < self.profile.max_allocations:
            job_id = self.provider.submit(self.host, self.profile.allocation, self.job_name)
            if self.ledger is not None:
                self.ledger.add(job_id)
            log.info("%s: submitted allocation %s", self.profile.name, job_id)
            alloc = self.allocations[job_id] = Allocation(job_id, now)
            gevent.spawn(self._await_ready, alloc)
        self.submitted.set()
        # Drained: no one waiting and nothing running on it for idle_release -> give the nodes back.
        to_cancel = []
        for alloc in list(self.allocations.values()):
            if alloc.state != "RUNNING":
                if self._waiting == 0 and alloc.state == "PENDING" and not self._busy and not self._warming:
                    to_cancel.append(alloc)
                continue
            busy = any(s in self._busy for s in alloc.slots)
            if not busy and not self._usable(alloc):
                to_cancel.append(alloc)  # too close to its walltime to take work: give it back now
                continue
            if busy or self._waiting > 0 or self._warming:
                alloc.idle_since = None
                continue
            alloc.idle_since = alloc.idle_since or now
            if now - alloc.idle_since >= self.profile.idle_release:
                to_cancel.append(alloc)
        if to_cancel:
            for alloc in to_cancel:
                self._drop(alloc)
            self.provider.cancel(self.host, [a.job_id for a in to_cancel])
            self._forget_agents([a.job_id for a in to_cancel])
            log.info("%s: released allocations %s", self.profile.name, [a.job_id for a in to_cancel])

    def _update(self, alloc: Allocation, state: JobState | None, now: float) -> None:
        if state is None or state.state in ("COMPLETING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT",
                                            "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"):
            if state is None and alloc.state == "PENDING" and now - alloc.submitted < 5:
                return  # a fresh submission may not be listed yet
            log.info("%s: allocation %s ended (%s)", self.profile.name, alloc.job_id,
                     state.state if state else "gone")
            self._drop(alloc)
            return
        if state.running and alloc.state != "RUNNING":
            alloc.nodes = state.nodes
            if self.uses_agent:
                self._start_agents(alloc)  # raises: the allocation stays pending, the next tick retries
            alloc.state = "RUNNING"
            walltime = self.profile.allocation.walltime
            alloc.expires = now + (state.time_left if state.time_left is not None else walltime)
            for node in alloc.nodes:
                for _ in range(self.profile.slots_per_node):
                    slot = Slot(self.profile.host, self._next_index, node)
                    self._next_index += 1
                    alloc.slots.append(slot)
                    self._slot_alloc[slot] = alloc
                    self.pool.add(slot)
        elif state.running and state.time_left is not None:
            alloc.expires = now + state.time_left
        elif not state.running:
            alloc.state = state.state
            alloc.reason = state.reason

    def _drop(self, alloc: Allocation) -> None:
        alloc.closing = True
        for slot in alloc.slots:
            self.pool.retire(slot)
        self.allocations.pop(alloc.job_id, None)
        self._close_agents(alloc.job_id)
        if self.ledger is not None:
            self.ledger.remove([alloc.job_id])

    def waiting_for(self) -> str | None:
        """What executions wait on when no slot can take them: the allocation the scheduler has not
        started yet, with its reason (shown on the progress line: on a busy cluster that can be hours)."""
        if self._waiting == 0 or any(self._usable(a) for a in self.allocations.values()):
            return None
        for alloc in self.allocations.values():
            if alloc.state == "RUNNING" or alloc.closing:
                continue
            if alloc.ready is not None:
                return f"allocation {alloc.job_id} starting on {render_nodelist(alloc.ready[1])}"
            reason = f" ({alloc.reason})" if alloc.reason and alloc.reason != "None" else ""
            return f"allocation {alloc.job_id} {alloc.state.lower()}{reason}"
        return None

    # -- allocations a dead controller left (recorded in the ledger)
    def release_orphans(self) -> list[str]:
        """Cancel the allocations of controllers that are gone; what ran in them is over or lost."""
        if self.ledger is None:
            return []
        if self._orphans is None:
            self._orphans = self.ledger.orphans()
        released = []
        for path, jobs in list(self._orphans.items()):
            if not self.runs.workdir:
                self.runs.prepare()
            self.provider.cancel(self.host, jobs)
            self._forget_agents(jobs)
            self.ledger.forget(path, jobs)
            del self._orphans[path]
            released += jobs
        if released:
            log.info("%s: released allocations %s of a controller that is gone", self.profile.name, released)
        return released

    # -- executions
    def _alloc_of(self, slot: Slot) -> Allocation:
        alloc = self._slot_alloc.get(slot)
        if alloc is None or slot.node is None:
            raise SchedulerError(f"slot {slot} belongs to no allocation of profile {self.profile.name}")
        return alloc

    def launch(self, slot: Slot, job: Job, code: CodeArchive) -> RunHandle:
        alloc = self._alloc_of(slot)
        assert slot.node is not None
        env = {**self.profile.env, **job.env, "ORCHESTRA_EXECUTION_ID": job.execution_id,
               "ORCHESTRA_SLOT": str(slot.index), "ORCHESTRA_NODE": slot.node,
               "ORCHESTRA_ALLOCATION": alloc.job_id}
        now = self._launched_at[job.execution_id] = time.time()
        agent_runs = self.node_agents.get((alloc.job_id, slot.node)) if self.uses_agent else None
        if agent_runs is not None:
            # The agent step's srun on the frontend is the launcher a resume checks for liveness.
            meta = {"launcher_pid": self._agent_pids[(alloc.job_id, slot.node)]} \
                if (alloc.job_id, slot.node) in self._agent_pids else {}
            remote_dir, pid, started = agent_runs.launch(job, code, env=env, setup=self.profile.setup,
                                                         slot_index=slot.index, meta=meta)
            return RunHandle(job.execution_id, slot, remote_dir, pid=pid, started=started or now)
        if self.uses_agent:
            raise SchedulerError(f"no agent on {slot.node} of allocation {alloc.job_id}")
        remote_dir, pid, started = self.runs.launch(
            job, code, env=env, setup=self.profile.setup, launcher=self.provider.launcher(alloc.job_id, slot.node),
            wait_pid=10.0)
        return RunHandle(job.execution_id, slot, remote_dir, pid=pid, started=started)

    def _agent_of(self, handle: RunHandle):
        """The node agent an execution was launched through, or None (srun launcher, or re-attached)."""
        if not self.uses_agent or handle.execution_id in self._files_watched:
            return None
        alloc = self._slot_alloc.get(handle.slot)
        if alloc is None or handle.slot.node is None:
            return None
        agent_runs = self.node_agents.get((alloc.job_id, handle.slot.node))
        return agent_runs if agent_runs is not None and agent_runs.owns(handle.execution_id) else None

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        agent_runs = self._agent_of(handle)
        if agent_runs is not None:
            started = self._launched_at.pop(handle.execution_id, handle.started or time.time())
            outcome = agent_runs.wait(handle.execution_id, timeout, started)
        elif self.uses_agent and handle.execution_id not in self._files_watched:
            # Its allocation (and agent) went away between launch and wait.
            return Outcome(None, handle.started, time.time(), lost=True, error="its allocation ended")
        else:
            outcome = _handle_wait(self.runs, handle, timeout, self._launched_at,
                                   kill_prefix=self._kill_prefix(handle))
        alloc = self._slot_alloc.get(handle.slot)
        if alloc is not None and not outcome.timed_out and (outcome.lost or (outcome.exit_code or 0) > 128):
            # Lost, or killed by a signal: if its allocation ended at the same time (walltime, scancel, node
            # failure), it was lost with it, which a retry policy treats differently from a crash.
            deadline = time.time() + 2 * self.profile.squeue_interval + 2
            self._wake.set()
            while not alloc.closing and time.time() < deadline:
                gevent.sleep(0.1)
            if alloc.closing:
                return dataclasses.replace(outcome, lost=True,
                                           error=f"allocation {alloc.job_id} ended under the execution")
        return outcome

    def _kill_prefix(self, handle: RunHandle) -> str:
        alloc = self._slot_alloc.get(handle.slot)
        if alloc is None or handle.slot.node is None:
            return ""  # re-attached without a node: the launcher's death still ends it
        return self.provider.launcher(alloc.job_id, handle.slot.node)

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        agent_runs = self._agent_of(handle)
        if agent_runs is not None:
            return agent_runs.collect(handle.execution_id, dest)
        return self.runs.collect(handle.remote_dir, job.outputs, dest)

    def discard(self, handle: RunHandle) -> None:
        agent_runs = self._agent_of(handle)
        if agent_runs is not None:
            agent_runs.discard(handle.execution_id, handle.remote_dir)
        else:
            self.runs.discard(handle.remote_dir)
            self._files_watched.discard(handle.execution_id)

    def stop(self, handle: RunHandle) -> None:
        agent_runs = self._agent_of(handle)
        if agent_runs is not None:
            agent_runs.stop(handle.execution_id)
        else:
            self.runs.kill(handle.remote_dir, self._kill_prefix(handle))

    def reattach(self, execution_id: str, host: str | None, slot: int | None,
                 remote_dir: str | None) -> RunHandle | None:
        """Re-attach by the launcher (srun) still alive on the frontend; the slot is not re-counted
        because the allocation it ran in is not adopted by this controller."""
        if host is not None and host != self.profile.host:
            return None
        if self._orphans is None and self.ledger is not None:
            # A resume: the dead controller's allocations go once what is re-attached in them has ended.
            self._orphans = self.ledger.orphans()
        if not self.runs.workdir:
            self.runs.prepare()
        remote_dir = remote_dir or self.runs.run_dir(execution_id)
        state, pid, started = self.runs.probe(remote_dir)
        if state == "none":
            return None
        self._files_watched.add(execution_id)
        return RunHandle(execution_id, Slot(self.profile.host, slot if slot is not None else -1), remote_dir,
                         pid=pid, started=started)


__all__ = ["Allocation", "AllocationBackend", "CommandProvider", "JobState", "SlurmProvider",
           "parse_list_nodes_output", "parse_nodelist", "parse_ready_file", "parse_sbatch_output", "parse_slurm_time",
           "parse_squeue_output", "render_nodelist", "render_sbatch_script", "render_template", "srun_prefix"]
